//! Reading a vendor card data file: the header with both column spellings, the rows as
//! `csv` records, and the checks that refuse a whole file before anything of it is stored.
//!
//! The file is streamed: a reader holds one record at a time, and a guard under the CSV
//! parser refuses any line longer than `carddata.max_line_bytes`, so a 10 MB line costs at most
//! the limit in memory. The same guard hashes every byte (SHA-256), which identifies the file
//! for resuming and for idempotent re-imports.
//! This module does not validate field values (see [`crate::validate`]) and does no database
//! work.
//!
//! Decisions:
//! - Column names are case-insensitive and trimmed; a UTF-8 byte order mark is ignored.
//! - An unknown column refuses the file: it may carry key material we would silently drop.
//!   Unknown columns are named by position only, because a file without a header line would
//!   otherwise echo its first card's keys back in the error.
//! - A column named twice (also `adm1` next to `pin_adm_hex`) refuses the file.
//! - A row with another field count than the header refuses the file: the columns can no
//!   longer be trusted to line up (a truncated transfer, a stray delimiter, two files joined).

use std::fmt;
use std::io::{self, Read};

use sha2::{Digest, Sha256};
use simflow_schemas::common::ClerkMessage;

use crate::reasons::{self, Reason};
use crate::transport::TransportKey;

/// A file-level refusal: the whole file is refused and nothing of it is imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRejection {
    /// Why.
    pub reason: Reason,
    /// The 1-based line it was found on, if one.
    pub line: Option<u64>,
    /// Which columns (by canonical name or position), if that helps; never a value.
    pub columns: Option<String>,
}

impl FileRejection {
    pub(crate) fn new(reason: Reason) -> FileRejection {
        FileRejection {
            reason,
            line: None,
            columns: None,
        }
    }

    pub(crate) fn at(reason: Reason, line: u64) -> FileRejection {
        FileRejection {
            reason,
            line: Some(line),
            columns: None,
        }
    }

    pub(crate) fn columns(mut self, columns: String) -> FileRejection {
        self.columns = Some(columns);
        self
    }

    /// The clerk's message, with line and columns in both languages.
    pub fn message(&self) -> ClerkMessage {
        let mut zh = self.reason.zh.to_owned();
        let mut en = self.reason.en.to_owned();
        if let Some(line) = self.line {
            zh.push_str(&format!("（第{line}行）"));
            en.push_str(&format!(" (line {line})"));
        }
        if let Some(columns) = &self.columns {
            zh.push_str(&format!("：{columns}"));
            en.push_str(&format!(": {columns}"));
        }
        ClerkMessage::new(self.reason.code, &zh, &en)
    }
}

impl fmt::Display for FileRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let message = self.message();
        write!(
            f,
            "{}: {} / {}",
            message.code, message.message_en, message.message_zh
        )
    }
}

impl std::error::Error for FileRejection {}

/// A column this import knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    /// `iccid`.
    Iccid,
    /// `imsi`.
    Imsi,
    /// `ki`.
    Ki,
    /// `opc`.
    Opc,
    /// `adm1` or `pin_adm`: 8 ASCII digits (or 16 hex digits).
    Adm1,
    /// `pin_adm_hex`: 16 hex digits.
    Adm1Hex,
    /// `pin1`.
    Pin1,
    /// `puk1`.
    Puk1,
    /// `pin2`.
    Pin2,
    /// `puk2`.
    Puk2,
    /// `acc`.
    Acc,
    /// `msisdn`.
    Msisdn,
    /// `mcc`.
    Mcc,
    /// `mnc`.
    Mnc,
    /// `smsp`.
    Smsp,
    /// `name`.
    Name,
}

/// The slots a header fills (both ADM spellings share one).
const SLOTS: usize = 15;

impl Column {
    fn from_header(name: &str) -> Option<Column> {
        Some(match name.to_ascii_lowercase().as_str() {
            "iccid" => Column::Iccid,
            "imsi" => Column::Imsi,
            "ki" => Column::Ki,
            "opc" => Column::Opc,
            "adm1" | "pin_adm" => Column::Adm1,
            "pin_adm_hex" => Column::Adm1Hex,
            "pin1" => Column::Pin1,
            "puk1" => Column::Puk1,
            "pin2" => Column::Pin2,
            "puk2" => Column::Puk2,
            "acc" => Column::Acc,
            "msisdn" => Column::Msisdn,
            "mcc" => Column::Mcc,
            "mnc" => Column::Mnc,
            "smsp" => Column::Smsp,
            "name" => Column::Name,
            _ => return None,
        })
    }

    /// The canonical name used in refusals.
    pub fn label(self) -> &'static str {
        match self {
            Column::Iccid => "ICCID",
            Column::Imsi => "IMSI",
            Column::Ki => "KI",
            Column::Opc => "OPC",
            Column::Adm1 | Column::Adm1Hex => "ADM1",
            Column::Pin1 => "PIN1",
            Column::Puk1 => "PUK1",
            Column::Pin2 => "PIN2",
            Column::Puk2 => "PUK2",
            Column::Acc => "ACC",
            Column::Msisdn => "MSISDN",
            Column::Mcc => "MCC",
            Column::Mnc => "MNC",
            Column::Smsp => "SMSP",
            Column::Name => "NAME",
        }
    }

    fn slot(self) -> usize {
        match self {
            Column::Iccid => 0,
            Column::Imsi => 1,
            Column::Ki => 2,
            Column::Opc => 3,
            Column::Adm1 | Column::Adm1Hex => 4,
            Column::Pin1 => 5,
            Column::Puk1 => 6,
            Column::Pin2 => 7,
            Column::Puk2 => 8,
            Column::Acc => 9,
            Column::Msisdn => 10,
            Column::Mcc => 11,
            Column::Mnc => 12,
            Column::Smsp => 13,
            Column::Name => 14,
        }
    }
}

/// Where each known column sits in a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    positions: [Option<usize>; SLOTS],
    /// Whether ADM1 comes as `pin_adm_hex`.
    adm_hex: bool,
    /// Fields per row.
    width: usize,
}

impl Header {
    /// Reads a header record.
    pub fn parse(fields: &[&str]) -> Result<Header, FileRejection> {
        let mut positions = [None; SLOTS];
        let mut adm_hex = false;
        let mut unknown = Vec::new();
        let mut duplicate = Vec::new();
        for (index, raw) in fields.iter().enumerate() {
            let name = raw.trim().trim_start_matches('\u{feff}').trim();
            match Column::from_header(name) {
                Some(column) => {
                    let slot = &mut positions[column.slot()];
                    if slot.is_some() {
                        duplicate.push(column.label());
                    } else {
                        *slot = Some(index);
                        adm_hex |= column == Column::Adm1Hex;
                    }
                }
                None => unknown.push(index + 1),
            }
        }
        let first = fields
            .first()
            .map(|field| field.trim().trim_start_matches('\u{feff}'))
            .unwrap_or_default();
        if first.len() >= 10 && first.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(FileRejection::at(reasons::FILE_NO_HEADER, 1));
        }
        if !unknown.is_empty() {
            let list: Vec<String> = unknown
                .iter()
                .map(|position| format!("#{position}"))
                .collect();
            return Err(FileRejection::at(reasons::COLUMN_UNKNOWN, 1).columns(list.join(", ")));
        }
        if !duplicate.is_empty() {
            duplicate.dedup();
            return Err(
                FileRejection::at(reasons::COLUMN_DUPLICATE, 1).columns(duplicate.join(", "))
            );
        }
        let missing: Vec<&str> = [
            Column::Iccid,
            Column::Imsi,
            Column::Ki,
            Column::Opc,
            Column::Adm1,
        ]
        .into_iter()
        .filter(|column| positions[column.slot()].is_none())
        .map(Column::label)
        .collect();
        if !missing.is_empty() {
            return Err(FileRejection::at(reasons::COLUMN_MISSING, 1).columns(missing.join(", ")));
        }
        Ok(Header {
            positions,
            adm_hex,
            width: fields.len(),
        })
    }

    /// Where a column is, if the file has it (`Adm1` and `Adm1Hex` both find the ADM column).
    pub fn position(&self, column: Column) -> Option<usize> {
        self.positions[column.slot()]
    }

    /// Whether ADM1 is spelled `pin_adm_hex`.
    pub fn adm_is_hex(&self) -> bool {
        self.adm_hex
    }

    /// Fields per row.
    pub fn width(&self) -> usize {
        self.width
    }
}

/// The guard's error for a line over the limit.
#[derive(Debug)]
struct LineTooLong {
    line: u64,
}

impl fmt::Display for LineTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {} is longer than the limit", self.line)
    }
}

impl std::error::Error for LineTooLong {}

/// Sits under the CSV parser: refuses over-long lines and hashes what passes.
pub(crate) struct Guarded<R> {
    inner: R,
    max_line: usize,
    run: usize,
    line: u64,
    hasher: Option<Sha256>,
}

impl<R: Read> Guarded<R> {
    pub(crate) fn new(inner: R, max_line: usize, hash: bool) -> Guarded<R> {
        Guarded {
            inner,
            max_line,
            run: 0,
            line: 1,
            hasher: hash.then(Sha256::new),
        }
    }

    pub(crate) fn finish_hash(self) -> [u8; 32] {
        self.hasher
            .map(|hasher| hasher.finalize().into())
            .unwrap_or_default()
    }
}

impl<R: Read> Read for Guarded<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let count = self.inner.read(buffer)?;
        let chunk = &buffer[..count];
        // `start` is where the current line begins in this chunk; `run` counts the bytes of a
        // line begun in earlier chunks. memchr finds the line ends many bytes at a time.
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', chunk) {
            if self.run + (end - start) > self.max_line {
                return Err(self.too_long());
            }
            self.run = 0;
            self.line += 1;
            start = end + 1;
        }
        self.run += count - start;
        if self.run > self.max_line {
            return Err(self.too_long());
        }
        if let Some(hasher) = self.hasher.as_mut() {
            hasher.update(chunk);
        }
        Ok(count)
    }
}

impl<R> Guarded<R> {
    fn too_long(&self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, LineTooLong { line: self.line })
    }
}

/// A CSV reader over a guarded source: no header handling (we read it ourselves), any field
/// count (we check it), fields trimmed.
pub(crate) fn csv_reader<R: Read>(source: R) -> csv::Reader<R> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .buffer_capacity(256 * 1024)
        .from_reader(source)
}

/// Maps a CSV error to a file refusal.
pub(crate) fn rejection_for(error: &csv::Error, fallback_line: u64) -> FileRejection {
    match error.kind() {
        csv::ErrorKind::Io(io_error) => {
            match io_error
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<LineTooLong>())
            {
                Some(too_long) => FileRejection::at(reasons::FILE_LINE_TOO_LONG, too_long.line),
                None => FileRejection::new(reasons::FILE_UNREADABLE),
            }
        }
        csv::ErrorKind::Utf8 { pos, .. } => FileRejection::at(
            reasons::FILE_NOT_UTF8,
            pos.as_ref().map_or(fallback_line, csv::Position::line),
        ),
        _ => FileRejection::at(
            reasons::FILE_MALFORMED,
            error.position().map_or(fallback_line, csv::Position::line),
        ),
    }
}

/// The fields of a record as text, or the file refusal for bytes that are not UTF-8.
pub(crate) fn fields_of(record: &csv::ByteRecord, line: u64) -> Result<Vec<&str>, FileRejection> {
    record
        .iter()
        .map(|field| {
            std::str::from_utf8(field).map_err(|_| FileRejection::at(reasons::FILE_NOT_UTF8, line))
        })
        .collect()
}

/// Reads the header line (blank lines before it are skipped); returns it and its line.
pub(crate) fn read_header<R: Read>(
    reader: &mut csv::Reader<R>,
    record: &mut csv::ByteRecord,
) -> Result<(Header, u64), FileRejection> {
    loop {
        match reader.read_byte_record(record) {
            Ok(false) => return Err(FileRejection::new(reasons::FILE_EMPTY)),
            Ok(true) => {
                let line = record.position().map_or(1, csv::Position::line);
                let fields = fields_of(record, line)?;
                if fields.iter().all(|field| field.is_empty()) {
                    continue;
                }
                let header = Header::parse(&fields).map_err(|mut rejection| {
                    rejection.line = Some(line);
                    rejection
                })?;
                return Ok((header, line));
            }
            Err(error) => return Err(rejection_for(&error, 1)),
        }
    }
}

/// Reads the next card row (blank lines are skipped) and checks its field count; returns its
/// line, or `None` at the end of the file.
pub(crate) fn next_row<R: Read>(
    reader: &mut csv::Reader<R>,
    record: &mut csv::ByteRecord,
    header: &Header,
) -> Result<Option<u64>, FileRejection> {
    loop {
        match reader.read_byte_record(record) {
            Ok(false) => return Ok(None),
            Ok(true) => {
                let line = record.position().map_or(0, csv::Position::line);
                if record.len() == 1 && record.get(0).is_some_and(<[u8]>::is_empty) {
                    continue;
                }
                if record.len() != header.width() {
                    return Err(FileRejection::at(reasons::COLUMN_COUNT, line));
                }
                return Ok(Some(line));
            }
            Err(error) => return Err(rejection_for(&error, 0)),
        }
    }
}

/// What the structure pass learnt about a file.
#[derive(Debug, Clone)]
pub struct Structure {
    /// SHA-256 of the file's bytes.
    pub sha256: [u8; 32],
    /// The header.
    pub header: Header,
    /// Card rows (lines after the header, blank lines not counted).
    pub data_rows: u64,
}

/// The first pass over a file: hash, header, field counts, UTF-8, line lengths, and whether the
/// key columns are encrypted as the job says. Refuses the whole file at the first problem.
pub fn check_structure<R: Read>(
    source: R,
    max_line_bytes: usize,
    transport: Option<&TransportKey>,
) -> Result<Structure, FileRejection> {
    let mut reader = csv_reader(Guarded::new(source, max_line_bytes, true));
    let mut record = csv::ByteRecord::new();
    let (header, _) = read_header(&mut reader, &mut record)?;
    let mut data_rows = 0u64;
    while let Some(line) = next_row(&mut reader, &mut record, &header)? {
        if std::str::from_utf8(record.as_slice()).is_err() {
            return Err(FileRejection::at(reasons::FILE_NOT_UTF8, line));
        }
        if data_rows == 0 {
            check_encryption(&header, &record, line, transport)?;
        }
        data_rows += 1;
    }
    if data_rows == 0 {
        return Err(FileRejection::new(reasons::FILE_NO_ROWS));
    }
    let sha256 = reader.into_inner().finish_hash();
    Ok(Structure {
        sha256,
        header,
        data_rows,
    })
}

/// What the opening pass learnt about a file.
#[derive(Debug, Clone)]
pub struct Opening {
    /// SHA-256 of the file's bytes.
    pub sha256: [u8; 32],
    /// The header.
    pub header: Header,
    /// Lines after the header line (blank lines included): an upper bound of the card rows,
    /// for progress and sizing only. The staging pass counts the rows.
    pub rows_hint: u64,
}

/// The first pass over a file when it is imported: the header and the first card row are
/// checked as [`check_structure`] checks them (columns, UTF-8, whether the key columns are
/// encrypted as the job says), and the rest is only hashed and held to the line limit, without
/// parsing it as CSV. Field counts and UTF-8 of the other rows are checked by the staging pass,
/// which refuses the whole file just the same (and drops what it staged).
pub fn check_opening<R: Read>(
    source: R,
    max_line_bytes: usize,
    transport: Option<&TransportKey>,
) -> Result<Opening, FileRejection> {
    let mut reader = csv_reader(Guarded::new(source, max_line_bytes, true));
    let mut record = csv::ByteRecord::new();
    let (header, header_line) = read_header(&mut reader, &mut record)?;
    let Some(line) = next_row(&mut reader, &mut record, &header)? else {
        return Err(FileRejection::new(reasons::FILE_NO_ROWS));
    };
    if std::str::from_utf8(record.as_slice()).is_err() {
        return Err(FileRejection::at(reasons::FILE_NOT_UTF8, line));
    }
    check_encryption(&header, &record, line, transport)?;
    // The CSV reader has read ahead; the guard below it has hashed and checked what it read.
    let mut guarded = reader.into_inner();
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        match guarded.read(&mut buffer) {
            Ok(0) => break,
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => {
                return Err(
                    match error
                        .get_ref()
                        .and_then(|inner| inner.downcast_ref::<LineTooLong>())
                    {
                        Some(too_long) => {
                            FileRejection::at(reasons::FILE_LINE_TOO_LONG, too_long.line)
                        }
                        None => FileRejection::new(reasons::FILE_UNREADABLE),
                    },
                );
            }
        }
    }
    // `line` is the line being read; with the file ending in a newline it is an empty one.
    let rows_hint = guarded
        .line
        .saturating_sub(header_line)
        .saturating_sub(u64::from(guarded.run == 0));
    Ok(Opening {
        sha256: guarded.finish_hash(),
        header,
        rows_hint,
    })
}

fn is_hex(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_hexdigit())
}

/// Looks at the first row's ADM1 field: 32 hex digits is one encrypted block.
fn check_encryption(
    header: &Header,
    record: &csv::ByteRecord,
    line: u64,
    transport: Option<&TransportKey>,
) -> Result<(), FileRejection> {
    let adm = header
        .position(Column::Adm1)
        .and_then(|position| record.get(position))
        .and_then(|field| std::str::from_utf8(field).ok())
        .unwrap_or_default();
    let looks_encrypted = adm.len() == 32 && is_hex(adm);
    match transport {
        None if looks_encrypted => Err(FileRejection::at(reasons::TRANSPORT_KEY_REQUIRED, line)
            .columns(Column::Adm1.label().to_owned())),
        Some(key) if !looks_encrypted || key.decrypt_adm1(adm).is_err() => {
            Err(FileRejection::at(reasons::TRANSPORT_KEY_WRONG, line)
                .columns(Column::Adm1.label().to_owned()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A panic is the failure report.
mod tests {
    use super::*;

    fn structure(text: &[u8]) -> Result<Structure, FileRejection> {
        check_structure(text, 256, None)
    }

    const ROW: &str = "8986011000000000009,460001234567890,000102030405060708090a0b0c0d0e0f,000102030405060708090a0b0c0d0e0f,12345678";

    #[test]
    fn both_spellings_and_any_case_are_headers() {
        let shell = Header::parse(&[
            "ICCID", "IMSI", "KI", "OPC", "ADM1", "PIN1", "PUK1", "PIN2", "PUK2",
        ])
        .unwrap();
        assert_eq!(shell.position(Column::Adm1), Some(4));
        let prog = Header::parse(&[
            "\u{feff}iccid",
            "imsi",
            "Ki",
            "opc",
            "pin_adm_hex",
            "acc",
            "mcc",
            "mnc",
        ])
        .unwrap();
        assert!(prog.adm_is_hex());
        assert_eq!(prog.position(Column::Iccid), Some(0));
    }

    #[test]
    fn header_problems_refuse_the_file() {
        let code = |fields: &[&str]| Header::parse(fields).unwrap_err().reason.code;
        assert_eq!(code(&["iccid", "imsi", "ki", "adm1"]), "COLUMN_MISSING");
        assert_eq!(
            code(&["iccid", "imsi", "ki", "opc", "adm1", "pin_adm"]),
            "COLUMN_DUPLICATE"
        );
        assert_eq!(
            code(&["iccid", "imsi", "ki", "opc", "adm1", "eid"]),
            "COLUMN_UNKNOWN"
        );
        let headerless = Header::parse(&[
            "8986011000000000009",
            "460001234567890",
            "00112233445566778899aabbccddeeff",
        ])
        .unwrap_err();
        assert_eq!(headerless.reason.code, "FILE_NO_HEADER");
        assert!(!headerless.message().message_en.contains("0011"));
    }

    #[test]
    fn the_structure_pass_counts_rows_and_hashes() {
        let text = format!("iccid,imsi,ki,opc,adm1\n{ROW}\n\n{ROW}\n");
        let found = structure(text.as_bytes()).unwrap();
        assert_eq!(found.data_rows, 2);
        assert_eq!(
            found.sha256.to_vec(),
            Sha256::digest(text.as_bytes()).to_vec()
        );
    }

    #[test]
    fn file_level_problems_are_found() {
        let code = |text: &[u8]| structure(text).unwrap_err();
        assert_eq!(code(b"").reason.code, "FILE_EMPTY");
        assert_eq!(code(b"\n\n").reason.code, "FILE_EMPTY");
        assert_eq!(
            code(b"iccid,imsi,ki,opc,adm1\n").reason.code,
            "FILE_NO_ROWS"
        );
        let short = code(format!("iccid,imsi,ki,opc,adm1\n{ROW}\n{ROW},extra\n").as_bytes());
        assert_eq!((short.reason.code, short.line), ("COLUMN_COUNT", Some(3)));
        let mut bad = format!("iccid,imsi,ki,opc,adm1\n{ROW}\n").into_bytes();
        bad.extend_from_slice(b"8986011000000000009,46000\xff,a,b,c\n");
        let not_utf8 = code(&bad);
        assert_eq!(
            (not_utf8.reason.code, not_utf8.line),
            ("FILE_NOT_UTF8", Some(3))
        );
        let long = format!("iccid,imsi,ki,opc,adm1\n{ROW}\n{}\n", "9".repeat(300));
        let too_long = code(long.as_bytes());
        assert_eq!(
            (too_long.reason.code, too_long.line),
            ("FILE_LINE_TOO_LONG", Some(3))
        );
    }

    #[test]
    fn the_opening_pass_hashes_all_and_parses_only_the_start() {
        let opening = |text: &[u8]| check_opening(text, 256, None);
        let text = format!("iccid,imsi,ki,opc,adm1\n{ROW}\n\n{ROW}\n");
        let found = opening(text.as_bytes()).unwrap();
        assert_eq!(
            found.rows_hint, 3,
            "lines after the header, blank ones included"
        );
        assert_eq!(found.sha256, structure(text.as_bytes()).unwrap().sha256);
        assert_eq!(opening(b"").unwrap_err().reason.code, "FILE_EMPTY");
        assert_eq!(
            opening(b"iccid,imsi,ki,opc,adm1\n")
                .unwrap_err()
                .reason
                .code,
            "FILE_NO_ROWS"
        );
        let long = format!(
            "iccid,imsi,ki,opc,adm1\n{ROW}\n{ROW}\n{}\n",
            "9".repeat(300)
        );
        let too_long = opening(long.as_bytes()).unwrap_err();
        assert_eq!(
            (too_long.reason.code, too_long.line),
            ("FILE_LINE_TOO_LONG", Some(4))
        );
        // Left to the staging pass, which parses every row.
        let short = format!("iccid,imsi,ki,opc,adm1\n{ROW}\n{ROW},extra\n");
        assert!(opening(short.as_bytes()).is_ok());
    }

    #[test]
    fn long_lines_are_caught_across_reads() {
        // A reader that hands out a few bytes at a time, so lines span reads.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
                let count = self.0.len().min(buffer.len()).min(7);
                buffer[..count].copy_from_slice(&self.0[..count]);
                self.0 = &self.0[count..];
                Ok(count)
            }
        }
        let read_all = |text: &[u8], max: usize| {
            let mut guarded = Guarded::new(Trickle(text), max, false);
            io::copy(&mut guarded, &mut io::sink()).map(|_| guarded.line)
        };
        assert_eq!(read_all(b"0123456789\n0123456789\n", 10).unwrap(), 3);
        assert!(read_all(b"0123456789\n01234567890\n", 10).is_err());
        assert!(read_all(b"0123456789\n01234567890", 10).is_err());
    }

    #[test]
    fn encrypted_columns_need_the_right_transport_key() {
        let key = TransportKey::from_hex("t", &"11".repeat(16)).unwrap();
        let adm = key.encrypt_adm1(b"12345678").unwrap();
        let text = format!(
            "iccid,imsi,ki,opc,adm1\n8986011000000000009,460001234567890,{k},{k},{adm}\n",
            k = "ab".repeat(16)
        );
        assert_eq!(
            structure(text.as_bytes()).unwrap_err().reason.code,
            "TRANSPORT_KEY_REQUIRED"
        );
        assert!(check_structure(text.as_bytes(), 256, Some(&key)).is_ok());
        let wrong = TransportKey::from_hex("w", &"22".repeat(16)).unwrap();
        assert_eq!(
            check_structure(text.as_bytes(), 256, Some(&wrong))
                .unwrap_err()
                .reason
                .code,
            "TRANSPORT_KEY_WRONG"
        );
    }
}
