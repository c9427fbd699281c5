//! Command and response APDUs of a UICC (ETSI TS 102 221, ISO 7816-4), as bytes and back.
//!
//! It builds the few commands a card writer needs (SELECT, READ/UPDATE BINARY and RECORD,
//! VERIFY, AUTHENTICATE, GET RESPONSE) and names the status words they answer with.
//! It does not send anything and does not handle T=0 chaining itself: the reader does that
//! with [`Status::ResponseAvailable`] and [`Status::WrongLe`].
//! Only short APDUs (Lc and Le of one byte) are supported; nothing on a SIM needs more.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A command APDU in its short form.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub cla: u8,
    pub ins: u8,
    pub p1: u8,
    pub p2: u8,
    /// Command data; empty means no Lc field.
    pub data: Vec<u8>,
    /// Expected response length; `Some(0)` means "up to 256".
    pub le: Option<u8>,
}

/// Errors when bytes do not form a short command APDU.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApduError {
    /// Fewer than the four header bytes.
    #[error("an APDU needs at least 4 bytes, got {0}")]
    TooShort(usize),
    /// The Lc byte announces more or fewer data bytes than follow.
    #[error("Lc announces {lc} data bytes but {available} bytes follow the header")]
    LcMismatch { lc: usize, available: usize },
    /// A response needs at least the two status bytes.
    #[error("a response needs at least SW1 SW2, got {0} bytes")]
    ResponseTooShort(usize),
    /// Extended-length APDUs are not used by SIM cards and not supported here.
    #[error("extended-length APDUs are not supported")]
    ExtendedLength,
}

/// Instruction bytes used in this crate.
pub mod ins {
    pub const SELECT: u8 = 0xA4;
    pub const READ_BINARY: u8 = 0xB0;
    pub const UPDATE_BINARY: u8 = 0xD6;
    pub const READ_RECORD: u8 = 0xB2;
    pub const UPDATE_RECORD: u8 = 0xDC;
    pub const VERIFY: u8 = 0x20;
    pub const AUTHENTICATE: u8 = 0x88;
    pub const GET_RESPONSE: u8 = 0xC0;
    pub const STATUS: u8 = 0xF2;
}

/// Key reference of ADM1 in VERIFY (TS 102 221 §9.5.1).
pub const ADM1_KEY_REFERENCE: u8 = 0x0A;

/// Which elementary file a READ or UPDATE BINARY addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryTarget {
    /// The currently selected EF; the offset may use 15 bits.
    Current,
    /// A short file identifier (1..=30) in the current DF; the offset must fit in one byte.
    /// Using it avoids a SELECT and makes that EF the current one.
    Sfi(u8),
}

impl Command {
    /// A command without data and without Le (ISO case 1).
    pub fn new(cla: u8, ins: u8, p1: u8, p2: u8) -> Self {
        Command {
            cla,
            ins,
            p1,
            p2,
            data: Vec::new(),
            le: None,
        }
    }

    /// Encode as the bytes sent to the card.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(6 + self.data.len());
        bytes.extend_from_slice(&[self.cla, self.ins, self.p1, self.p2]);
        if !self.data.is_empty() {
            // Short APDUs only: constructors never build more than 255 data bytes.
            bytes.push(self.data.len() as u8);
            bytes.extend_from_slice(&self.data);
        }
        if let Some(le) = self.le {
            bytes.push(le);
        }
        bytes
    }

    /// Parse the bytes of a short command APDU (cases 1 to 4).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ApduError> {
        if bytes.len() < 4 {
            return Err(ApduError::TooShort(bytes.len()));
        }
        let mut command = Command::new(bytes[0], bytes[1], bytes[2], bytes[3]);
        let body = &bytes[4..];
        match body.len() {
            0 => {}
            1 => command.le = Some(body[0]),
            _ => {
                let lc = body[0] as usize;
                if lc == 0 {
                    return Err(ApduError::ExtendedLength);
                }
                let available = body.len() - 1;
                if available == lc {
                    command.data = body[1..].to_vec();
                } else if available == lc + 1 {
                    command.data = body[1..=lc].to_vec();
                    command.le = Some(body[lc + 1]);
                } else {
                    return Err(ApduError::LcMismatch { lc, available });
                }
            }
        }
        Ok(command)
    }

    /// SELECT by file identifier, asking for the FCP template (P2 = 04).
    pub fn select_by_fid(fid: u16) -> Self {
        Command {
            data: fid.to_be_bytes().to_vec(),
            le: Some(0),
            ..Command::new(0x00, ins::SELECT, 0x00, 0x04)
        }
    }

    /// SELECT by file identifier without response data (P2 = 0C): one APDU, no GET RESPONSE.
    pub fn select_by_fid_quiet(fid: u16) -> Self {
        Command {
            data: fid.to_be_bytes().to_vec(),
            ..Command::new(0x00, ins::SELECT, 0x00, 0x0C)
        }
    }

    /// SELECT an application by its AID (or a unique prefix of it), without response data.
    pub fn select_by_aid_quiet(aid: &[u8]) -> Self {
        Command {
            data: aid.to_vec(),
            ..Command::new(0x00, ins::SELECT, 0x04, 0x0C)
        }
    }

    /// READ BINARY of `len` bytes (0 means 256) from `offset`.
    pub fn read_binary(target: BinaryTarget, offset: u16, len: u8) -> Self {
        let (p1, p2) = binary_p1_p2(target, offset);
        Command {
            le: Some(len),
            ..Command::new(0x00, ins::READ_BINARY, p1, p2)
        }
    }

    /// UPDATE BINARY writing `data` at `offset`.
    pub fn update_binary(target: BinaryTarget, offset: u16, data: &[u8]) -> Self {
        let (p1, p2) = binary_p1_p2(target, offset);
        Command {
            data: data.to_vec(),
            ..Command::new(0x00, ins::UPDATE_BINARY, p1, p2)
        }
    }

    /// READ RECORD in absolute mode of record `record` (1-based), optionally by SFI.
    pub fn read_record(sfi: Option<u8>, record: u8, len: u8) -> Self {
        Command {
            le: Some(len),
            ..Command::new(0x00, ins::READ_RECORD, record, record_p2(sfi))
        }
    }

    /// UPDATE RECORD in absolute mode; `data` must be exactly the record length.
    pub fn update_record(sfi: Option<u8>, record: u8, data: &[u8]) -> Self {
        Command {
            data: data.to_vec(),
            ..Command::new(0x00, ins::UPDATE_RECORD, record, record_p2(sfi))
        }
    }

    /// VERIFY ADM1 (key reference 0A) with the 8-byte encoded key.
    pub fn verify_adm1(adm1: &[u8; 8]) -> Self {
        Command {
            data: adm1.to_vec(),
            ..Command::new(0x00, ins::VERIFY, 0x00, ADM1_KEY_REFERENCE)
        }
    }

    /// AUTHENTICATE in 3G context (P2 = 81): length-prefixed RAND and AUTN.
    pub fn authenticate_3g(rand: &[u8; 16], autn: &[u8; 16]) -> Self {
        let mut data = Vec::with_capacity(34);
        data.push(16);
        data.extend_from_slice(rand);
        data.push(16);
        data.extend_from_slice(autn);
        Command {
            data,
            le: Some(0),
            ..Command::new(0x00, ins::AUTHENTICATE, 0x00, 0x81)
        }
    }

    /// AUTHENTICATE in GSM context (P2 = 80): length-prefixed RAND; answers SRES and Kc.
    pub fn authenticate_gsm(rand: &[u8; 16]) -> Self {
        let mut data = Vec::with_capacity(17);
        data.push(16);
        data.extend_from_slice(rand);
        Command {
            data,
            le: Some(0),
            ..Command::new(0x00, ins::AUTHENTICATE, 0x00, 0x80)
        }
    }

    /// GET RESPONSE for the `len` bytes announced by a `61 xx` status.
    pub fn get_response(len: u8) -> Self {
        Command {
            le: Some(len),
            ..Command::new(0x00, ins::GET_RESPONSE, 0x00, 0x00)
        }
    }

    /// GET RESPONSE for the `len` bytes a command with class `cla` left waiting: on the same
    /// logical channel (a UICC class keeps its channel bits, the proprietary bit cleared), or
    /// in class A0 after a classic SIM's `9F xx`.
    pub fn get_response_after(cla: u8, len: u8) -> Self {
        let cla = match cla {
            0xA0 => 0xA0,
            cla if cla & 0x40 == 0x40 => cla & 0x4F,
            cla => cla & 0x03,
        };
        Command {
            cla,
            ..Command::get_response(len)
        }
    }
}

fn binary_p1_p2(target: BinaryTarget, offset: u16) -> (u8, u8) {
    match target {
        BinaryTarget::Current => (((offset >> 8) & 0x7F) as u8, (offset & 0xFF) as u8),
        BinaryTarget::Sfi(sfi) => (0x80 | (sfi & 0x1F), (offset & 0xFF) as u8),
    }
}

fn record_p2(sfi: Option<u8>) -> u8 {
    // P2 bits 8-4 carry the SFI (0 = current EF); bits 3-1 = 100 select absolute mode.
    (sfi.unwrap_or(0) & 0x1F) << 3 | 0x04
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The data may be an ADM key or subscriber key: show only its length.
        write!(
            f,
            "Command({:02X} {:02X} {:02X} {:02X}, {} data bytes, le {:?})",
            self.cla,
            self.ins,
            self.p1,
            self.p2,
            self.data.len(),
            self.le
        )
    }
}

/// A response APDU: data followed by the status word.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    #[serde(with = "crate::hexser")]
    pub data: Vec<u8>,
    pub sw1: u8,
    pub sw2: u8,
}

impl Response {
    /// A response with the given data and status word.
    pub fn new(data: Vec<u8>, sw: u16) -> Self {
        let [sw1, sw2] = sw.to_be_bytes();
        Response { data, sw1, sw2 }
    }

    /// Parse `data ‖ SW1 SW2`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ApduError> {
        if bytes.len() < 2 {
            return Err(ApduError::ResponseTooShort(bytes.len()));
        }
        let (data, sw) = bytes.split_at(bytes.len() - 2);
        Ok(Response {
            data: data.to_vec(),
            sw1: sw[0],
            sw2: sw[1],
        })
    }

    /// Encode as `data ‖ SW1 SW2`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = self.data.clone();
        bytes.extend_from_slice(&[self.sw1, self.sw2]);
        bytes
    }

    /// The status word as one number, e.g. `0x9000`.
    pub fn sw(&self) -> u16 {
        u16::from_be_bytes([self.sw1, self.sw2])
    }

    /// What the status word means.
    pub fn status(&self) -> Status {
        Status::from_sw(self.sw())
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Responses can carry CK/IK: show only the length and the status word.
        write!(
            f,
            "Response({} data bytes, SW {:04X})",
            self.data.len(),
            self.sw()
        )
    }
}

/// The status words a card writer has to tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 9000, or 91xx (success with a proactive command pending).
    Ok,
    /// 61xx (or 9Fxx from a classic SIM): `xx` bytes wait for GET RESPONSE (T=0).
    ResponseAvailable(u8),
    /// 6Cxx: wrong Le, the card has exactly `xx` bytes; repeat with that Le.
    WrongLe(u8),
    /// 63Cx: verification failed, `x` tries left.
    VerifyFailed { tries_left: u8 },
    /// 6982: security status not satisfied (for example ADM1 not verified).
    SecurityNotSatisfied,
    /// 6983: authentication method blocked (no tries left).
    Blocked,
    /// 6A82: file or application not found.
    FileNotFound,
    /// 6A83: record not found.
    RecordNotFound,
    /// 9862: authentication error, incorrect MAC (AUTN rejected).
    AuthMacFailure,
    /// 6700 or 6Cxx-like length problems other than the above.
    WrongLength,
    /// Any other status word.
    Other(u16),
}

impl Status {
    /// Classify a status word.
    pub fn from_sw(sw: u16) -> Self {
        let [sw1, sw2] = sw.to_be_bytes();
        match (sw1, sw2) {
            (0x90, 0x00) | (0x91, _) => Status::Ok,
            (0x61, n) | (0x9F, n) => Status::ResponseAvailable(n),
            (0x6C, n) => Status::WrongLe(n),
            (0x63, n) if n & 0xF0 == 0xC0 => Status::VerifyFailed {
                tries_left: n & 0x0F,
            },
            (0x69, 0x82) => Status::SecurityNotSatisfied,
            (0x69, 0x83) => Status::Blocked,
            (0x6A, 0x82) => Status::FileNotFound,
            (0x6A, 0x83) => Status::RecordNotFound,
            (0x98, 0x62) => Status::AuthMacFailure,
            (0x67, 0x00) => Status::WrongLength,
            _ => Status::Other(sw),
        }
    }
}

/// Status word constants used by the card model and the scripts.
pub mod sw {
    pub const OK: u16 = 0x9000;
    pub const WRONG_LENGTH: u16 = 0x6700;
    pub const SECURITY_NOT_SATISFIED: u16 = 0x6982;
    pub const AUTH_METHOD_BLOCKED: u16 = 0x6983;
    pub const CONDITIONS_NOT_SATISFIED: u16 = 0x6985;
    pub const COMMAND_INCOMPATIBLE: u16 = 0x6981;
    pub const WRONG_DATA: u16 = 0x6A80;
    pub const FUNCTION_NOT_SUPPORTED: u16 = 0x6A81;
    pub const FILE_NOT_FOUND: u16 = 0x6A82;
    pub const RECORD_NOT_FOUND: u16 = 0x6A83;
    pub const INCORRECT_P1_P2: u16 = 0x6A86;
    pub const REFERENCED_DATA_NOT_FOUND: u16 = 0x6A88;
    pub const WRONG_P1_P2: u16 = 0x6B00;
    pub const INS_NOT_SUPPORTED: u16 = 0x6D00;
    pub const CLA_NOT_SUPPORTED: u16 = 0x6E00;
    pub const AUTH_MAC_FAILURE: u16 = 0x9862;
    pub const TECHNICAL_PROBLEM: u16 = 0x6F00;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_by_fid_asks_for_the_fcp() {
        assert_eq!(
            hex::encode(Command::select_by_fid(0x3F00).to_bytes()),
            "00a40004023f0000"
        );
        assert_eq!(
            hex::encode(Command::select_by_fid_quiet(0x7F10).to_bytes()),
            "00a4000c027f10"
        );
    }

    #[test]
    fn binary_commands_put_the_sfi_in_p1() {
        let read = Command::read_binary(BinaryTarget::Sfi(0x07), 0, 9);
        assert_eq!(hex::encode(read.to_bytes()), "00b0870009");
        let read = Command::read_binary(BinaryTarget::Current, 0x0123, 4);
        assert_eq!(hex::encode(read.to_bytes()), "00b0012304");
        let update = Command::update_binary(BinaryTarget::Sfi(0x13), 0, &[1, 2]);
        assert_eq!(hex::encode(update.to_bytes()), "00d69300020102");
    }

    #[test]
    fn record_commands_use_absolute_mode() {
        assert_eq!(
            hex::encode(Command::read_record(None, 1, 34).to_bytes()),
            "00b2010422"
        );
        assert_eq!(
            hex::encode(Command::read_record(Some(0x1E), 1, 0).to_bytes()),
            "00b201f400"
        );
        assert_eq!(
            hex::encode(Command::update_record(None, 2, &[0xFF]).to_bytes()),
            "00dc020401ff"
        );
    }

    #[test]
    fn verify_and_authenticate_have_the_documented_headers() {
        let verify = Command::verify_adm1(b"55538407");
        assert_eq!(hex::encode(verify.to_bytes()), "0020000a083535353338343037");
        let auth = Command::authenticate_3g(&[0x11; 16], &[0x22; 16]).to_bytes();
        assert_eq!(&auth[..6], &[0x00, 0x88, 0x00, 0x81, 34, 16]);
        assert_eq!(auth[22], 16);
        assert_eq!(auth.len(), 5 + 34 + 1);
        let gsm = Command::authenticate_gsm(&[0x11; 16]).to_bytes();
        assert_eq!(&gsm[..6], &[0x00, 0x88, 0x00, 0x80, 17, 16]);
    }

    #[test]
    fn commands_round_trip_through_bytes() {
        let commands = [
            Command::new(0x00, 0xF2, 0x00, 0x00),
            Command::select_by_fid(0x2FE2),
            Command::select_by_aid_quiet(&[0xA0, 0, 0, 0, 0x87, 0x10, 0x02]),
            Command::read_binary(BinaryTarget::Sfi(2), 0, 10),
            Command::update_record(None, 1, &[0xAB; 34]),
            Command::authenticate_3g(&[1; 16], &[2; 16]),
        ];
        for command in commands {
            assert_eq!(Command::from_bytes(&command.to_bytes()), Ok(command));
        }
        assert_eq!(Command::from_bytes(&[0, 1]), Err(ApduError::TooShort(2)));
        assert_eq!(
            Command::from_bytes(&[0, 0xD6, 0, 0, 5, 1, 2]),
            Err(ApduError::LcMismatch {
                lc: 5,
                available: 2
            })
        );
    }

    #[test]
    fn status_words_are_classified() {
        let classify = |bytes: &[u8]| Response::from_bytes(bytes).map(|r| r.status());
        assert_eq!(classify(&[0x90, 0x00]), Ok(Status::Ok));
        assert_eq!(classify(&[0x91, 0x10]), Ok(Status::Ok));
        assert_eq!(classify(&[0x61, 0x35]), Ok(Status::ResponseAvailable(0x35)));
        assert_eq!(classify(&[0x9F, 0x16]), Ok(Status::ResponseAvailable(0x16)));
        assert_eq!(classify(&[0x6C, 0x09]), Ok(Status::WrongLe(9)));
        assert_eq!(
            classify(&[0x63, 0xC2]),
            Ok(Status::VerifyFailed { tries_left: 2 })
        );
        assert_eq!(classify(&[0x69, 0x82]), Ok(Status::SecurityNotSatisfied));
        assert_eq!(classify(&[0x69, 0x83]), Ok(Status::Blocked));
        assert_eq!(classify(&[0x6A, 0x82]), Ok(Status::FileNotFound));
        assert_eq!(classify(&[0x6A, 0x86]), Ok(Status::Other(0x6A86)));
        assert_eq!(classify(&[0x90]), Err(ApduError::ResponseTooShort(1)));
        let response = Response::from_bytes(&[1, 2, 3, 0x90, 0x00]).expect("valid response");
        assert_eq!(response.data, vec![1, 2, 3]);
        assert_eq!(response.to_bytes(), vec![1, 2, 3, 0x90, 0x00]);
    }

    #[test]
    fn get_response_stays_on_the_commands_channel_and_class() {
        assert_eq!(Command::get_response_after(0x00, 0x10).to_bytes()[0], 0x00);
        assert_eq!(Command::get_response_after(0x81, 0x10).to_bytes()[0], 0x01);
        assert_eq!(Command::get_response_after(0x43, 0x10).to_bytes()[0], 0x43);
        assert_eq!(
            hex::encode(Command::get_response_after(0xA0, 0x0C).to_bytes()),
            "a0c000000c"
        );
    }

    #[test]
    fn debug_output_never_shows_command_data() {
        let text = format!("{:?}", Command::verify_adm1(b"55538407"));
        assert!(!text.contains("35"), "{text}");
    }
}
