//! Card families and the scripts that personalise them: the boundary the pipeline calls.
//!
//! A [`CardFamily`] turns a [`Personalisation`] and an authentication [`Challenge`] into a
//! [`Script`]: the exact APDUs to send, with the status word and read-back data each must
//! answer. Two families exist: [`SysmoIsimSja2`] (USIM + ISIM, keys in DF.SYSTEM and the ADFs)
//! and [`SysmoUsimSjs1`] (USIM only, keys in DF.GSM); a card's family comes from its ATR
//! ([`detect_family`]) and a script's from its card type at the centre, and a script carries
//! its family's name so the writer can refuse a card of another family.
//! Everything family-independent lives here too: identifying a UICC ([`identification_for`],
//! [`parse_identity`]), checking the card's answer to the challenge ([`check_auth_answer`]), and
//! telling from a card's files how far a write got ([`probe_script`], [`classify_written_state`]).
//!
//! This module builds and judges bytes; it does not send them (the reader crate does), does not
//! encrypt scripts (the pipeline does), and never formats a secret into a string.
//!
//! # When is a card "written"?
//! A card counts as written exactly when its EF.IMSI holds an IMSI: that is also how
//! [`parse_identity`] tells a blank card (EF.IMSI all FF) from a used one. Scripts therefore write
//! EF.IMSI *last*, after the keys and every other file. Every step is an absolute write (UPDATE
//! BINARY at offset 0, UPDATE RECORD in absolute mode) or a read, so a script can be run again
//! from its first step at any time with the same result. A card pulled before the IMSI write
//! still reads as blank and is simply written again; [`classify_written_state`] reports the
//! leftovers as [`WrittenState::PartlyWritten`] so the journal can say what happened. Only files
//! that hold data of one subscription count as evidence of who wrote a card ([`Step::evidence`]):
//! vendors ship blanks with PLMN lists, EF.AD or key configurations already set.

mod builder;
mod sja2;
mod sjs1;

pub use builder::UsimLayout;
pub use sja2::{
    AUTH_KEY_CFG_MILENAGE_OPC, GsmCopy, IsimLayout, SJA2_ATR, SJA2_ISIM_AID, SJA2_USIM_AID,
    Sja2Layout, SysmoIsimSja2,
};
pub use sjs1::{OPC_FILE_HOLDS_OPC, SJS1_ATR, SJS1_USIM_AID, SysmoUsimSjs1};

use crate::apdu::{BinaryTarget, Command, Response};
use crate::encoding::{self, Adm1, EncodingError};
use crate::milenage;
use serde::{Deserialize, Serialize};
use std::fmt;
use zeroize::Zeroize;

/// Prefix of every 3GPP USIM AID (RID A000000087, application code 1002). Selecting by this
/// partial AID works on UICCs before their family (and full AID) is known.
pub const USIM_AID_PREFIX: [u8; 7] = [0xA0, 0x00, 0x00, 0x00, 0x87, 0x10, 0x02];

/// What to write on one card: the subscription data and the card's own keys.
///
/// `Debug` never prints `ki`, `opc` or `adm1`; `ki` and `opc` are wiped when dropped
/// (`adm1` wipes itself).
pub struct Personalisation {
    /// The card's ICCID as read from EF.ICCID (never rewritten).
    pub iccid: String,
    pub imsi: String,
    pub msisdn: String,
    pub ki: [u8; 16],
    pub opc: [u8; 16],
    pub adm1: Adm1,
    /// Service provider name; GSM default alphabet or up to 7 UCS2 characters.
    pub spn: Option<String>,
    /// The home PLMN. When given, the IMSI must start with it, EF.AD gets its MNC length and
    /// EF.HPLMNwAcT its first entry. When absent, EF.AD says a 2-digit MNC.
    pub mcc_mnc: Option<(String, String)>,
    /// SMS service centre number (e.g. `+8613800100500`), written to EF.SMSP record 1.
    pub smsp: Option<String>,
}

impl fmt::Debug for Personalisation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Personalisation")
            .field("iccid", &self.iccid)
            .field("imsi", &self.imsi)
            .field("msisdn", &self.msisdn)
            .field("ki", &"<redacted>")
            .field("opc", &"<redacted>")
            .field("adm1", &"<redacted>")
            .field("spn", &self.spn)
            .field("mcc_mnc", &self.mcc_mnc)
            .field("smsp", &self.smsp)
            .finish()
    }
}

impl Drop for Personalisation {
    fn drop(&mut self) {
        self.ki.zeroize();
        self.opc.zeroize();
    }
}

/// The kind of a script step; the reader logs it instead of the APDU for secret steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    Select,
    Verify,
    Update,
    ReadBack,
    Authenticate,
}

/// One APDU of a script and what it must answer.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Position in the script, from 0.
    pub index: u16,
    pub kind: StepKind,
    /// The file or application the step is about, e.g. `ADF.USIM/EF.IMSI`.
    pub target: String,
    /// The command APDU bytes.
    #[serde(with = "crate::hexser")]
    pub apdu: Vec<u8>,
    /// The final status word (after the reader's GET RESPONSE / Le correction).
    pub expect_sw: u16,
    /// For read-backs: the exact data the card must answer.
    #[serde(with = "crate::hexser::option", default)]
    pub expect_data: Option<Vec<u8>>,
    /// True when the APDU or the expected answer carries ADM or key bytes: never logged, never
    /// printed.
    pub secret: bool,
    /// For read-backs: the file holds data of this subscription only (IMSI, MSISDN, IMS
    /// identities), so other data there means another write happened. False for files with
    /// operator-wide or vendor-preset content (SPN, EF.AD, PLMN lists, keys), which prove nothing
    /// about who wrote the card (see [`classify_written_state`]).
    #[serde(default = "evidence_by_default")]
    pub evidence: bool,
}

/// Scripts sealed before the field existed treated every read-back as evidence.
fn evidence_by_default() -> bool {
    true
}

impl fmt::Debug for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |bytes: &[u8]| {
            if self.secret {
                "<redacted>".to_string()
            } else {
                hex::encode(bytes)
            }
        };
        f.debug_struct("Step")
            .field("index", &self.index)
            .field("kind", &self.kind)
            .field("target", &self.target)
            .field("apdu", &shown(&self.apdu))
            .field("expect_sw", &format_args!("{:04X}", self.expect_sw))
            .field("expect_data", &self.expect_data.as_deref().map(shown))
            .field("evidence", &self.evidence)
            .finish()
    }
}

/// A full personalisation and verification of one card, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Script {
    /// The card family that built it, e.g. `sysmoISIM-SJA2`.
    pub family: String,
    /// The card it is for; the first read-back step checks it before anything is written.
    pub iccid: String,
    pub steps: Vec<Step>,
    /// Index of the update that makes the card count as written (the EF.IMSI write).
    pub commit_step: u16,
    /// Index of the read-back of that file, used to classify a card after an interruption.
    pub marker_step: u16,
}

impl Script {
    /// The number this script writes into EF.MSISDN, read from its own update step (so it is
    /// exactly what the card gets); `None` when the script writes no MSISDN.
    pub fn msisdn(&self) -> Option<String> {
        let step = self.steps.iter().find(|step| {
            step.kind == StepKind::Update && step.target.ends_with("EF.MSISDN") && !step.secret
        })?;
        // UPDATE RECORD: CLA INS P1 P2 Lc, then the record.
        let record = step.apdu.get(5..)?;
        crate::encoding::decode_msisdn_record(record).ok().flatten()
    }

    /// How many steps of each kind, for logs and the APDU budget.
    pub fn count_by_kind(&self) -> Vec<(StepKind, usize)> {
        let kinds = [
            StepKind::Select,
            StepKind::Verify,
            StepKind::Update,
            StepKind::ReadBack,
            StepKind::Authenticate,
        ];
        kinds
            .into_iter()
            .map(|kind| {
                (
                    kind,
                    self.steps.iter().filter(|step| step.kind == kind).count(),
                )
            })
            .collect()
    }

    /// The final step, whose response data is the answer to the challenge.
    pub fn authenticate_step(&self) -> Option<&Step> {
        self.steps
            .iter()
            .rev()
            .find(|step| step.kind == StepKind::Authenticate)
    }
}

/// Why a script or an identity could not be built or judged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// A personalisation field cannot be encoded.
    #[error(transparent)]
    Encoding(#[from] EncodingError),
    /// The IMSI does not start with the configured home PLMN.
    #[error("IMSI does not start with the home PLMN {mcc}{mnc}")]
    ImsiOutsideHomePlmn { mcc: String, mnc: String },
    /// The answers do not line up with the steps that produced them.
    #[error("expected {expected} responses, got {got}")]
    ResponseCount { expected: usize, got: usize },
    /// A step answered with a status word other than the one the step expects.
    #[error("step {index} ({target}) answered SW {got:04X}")]
    UnexpectedStatus {
        index: u16,
        target: String,
        got: u16,
    },
    /// The card read is not the card the script is for.
    #[error("card ICCID {found} is not the script's ICCID {expected}")]
    WrongCard { expected: String, found: String },
}

// ---------------------------------------------------------------------------------------------
// Card families

/// What EF.EHPLMN says after the write. A vendor's EHPLMN left on a blank would take the place
/// of the home network in network selection (TS 23.122 §4.4.3), so the script always writes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EhplmnPolicy {
    /// The home PLMN only (cleared when the personalisation names no home PLMN).
    #[default]
    Home,
    /// No entry: the HPLMN derived from the IMSI is the home network.
    Clear,
}

/// Choices the operator makes once for every card of a family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FamilyOptions {
    pub ehplmn: EhplmnPolicy,
}

/// One programmable card family: how to recognise it and how to write it.
///
/// Adding a family means one new implementation and one line in [`families_with`]; the pipeline
/// only sees [`Script`]s.
pub trait CardFamily: Send + Sync {
    /// The family name carried in [`Script::family`].
    fn name(&self) -> &'static str;

    /// Whether a card's ATR belongs to this family.
    fn matches_atr(&self, atr: &[u8]) -> bool;

    /// The steps that read a blank's EF.ICCID and EF.IMSI, before anything is written.
    /// By default the ones that work on any UICC ([`identify_script`]).
    fn identify_script(&self) -> Vec<Step> {
        identify_script()
    }

    /// The fewest APDUs that fully personalise a card of this family, read back what was
    /// written and run `challenge`. Every step is idempotent and EF.IMSI is written last.
    fn build_write_script(
        &self,
        p: &Personalisation,
        challenge: &Challenge,
    ) -> Result<Script, ProfileError>;
}

/// Every card family this build knows, configured with `options`.
pub fn families_with(options: &FamilyOptions) -> Vec<Box<dyn CardFamily>> {
    vec![
        Box::new(SysmoIsimSja2 {
            options: options.clone(),
            ..SysmoIsimSja2::default()
        }),
        Box::new(SysmoUsimSjs1 {
            options: options.clone(),
            ..SysmoUsimSjs1::default()
        }),
    ]
}

/// Every card family this build knows, with default options.
pub fn families() -> Vec<Box<dyn CardFamily>> {
    families_with(&FamilyOptions::default())
}

/// The family with this name, configured with `options`, if known.
pub fn family_by_name_with(name: &str, options: &FamilyOptions) -> Option<Box<dyn CardFamily>> {
    families_with(options)
        .into_iter()
        .find(|family| family.name() == name)
}

/// The family with this name (default options), if known.
pub fn family_by_name(name: &str) -> Option<Box<dyn CardFamily>> {
    family_by_name_with(name, &FamilyOptions::default())
}

/// The family whose ATRs include `atr`, if any.
pub fn detect_family(atr: &[u8]) -> Option<Box<dyn CardFamily>> {
    families()
        .into_iter()
        .find(|family| family.matches_atr(atr))
}

// ---------------------------------------------------------------------------------------------
// Identification

/// What a card says about itself before anything is written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub iccid: String,
    /// True when EF.IMSI is unwritten (all FF): a blank card.
    pub blank: bool,
    pub imsi: Option<String>,
}

/// Identification steps, numbered in order, with no expected data.
fn identification(steps: Vec<(StepKind, &str, Command)>) -> Vec<Step> {
    steps
        .into_iter()
        .enumerate()
        .map(|(index, (kind, target, command))| Step {
            index: index as u16,
            kind,
            target: target.to_string(),
            apdu: command.to_bytes(),
            expect_sw: crate::apdu::sw::OK,
            expect_data: None,
            secret: false,
            evidence: true,
        })
        .collect()
}

/// Identification that reads EF.ICCID with `read_iccid` after selecting the MF (and `extra`
/// before it), then selects the USIM by its partial AID and reads EF.IMSI by SFI 07.
fn identification_with(extra: Option<Command>, read_iccid: Command) -> Vec<Step> {
    let mut steps = vec![(StepKind::Select, "MF", Command::select_by_fid_quiet(0x3F00))];
    steps.extend(extra.map(|select| (StepKind::Select, "MF/EF.ICCID", select)));
    steps.extend([
        (StepKind::ReadBack, "MF/EF.ICCID", read_iccid),
        (
            StepKind::Select,
            "ADF.USIM",
            Command::select_by_aid_quiet(&USIM_AID_PREFIX),
        ),
        (
            StepKind::ReadBack,
            "ADF.USIM/EF.IMSI",
            Command::read_binary(BinaryTarget::Sfi(0x07), 0, 9),
        ),
    ]);
    identification(steps)
}

/// Identification that works on any UICC with a USIM, also where EF.ICCID has no SFI: select the
/// MF and EF.ICCID and read it, select the USIM by its partial AID, read EF.IMSI by SFI 07
/// (five APDUs).
pub fn identify_script() -> Vec<Step> {
    identification_with(
        Some(Command::select_by_fid_quiet(0x2FE2)),
        Command::read_binary(BinaryTarget::Current, 0, 10),
    )
}

/// Identification by short file identifiers (four APDUs), for families whose EF.ICCID has SFI 02:
/// select the MF, read EF.ICCID by SFI 02, select the USIM by its partial AID, read EF.IMSI by
/// SFI 07.
pub fn identify_by_sfi() -> Vec<Step> {
    identification_with(None, Command::read_binary(BinaryTarget::Sfi(0x02), 0, 10))
}

/// The identification for a card with this ATR: its family's, or the one that works anywhere.
pub fn identification_for(atr: &[u8]) -> Vec<Step> {
    detect_family(atr).map_or_else(identify_script, |family| family.identify_script())
}

/// Read the answers to identification `steps` (one response per step).
pub fn parse_identity(steps: &[Step], responses: &[Response]) -> Result<Identity, ProfileError> {
    check_statuses(steps, responses)?;
    let answer_of = |file: &str| {
        steps
            .iter()
            .zip(responses)
            .find(|(step, _)| step.kind == StepKind::ReadBack && step.target.ends_with(file))
            .map(|(_, response)| response.data.as_slice())
            .ok_or(ProfileError::ResponseCount {
                expected: steps.len(),
                got: responses.len(),
            })
    };
    let iccid = encoding::decode_iccid(answer_of("EF.ICCID")?)?;
    let imsi = encoding::decode_imsi(answer_of("EF.IMSI")?)?;
    Ok(Identity {
        iccid,
        blank: imsi.is_none(),
        imsi,
    })
}

fn check_statuses(steps: &[Step], responses: &[Response]) -> Result<(), ProfileError> {
    if steps.len() != responses.len() {
        return Err(ProfileError::ResponseCount {
            expected: steps.len(),
            got: responses.len(),
        });
    }
    for (step, response) in steps.iter().zip(responses) {
        if response.sw() != step.expect_sw {
            return Err(ProfileError::UnexpectedStatus {
                index: step.index,
                target: step.target.clone(),
                got: response.sw(),
            });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Authentication challenge

/// A 3G authentication challenge for the freshly written card. Not secret: RAND and AUTN
/// travel in the clear on every radio interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    #[serde(with = "crate::hexser::array16")]
    pub rand: [u8; 16],
    #[serde(with = "crate::hexser::array16")]
    pub autn: [u8; 16],
}

/// Build the challenge centrally, where the card's keys are.
pub fn make_challenge(
    ki: &[u8; 16],
    opc: &[u8; 16],
    rand: &[u8; 16],
    sqn: &[u8; 6],
    amf: &[u8; 2],
) -> Challenge {
    let vector = milenage::generate_vector(ki, opc, rand, sqn, amf);
    Challenge {
        rand: vector.rand,
        autn: vector.autn,
    }
}

/// How a card proved it holds the right key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum AuthCheck {
    /// The card accepted AUTN and answered the expected RES, CK and IK.
    Authenticated,
    /// The card rejected the SQN as not fresh and answered AUTS, whose MAC-S is right:
    /// the key is proven just the same. `sqn_ms` is the card's highest accepted SQN.
    Resynchronised {
        #[serde(with = "crate::hexser")]
        sqn_ms: Vec<u8>,
    },
}

/// Why an answer to the challenge does not prove the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthCheckError {
    /// The card answered, but not with what these keys produce: wrong Ki or OPc on the card.
    #[error("the card's answer does not match the expected keys ({0})")]
    WrongKey(&'static str),
    /// The answer is not a well-formed AUTHENTICATE response.
    #[error("malformed AUTHENTICATE answer: {0}")]
    Malformed(&'static str),
}

/// Judge the data of the card's answer to AUTHENTICATE (3G context): `DB` with RES, CK, IK
/// (and optionally Kc), or `DC` with AUTS after a synchronisation failure.
pub fn check_auth_answer(
    ki: &[u8; 16],
    opc: &[u8; 16],
    challenge: &Challenge,
    answer: &[u8],
) -> Result<AuthCheck, AuthCheckError> {
    let (&tag, rest) = answer
        .split_first()
        .ok_or(AuthCheckError::Malformed("empty"))?;
    match tag {
        0xDB => {
            let (res, rest) = length_prefixed(rest)?;
            let (ck, rest) = length_prefixed(rest)?;
            let (ik, _) = length_prefixed(rest)?;
            let (xres, xck, xik, _) =
                ::milenage::Milenage::new_with_opc(*ki, *opc).f2345(&challenge.rand);
            if res != xres.as_slice() {
                return Err(AuthCheckError::WrongKey("RES differs"));
            }
            if ck != xck.as_slice() || ik != xik.as_slice() {
                return Err(AuthCheckError::WrongKey("CK or IK differs"));
            }
            Ok(AuthCheck::Authenticated)
        }
        0xDC => {
            let (auts, _) = length_prefixed(rest)?;
            let auts: [u8; 14] = auts
                .try_into()
                .map_err(|_| AuthCheckError::Malformed("AUTS is not 14 bytes"))?;
            let sqn_ms = milenage::check_auts(ki, opc, &challenge.rand, &auts)
                .map_err(|_| AuthCheckError::WrongKey("AUTS MAC-S differs"))?;
            Ok(AuthCheck::Resynchronised {
                sqn_ms: sqn_ms.to_vec(),
            })
        }
        _ => Err(AuthCheckError::Malformed("unknown tag")),
    }
}

fn length_prefixed(bytes: &[u8]) -> Result<(&[u8], &[u8]), AuthCheckError> {
    let (&len, rest) = bytes
        .split_first()
        .ok_or(AuthCheckError::Malformed("truncated"))?;
    let len = len as usize;
    if rest.len() < len {
        return Err(AuthCheckError::Malformed("truncated"));
    }
    Ok(rest.split_at(len))
}

// ---------------------------------------------------------------------------------------------
// After an interruption: how far did the write get?

/// The steps that read a card's state for [`classify_written_state`]: the script's selects and
/// read-backs in their order, with no VERIFY, no writes, no AUTHENTICATE, no secret read-backs
/// (key files need ADM1) and no expected data (so a reader runs them without failing on
/// differences). Safe to run on any card.
pub fn probe_script(script: &Script) -> Vec<Step> {
    script
        .steps
        .iter()
        .filter(|step| matches!(step.kind, StepKind::Select | StepKind::ReadBack) && !step.secret)
        .map(|step| Step {
            expect_data: None,
            ..step.clone()
        })
        .collect()
}

/// What a card's files say about a script that may have been interrupted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum WrittenState {
    /// EF.IMSI and every evidence file (see [`Step::evidence`]) are still as shipped (all FF):
    /// nothing of a subscription was written.
    Untouched,
    /// EF.IMSI is still blank but other evidence files were written: an interrupted write.
    /// The card still counts as blank and the script can simply be run again.
    /// `matches_script` tells whether everything written so far is this script's data.
    PartlyWritten {
        written: Vec<String>,
        matches_script: bool,
    },
    /// EF.IMSI and every evidence file hold this script's data: the write completed (at least
    /// up to the IMSI write, which comes after the keys).
    WrittenByThisScript,
    /// EF.IMSI holds an IMSI and some files differ from this script: another write happened.
    WrittenWithOtherData { differing: Vec<String> },
}

/// Classify a card from the answers to [`probe_script`] (one response per probe step).
pub fn classify_written_state(
    script: &Script,
    responses: &[Response],
) -> Result<WrittenState, ProfileError> {
    let probe = probe_script(script);
    check_statuses(&probe, responses)?;
    let mut written = Vec::new();
    let mut differing = Vec::new();
    let mut marker_written = false;
    let mut marker_ours = false;
    for (step, response) in probe.iter().zip(responses) {
        if step.kind != StepKind::ReadBack {
            continue;
        }
        let Some(original) = script.steps.iter().find(|s| s.index == step.index) else {
            continue;
        };
        let Some(expected) = original.expect_data.as_ref() else {
            continue;
        };
        if step.target.ends_with("EF.ICCID") {
            if &response.data != expected {
                let found = encoding::decode_iccid(&response.data)
                    .unwrap_or_else(|_| hex::encode(&response.data));
                return Err(ProfileError::WrongCard {
                    expected: script.iccid.clone(),
                    found,
                });
            }
            continue;
        }
        if !original.evidence {
            continue;
        }
        let untouched = response.data.iter().all(|&b| b == 0xFF);
        let ours = &response.data == expected;
        if !untouched {
            written.push(step.target.clone());
        }
        if !ours {
            differing.push(step.target.clone());
        }
        if step.index == script.marker_step {
            marker_written = !untouched;
            marker_ours = ours;
        }
    }
    Ok(match (marker_written, marker_ours) {
        (true, true) if differing.is_empty() => WrittenState::WrittenByThisScript,
        (true, _) => WrittenState::WrittenWithOtherData { differing },
        (false, _) if written.is_empty() => WrittenState::Untouched,
        (false, _) => {
            let matches_script = written.iter().all(|target| !differing.contains(target));
            WrittenState::PartlyWritten {
                written,
                matches_script,
            }
        }
    })
}

#[cfg(test)]
mod tests;
