//! IMS identities of a subscription and the ISIM files that hold them.
//!
//! [`ImsIdentities::derive`] follows 3GPP TS 23.003 §13: without an ISIM provisioned by the
//! operator's IMS, a UE builds its private identity, temporary public identity and home network
//! domain from the IMSI (`<IMSI>@ims.mnc<MNC>.mcc<MCC>.3gppnetwork.org`, the MNC padded to three
//! digits). The encoders write them as TS 31.103 stores them: EF.IMPI, EF.DOMAIN and each EF.IMPU
//! record hold one TLV with tag 80 (the NAI or URI in UTF-8), padded with FF to the file or record
//! length.
//! This module does not know where the files live (see the card families in [`crate::profile`]).

use crate::encoding::{EncodingError, check_mnc_len, split_imsi};

/// Tag of the NAI / URI TLV in EF.IMPI, EF.DOMAIN and EF.IMPU (TS 31.103 §4.2.2–4.2.4).
const URI_TLV_TAG: u8 = 0x80;

/// The IMS identities a card carries for one subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImsIdentities {
    /// IMS private user identity (EF.IMPI), a NAI.
    pub impi: String,
    /// The first IMS public user identity (EF.IMPU record 1), a SIP URI.
    pub impu: String,
    /// Home network domain name (EF.DOMAIN).
    pub domain: String,
}

impl ImsIdentities {
    /// The identities TS 23.003 §13.2–13.4 derives from an IMSI whose MNC has `mnc_len` digits.
    pub fn derive(imsi: &str, mnc_len: usize) -> Result<Self, EncodingError> {
        check_mnc_len(mnc_len)?;
        let (mcc, mnc) = split_imsi(imsi, mnc_len)?;
        let domain = format!("ims.mnc{mnc:0>3}.mcc{mcc}.3gppnetwork.org");
        let impi = format!("{imsi}@{domain}");
        Ok(ImsIdentities {
            impu: format!("sip:{impi}"),
            impi,
            domain,
        })
    }
}

/// One tag-80 TLV with `text`, padded with FF to exactly `len` bytes.
pub fn encode_uri_tlv(
    field: &'static str,
    text: &str,
    len: usize,
) -> Result<Vec<u8>, EncodingError> {
    let bytes = text.as_bytes();
    if bytes.is_empty() || bytes.len() > 0x7F || bytes.len() + 2 > len {
        return Err(EncodingError::WrongLength {
            field,
            expected: "1 to 127 bytes that fit the file",
            got: bytes.len(),
        });
    }
    let mut out = Vec::with_capacity(len);
    out.extend([URI_TLV_TAG, bytes.len() as u8]);
    out.extend_from_slice(bytes);
    out.resize(len, 0xFF);
    Ok(out)
}

/// The text of a tag-80 TLV; `None` for an unused file or record (FF, or an empty TLV).
pub fn decode_uri_tlv(field: &'static str, bytes: &[u8]) -> Result<Option<String>, EncodingError> {
    match bytes {
        [] | [0xFF, ..] | [URI_TLV_TAG, 0x00, ..] => Ok(None),
        [URI_TLV_TAG, len, rest @ ..] if usize::from(*len) <= rest.len() => {
            String::from_utf8(rest[..usize::from(*len)].to_vec())
                .map(Some)
                .map_err(|_| EncodingError::Malformed {
                    field,
                    reason: "not UTF-8",
                })
        }
        _ => Err(EncodingError::Malformed {
            field,
            reason: "not a tag-80 TLV",
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Test vectors: a panic is the failure report.
mod tests {
    use super::*;

    #[test]
    fn identities_follow_ts_23_003_with_a_three_digit_mnc() {
        let ids = ImsIdentities::derive("234150999999999", 2).unwrap();
        assert_eq!(
            ids.impi,
            "234150999999999@ims.mnc015.mcc234.3gppnetwork.org"
        );
        assert_eq!(
            ids.impu,
            "sip:234150999999999@ims.mnc015.mcc234.3gppnetwork.org"
        );
        assert_eq!(ids.domain, "ims.mnc015.mcc234.3gppnetwork.org");
        let ids = ImsIdentities::derive("310150123456789", 3).unwrap();
        assert_eq!(ids.domain, "ims.mnc150.mcc310.3gppnetwork.org");
        assert!(ImsIdentities::derive("31015", 3).is_err());
        assert!(ImsIdentities::derive("310150123456789", 4).is_err());
    }

    #[test]
    fn impi_and_impu_are_tag_80_tlvs_padded_with_ff() {
        let impi = encode_uri_tlv(
            "IMPI",
            "001010000000001@ims.mnc001.mcc001.3gppnetwork.org",
            128,
        )
        .unwrap();
        assert_eq!(impi.len(), 128);
        assert_eq!(&impi[..2], &[0x80, 49]);
        assert_eq!(&impi[2..7], b"00101");
        assert!(impi[51..].iter().all(|&b| b == 0xFF));
        assert_eq!(
            decode_uri_tlv("IMPI", &impi).unwrap().as_deref(),
            Some("001010000000001@ims.mnc001.mcc001.3gppnetwork.org")
        );
        let impu = encode_uri_tlv("IMPU", "sip:1@x", 10).unwrap();
        assert_eq!(hex::encode(&impu), "80077369703a314078ff");
    }

    #[test]
    fn unused_files_decode_to_none_and_garbage_is_refused() {
        assert_eq!(decode_uri_tlv("IMPU", &[0xFF; 8]), Ok(None));
        assert_eq!(decode_uri_tlv("IMPU", &[0x80, 0x00, 0xFF]), Ok(None));
        assert!(decode_uri_tlv("IMPU", &[0x80, 0x09, b'a']).is_err());
        assert!(decode_uri_tlv("IMPU", &[0x81, 0x01, b'a']).is_err());
        assert!(encode_uri_tlv("DOMAIN", "", 50).is_err());
        assert!(encode_uri_tlv("DOMAIN", &"x".repeat(49), 50).is_err());
    }
}
