//! The producer of the staging pass: the file read again, each row validated, duplicates
//! within the file found, the secrets sealed under the KEK and the rows encoded for `COPY`, in
//! chunks sent to the writer (`staging`). Runs on a blocking thread.

use simflow_schemas::cardfile::RowProblem;
use tokio::sync::mpsc;
use zeroize::Zeroizing;

use super::{CardFile, Limits, copy};
use crate::csvfile::{self, FileRejection, Guarded, Header};
use crate::kek::Kek;
use crate::reasons::{self, RowReason};
use crate::transport::TransportKey;
use crate::validate::{self, CardRow};

/// What the staging pass reads, and where it writes.
pub(super) struct Pass {
    /// The import the rows belong to.
    pub import_key: i64,
    /// The file, read again from the start.
    pub file: CardFile,
    /// The header the opening pass read (the file must still have it).
    pub header: Header,
    /// The SHA-256 the opening pass computed (the file must still have it).
    pub sha256: [u8; 32],
    /// At most this many data rows (from the opening pass; for sizing only).
    pub rows_hint: u64,
    /// Rows an earlier run staged (read for their keys only).
    pub skip: u64,
    /// The card type (part of each row's fingerprint).
    pub card_type: String,
    /// The transport key of the key columns, if they are encrypted.
    pub transport: Option<TransportKey>,
}

/// A chunk of staged rows, ready to write.
pub(super) struct Chunk {
    /// The rows in binary `COPY` format, header included (the writer adds the trailer).
    pub copy: Vec<u8>,
    /// The chunk's refused rows.
    pub problems: Vec<RowProblem>,
    /// Data rows the chunk covers (staged or refused).
    pub rows: u64,
}

/// The staging pass, on a blocking thread: reads the file again from the start (hashing it, so
/// a file changed since the opening pass is noticed), skips `pass.skip` rows already staged,
/// and sends chunks of validated, sealed rows. Checks what the opening pass did not parse
/// (field counts, UTF-8) and answers the number of data rows.
pub(super) fn produce_chunks(
    pass: &Pass,
    kek: &Kek,
    limits: Limits,
    sender: &mpsc::Sender<Result<Chunk, FileRejection>>,
) -> Result<u64, FileRejection> {
    let Pass {
        import_key,
        file,
        header,
        sha256,
        rows_hint,
        skip,
        card_type,
        transport,
    } = pass;
    let transport = transport.as_ref();
    let mut reader = csvfile::csv_reader(Guarded::new(file.open()?, limits.max_line_bytes, true));
    let mut csv_record = csv::ByteRecord::new();
    let (read_header, _) = csvfile::read_header(&mut reader, &mut csv_record)?;
    if &read_header != header {
        return Err(FileRejection::new(reasons::FILE_CHANGED));
    }
    let new_chunk = || {
        let mut copy = Vec::with_capacity(limits.chunk_rows.saturating_mul(300));
        copy.extend_from_slice(copy::HEADER);
        Chunk {
            copy,
            problems: Vec::new(),
            rows: 0,
        }
    };
    let mut chunk = new_chunk();
    let mut record = Zeroizing::new(Vec::with_capacity(64));
    let mut seen = 0u64;
    let mut duplicates = InFileDuplicates::with_capacity(*rows_hint);
    let mut skipped_problems = Vec::new();
    while let Some(line) = csvfile::next_row(&mut reader, &mut csv_record, header)? {
        seen += 1;
        let fields = csvfile::fields_of(&csv_record, line)?;
        if seen <= *skip {
            // Staged by an earlier run: only its keys are needed, to find duplicates.
            if let Some(row) =
                validate::validate_row(header, &fields, line, transport, &mut skipped_problems)
            {
                duplicates.check(&row, false, &mut chunk.problems);
            }
            skipped_problems.clear();
            continue;
        }
        if let Some(row) =
            validate::validate_row(header, &fields, line, transport, &mut chunk.problems)
        {
            duplicates.check(&row, true, &mut chunk.problems);
            copy::encode_row(
                &mut chunk.copy,
                *import_key,
                card_type,
                &row,
                kek,
                &mut record,
            );
        }
        chunk.rows += 1;
        if chunk.rows as usize >= limits.chunk_rows {
            let full = std::mem::replace(&mut chunk, new_chunk());
            if sender.blocking_send(Ok(full)).is_err() {
                // The writer stopped (and reports why).
                return Ok(seen);
            }
        }
    }
    if reader.into_inner().finish_hash() != *sha256 {
        return Err(FileRejection::new(reasons::FILE_CHANGED));
    }
    if seen == 0 {
        return Err(FileRejection::new(reasons::FILE_NO_ROWS));
    }
    if chunk.rows > 0 {
        let _ = sender.blocking_send(Ok(chunk));
    }
    Ok(seen)
}

/// A digit string as a number that keeps its length (so `0123` and `123` differ); `None` for
/// anything else (validated ICCIDs and IMSIs are 6 to 20 digits, which always fit).
fn digits_key(digits: &str) -> Option<u128> {
    if digits.len() > 32 {
        return None;
    }
    let value: u128 = digits.parse().ok()?;
    value
        .checked_mul(64)
        .and_then(|value| value.checked_add(digits.len() as u128))
}

/// Key → first line, and whether its occurrences have been refused yet.
/// Hashed with foldhash (seeded per process) rather than SipHash: two look-ups per row of a
/// million-row file, where SipHash was a fifth of the producer's time.
type SeenKeys = std::collections::HashMap<u128, (u64, bool), foldhash::fast::RandomState>;

/// Finds ICCIDs and IMSIs that occur more than once among the valid rows of a file, as the
/// staging pass reads it: every occurrence is refused (we cannot tell which one is right).
/// The first occurrence may already be in an earlier chunk; its refusal is recorded with the
/// chunk of the second, and promotion deletes refused rows.
struct InFileDuplicates {
    iccids: SeenKeys,
    imsis: SeenKeys,
}

impl InFileDuplicates {
    /// Room for a file of `rows` rows, so the maps never grow (and rehash) while staging.
    fn with_capacity(rows: u64) -> InFileDuplicates {
        let rows = usize::try_from(rows).unwrap_or(usize::MAX).min(1 << 26);
        InFileDuplicates {
            iccids: SeenKeys::with_capacity_and_hasher(rows, Default::default()),
            imsis: SeenKeys::with_capacity_and_hasher(rows, Default::default()),
        }
    }

    /// Notes a valid row. `record` is false for rows an earlier run staged: their refusals were
    /// recorded then (an earlier run saw every duplicate pair that lies before its checkpoint).
    fn check(&mut self, row: &CardRow, record: bool, problems: &mut Vec<RowProblem>) {
        let checks = [
            (
                &mut self.iccids,
                row.iccid.as_str(),
                "ICCID",
                reasons::ICCID_DUPLICATE_IN_FILE,
            ),
            (
                &mut self.imsis,
                row.imsi.as_str(),
                "IMSI",
                reasons::IMSI_DUPLICATE_IN_FILE,
            ),
        ];
        for (seen, value, column, reason) in checks {
            let Some(key) = digits_key(value) else {
                continue;
            };
            match seen.entry(key) {
                std::collections::hash_map::Entry::Vacant(entry) => {
                    entry.insert((row.line, false));
                }
                std::collections::hash_map::Entry::Occupied(mut entry) => {
                    let (first_line, refused) = entry.get_mut();
                    if record {
                        if !*refused {
                            problems.push(reason.for_row(*first_line, Some(column)));
                        }
                        problems.push(reason.for_row(row.line, Some(column)));
                    }
                    *refused = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digit_keys_keep_leading_zeros_apart() {
        assert_ne!(digits_key("0123456"), digits_key("123456"));
        assert_eq!(
            digits_key("89860110000000000094"),
            digits_key("89860110000000000094")
        );
        assert!(digits_key("89860110000000000094").is_some());
        assert!(digits_key("12a").is_none());
    }
}
