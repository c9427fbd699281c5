//! FCP templates (TS 102 221 §11.1.1.3): what a SELECT with P2 = 04 answers.
//!
//! [`Fcp::parse`] reads the parts a writer cares about (file type, record length and count,
//! FID, sizes, life cycle status, SFI); [`Fcp::build`] writes a template the way a UICC does,
//! for the software SIM. Unknown tags are skipped, not rejected.
//! Security attributes are carried as bytes (tag 8B: the EF.ARR reference, tag 8C: compact
//! rules); [`crate::arr`] interprets them. The PIN status template (C6) is carried as bytes too.

/// The kind of file a descriptor byte announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    /// DF or ADF (descriptor 0x38, shareable 0x78).
    Df,
    /// Transparent working EF (0x01 / 0x41).
    Transparent,
    /// Linear fixed working EF (0x02 / 0x42).
    LinearFixed,
    /// Cyclic working EF (0x06 / 0x46).
    Cyclic,
}

/// The parsed (or to-be-built) content of an FCP template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fcp {
    pub file_type: FileType,
    pub shareable: bool,
    /// Tag 83.
    pub fid: Option<u16>,
    /// Tag 84: the application identifier of an ADF.
    pub aid: Option<Vec<u8>>,
    /// Tag 80: the data size of an EF.
    pub size: Option<u32>,
    /// Tag 81: the total size allocated to a DF.
    pub total_size: Option<u32>,
    /// Record length and record count from tag 82 (record-based EFs only).
    pub record_len: Option<u16>,
    pub record_count: Option<u8>,
    /// Tag 8A: life cycle status integer (05 = operational, activated).
    pub life_cycle: Option<u8>,
    /// Tag 88: short file identifier; `None` when the tag is absent or empty.
    pub sfi: Option<u8>,
    /// Tag 8B: referenced security attributes (EF.ARR FID and record number).
    pub arr_reference: Option<Vec<u8>>,
    /// Tag 8C: compact security attributes (an access mode byte and condition bytes).
    pub compact_security: Option<Vec<u8>>,
    /// Tag C6: the PIN status template of a DF (PS_DO and the key references it covers).
    pub pin_status: Option<Vec<u8>>,
}

/// Why bytes are not an FCP template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FcpError {
    #[error("FCP template must start with tag 62")]
    NotFcp,
    #[error("TLV length runs past the end of the template")]
    Truncated,
    #[error("FCP template has no file descriptor (tag 82)")]
    NoDescriptor,
    #[error("unknown file descriptor byte {0:#04x}")]
    UnknownDescriptor(u8),
}

/// Split `bytes` into (tag, value) pairs with one-byte tags and BER lengths up to 81 xx.
fn tlvs(mut bytes: &[u8]) -> Result<Vec<(u8, &[u8])>, FcpError> {
    let mut out = Vec::new();
    while let Some((&tag, rest)) = bytes.split_first() {
        if tag == 0xFF || tag == 0x00 {
            break;
        }
        let (len, rest) = match rest.split_first() {
            Some((0x81, rest)) => {
                let (&len, rest) = rest.split_first().ok_or(FcpError::Truncated)?;
                (len as usize, rest)
            }
            Some((&len, rest)) => (len as usize, rest),
            None => return Err(FcpError::Truncated),
        };
        if rest.len() < len {
            return Err(FcpError::Truncated);
        }
        out.push((tag, &rest[..len]));
        bytes = &rest[len..];
    }
    Ok(out)
}

fn push_tlv(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    out.push(tag);
    if value.len() > 0x7F {
        out.push(0x81);
    }
    out.push(value.len() as u8);
    out.extend_from_slice(value);
}

fn be_number(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0u32, |acc, &b| acc << 8 | u32::from(b))
}

impl Fcp {
    /// A template for an EF or DF with nothing but its type and FID set.
    pub fn new(file_type: FileType, fid: u16) -> Self {
        Fcp {
            file_type,
            shareable: true,
            fid: Some(fid),
            aid: None,
            size: None,
            total_size: None,
            record_len: None,
            record_count: None,
            life_cycle: Some(0x05),
            sfi: None,
            arr_reference: None,
            compact_security: None,
            pin_status: None,
        }
    }

    /// Parse the response data of a SELECT with P2 = 04.
    pub fn parse(bytes: &[u8]) -> Result<Self, FcpError> {
        let outer = tlvs(bytes)?;
        let (_, body) = outer
            .into_iter()
            .find(|(tag, _)| *tag == 0x62)
            .ok_or(FcpError::NotFcp)?;
        let mut fcp: Option<Fcp> = None;
        let items = tlvs(body)?;
        for (tag, value) in &items {
            if *tag == 0x82 {
                let descriptor = *value.first().ok_or(FcpError::NoDescriptor)?;
                let file_type = match descriptor & 0x3F {
                    0x38 => FileType::Df,
                    0x01 => FileType::Transparent,
                    0x02 => FileType::LinearFixed,
                    0x06 => FileType::Cyclic,
                    _ => return Err(FcpError::UnknownDescriptor(descriptor)),
                };
                let mut parsed = Fcp::new(file_type, 0);
                parsed.fid = None;
                parsed.life_cycle = None;
                parsed.shareable = descriptor & 0x40 != 0;
                if value.len() >= 5 {
                    parsed.record_len = Some(u16::from_be_bytes([value[2], value[3]]));
                    parsed.record_count = Some(value[4]);
                } else if value.len() == 4 {
                    parsed.record_len = Some(u16::from(value[2]));
                    parsed.record_count = Some(value[3]);
                }
                fcp = Some(parsed);
            }
        }
        let mut fcp = fcp.ok_or(FcpError::NoDescriptor)?;
        for (tag, value) in items {
            match tag {
                0x83 if value.len() == 2 => {
                    fcp.fid = Some(u16::from_be_bytes([value[0], value[1]]))
                }
                0x84 => fcp.aid = Some(value.to_vec()),
                0x80 => fcp.size = Some(be_number(value)),
                0x81 => fcp.total_size = Some(be_number(value)),
                0x8A => fcp.life_cycle = value.first().copied(),
                0x88 => fcp.sfi = value.first().map(|b| b >> 3),
                0x8B => fcp.arr_reference = Some(value.to_vec()),
                0x8C => fcp.compact_security = Some(value.to_vec()),
                0xC6 => fcp.pin_status = Some(value.to_vec()),
                _ => {}
            }
        }
        Ok(fcp)
    }

    /// Build the template bytes (62 L ...).
    pub fn build(&self) -> Vec<u8> {
        let shareable = if self.shareable { 0x40 } else { 0x00 };
        let mut body = Vec::new();
        let descriptor = match self.file_type {
            FileType::Df => vec![0x38 | shareable, 0x21],
            FileType::Transparent => vec![0x01 | shareable, 0x21],
            FileType::LinearFixed | FileType::Cyclic => {
                let kind = if self.file_type == FileType::Cyclic {
                    0x06
                } else {
                    0x02
                };
                let [len_hi, len_lo] = self.record_len.unwrap_or(0).to_be_bytes();
                vec![
                    kind | shareable,
                    0x21,
                    len_hi,
                    len_lo,
                    self.record_count.unwrap_or(0),
                ]
            }
        };
        push_tlv(&mut body, 0x82, &descriptor);
        if let Some(fid) = self.fid {
            push_tlv(&mut body, 0x83, &fid.to_be_bytes());
        }
        if let Some(aid) = &self.aid {
            push_tlv(&mut body, 0x84, aid);
        }
        if let Some(life_cycle) = self.life_cycle {
            push_tlv(&mut body, 0x8A, &[life_cycle]);
        }
        if let Some(arr) = &self.arr_reference {
            push_tlv(&mut body, 0x8B, arr);
        }
        if let Some(compact) = &self.compact_security {
            push_tlv(&mut body, 0x8C, compact);
        }
        if let Some(pin_status) = &self.pin_status {
            push_tlv(&mut body, 0xC6, pin_status);
        }
        if let Some(size) = self.size {
            push_tlv(&mut body, 0x80, &(size as u16).to_be_bytes());
        }
        if let Some(total) = self.total_size {
            push_tlv(&mut body, 0x81, &(total as u16).to_be_bytes());
        }
        match self.sfi {
            Some(sfi) => push_tlv(&mut body, 0x88, &[sfi << 3]),
            None if self.file_type != FileType::Df => push_tlv(&mut body, 0x88, &[]),
            None => {}
        }
        let mut out = Vec::with_capacity(body.len() + 3);
        push_tlv(&mut out, 0x62, &body);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_real_world_linear_fixed_ef() {
        // EF.MSISDN-like FCP: linear fixed, 34-byte records, 2 records, SFI none.
        let bytes = hex::decode("621e8205422100220283026f40a5038001718a01058b036f0605800200448800")
            .expect("hex");
        let fcp = Fcp::parse(&bytes).expect("valid FCP");
        assert_eq!(fcp.file_type, FileType::LinearFixed);
        assert_eq!(fcp.record_len, Some(34));
        assert_eq!(fcp.record_count, Some(2));
        assert_eq!(fcp.fid, Some(0x6F40));
        assert_eq!(fcp.size, Some(68));
        assert_eq!(fcp.life_cycle, Some(5));
        assert_eq!(fcp.sfi, None);
    }

    #[test]
    fn parses_templates_of_a_real_sja2() {
        // DF.GSM/EF.IMSI and ADF.USIM as pySim's export of a sysmoISIM-SJA2 shows them.
        let imsi = Fcp::parse(
            &hex::decode("621e8202412183026f07a506d00130d2010f8a01058b036f0603800200098800")
                .expect("hex"),
        )
        .expect("valid FCP");
        assert_eq!(imsi.file_type, FileType::Transparent);
        assert_eq!(
            (imsi.fid, imsi.size, imsi.sfi),
            (Some(0x6F07), Some(9), None)
        );
        assert_eq!(imsi.arr_reference, Some(vec![0x6F, 0x06, 0x03]));
        let usim = Fcp::parse(
            &hex::decode(
                "6238820278218410a0000000871002ffffffff8907090000a509800171830400018d08\
                 8a01058c0100c60f90017083010183018183010a83010b",
            )
            .expect("hex"),
        )
        .expect("valid FCP");
        assert_eq!(usim.file_type, FileType::Df);
        assert_eq!(usim.aid.map(|aid| aid.len()), Some(16));
        assert_eq!(usim.compact_security, Some(vec![0x00]));
        assert_eq!(usim.pin_status.map(|template| template[2]), Some(0x70));
    }

    #[test]
    fn built_templates_parse_back() {
        let mut imsi = Fcp::new(FileType::Transparent, 0x6F07);
        imsi.size = Some(9);
        imsi.sfi = Some(0x07);
        imsi.arr_reference = Some(vec![0x6F, 0x06, 0x03]);
        assert_eq!(Fcp::parse(&imsi.build()), Ok(imsi));

        let mut smsp = Fcp::new(FileType::LinearFixed, 0x6F42);
        smsp.record_len = Some(52);
        smsp.record_count = Some(2);
        smsp.size = Some(104);
        assert_eq!(Fcp::parse(&smsp.build()), Ok(smsp));

        let mut usim = Fcp::new(FileType::Df, 0x7FF0);
        usim.aid = Some(hex::decode("a0000000871002ffffffff8907090000").expect("hex"));
        usim.total_size = Some(0x1000);
        usim.pin_status = Some(hex::decode("90017083010183018183010a83010b").expect("hex"));
        assert_eq!(Fcp::parse(&usim.build()), Ok(usim));

        let mut key_file = Fcp::new(FileType::Transparent, 0x6F20);
        key_file.size = Some(33);
        key_file.compact_security = Some(vec![0x03, 0x1A, 0x1A]);
        assert_eq!(Fcp::parse(&key_file.build()), Ok(key_file));
    }

    #[test]
    fn rejects_what_is_not_an_fcp() {
        assert_eq!(Fcp::parse(&[0x6F, 0x00]), Err(FcpError::NotFcp));
        assert_eq!(
            Fcp::parse(&[0x62, 0x05, 0x83, 0x02]),
            Err(FcpError::Truncated)
        );
        assert_eq!(
            Fcp::parse(&[0x62, 0x04, 0x83, 0x02, 0x6F, 0x07]),
            Err(FcpError::NoDescriptor)
        );
    }
}
