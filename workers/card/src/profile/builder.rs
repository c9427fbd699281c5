//! The parts every family's write script shares: a step builder, the encoded subscription, and
//! the step groups that are the same on every UICC (the card check, ADM1, DF.TELECOM, the USIM's
//! subscriber files, the authentication).
//!
//! A family composes these with its own parts (where its keys live, which DF.GSM files are
//! separate copies, whether it has an ISIM). Nothing here knows a family's name or file layout
//! beyond what [`UsimLayout`] states.

use super::{
    Challenge, EhplmnPolicy, FamilyOptions, Personalisation, ProfileError, Script, Step, StepKind,
};
use crate::apdu::{BinaryTarget, Command, sw};
use crate::encoding;

/// Layout facts of the USIM side that differ between card families.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsimLayout {
    /// The full USIM AID as listed in EF.DIR.
    pub usim_aid: Vec<u8>,
    pub msisdn_record_len: usize,
    pub smsp_record_len: usize,
    /// EF.SPN display condition byte.
    pub spn_display_condition: u8,
    /// Access technology bits of the HPLMNwAcT entry (FFFF: all, as pySim writes it).
    pub hplmn_access_technologies: u16,
    /// Size of EF.HPLMNwAcT (and the other PLMN-with-AcT files).
    pub plmn_with_act_len: usize,
    /// Size of EF.FPLMN.
    pub fplmn_len: usize,
    /// Size of EF.EHPLMN; `None` when the card has no such file.
    pub ehplmn_len: Option<usize>,
}

impl UsimLayout {
    /// The layout sysmocom's cards share: 34-byte EF.MSISDN and 52-byte EF.SMSP records, SPN shown
    /// in the home network, the home PLMN with every access technology, 60-byte PLMN-with-AcT
    /// files and a four-entry EF.FPLMN; `ehplmn_len` when the card has EF.EHPLMN.
    pub fn sysmocom(usim_aid: &[u8], ehplmn_len: Option<usize>) -> Self {
        UsimLayout {
            usim_aid: usim_aid.to_vec(),
            msisdn_record_len: 34,
            smsp_record_len: 52,
            spn_display_condition: 0x01,
            hplmn_access_technologies: 0xFFFF,
            plmn_with_act_len: 60,
            fplmn_len: 12,
            ehplmn_len,
        }
    }
}

/// Whether a read-back tells whose subscription the card holds (see
/// [`super::classify_written_state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Evidence {
    /// The file holds data of this subscription only (IMSI, MSISDN, IMS identities): any other
    /// content there means another write happened.
    Unique,
    /// Operator-wide or vendor-preset content (SPN, EF.AD, PLMN lists, keys): a difference
    /// proves nothing about who wrote the card.
    Shared,
}

/// Collects steps with consecutive indices.
#[derive(Debug, Default)]
pub(super) struct ScriptBuilder {
    steps: Vec<Step>,
}

/// What a step carries besides its APDU.
struct StepSpec<'a> {
    kind: StepKind,
    target: &'a str,
    expect_data: Option<Vec<u8>>,
    secret: bool,
    evidence: Evidence,
}

impl ScriptBuilder {
    fn push(&mut self, spec: StepSpec<'_>, command: Command) -> u16 {
        let index = self.steps.len() as u16;
        self.steps.push(Step {
            index,
            kind: spec.kind,
            target: spec.target.to_string(),
            apdu: command.to_bytes(),
            expect_sw: sw::OK,
            expect_data: spec.expect_data,
            secret: spec.secret,
            evidence: spec.evidence == Evidence::Unique,
        });
        index
    }

    fn plain(kind: StepKind, target: &str) -> StepSpec<'_> {
        StepSpec {
            kind,
            target,
            expect_data: None,
            secret: false,
            evidence: Evidence::Shared,
        }
    }

    /// SELECT by FID, without response data.
    pub(super) fn select(&mut self, target: &str, fid: u16) {
        self.push(
            Self::plain(StepKind::Select, target),
            Command::select_by_fid_quiet(fid),
        );
    }

    /// SELECT an application by its AID, without response data.
    pub(super) fn select_application(&mut self, target: &str, aid: &[u8]) {
        self.push(
            Self::plain(StepKind::Select, target),
            Command::select_by_aid_quiet(aid),
        );
    }

    /// VERIFY ADM1 (secret).
    pub(super) fn verify_adm1(&mut self, p: &Personalisation) {
        self.push(
            StepSpec {
                secret: true,
                ..Self::plain(StepKind::Verify, "ADM1")
            },
            Command::verify_adm1(p.adm1.bytes()),
        );
    }

    /// An update; `secret` for key material.
    pub(super) fn update(&mut self, target: &str, command: Command, secret: bool) -> u16 {
        self.push(
            StepSpec {
                secret,
                ..Self::plain(StepKind::Update, target)
            },
            command,
        )
    }

    /// A read whose answer must equal `expected`.
    pub(super) fn read_back(
        &mut self,
        target: &str,
        command: Command,
        expected: &[u8],
        evidence: Evidence,
    ) -> u16 {
        self.push(
            StepSpec {
                expect_data: Some(expected.to_vec()),
                evidence,
                ..Self::plain(StepKind::ReadBack, target)
            },
            command,
        )
    }

    /// UPDATE BINARY of the whole current EF with `data`, then READ BINARY of it back.
    pub(super) fn write_current_file(&mut self, target: &str, data: &[u8], evidence: Evidence) {
        self.update(
            target,
            Command::update_binary(BinaryTarget::Current, 0, data),
            false,
        );
        self.read_back(
            target,
            Command::read_binary(BinaryTarget::Current, 0, data.len() as u8),
            data,
            evidence,
        );
    }

    /// UPDATE RECORD (absolute) of record 1 of the current EF or the EF with `sfi`, then READ
    /// RECORD of it back.
    pub(super) fn write_first_record(
        &mut self,
        target: &str,
        sfi: Option<u8>,
        data: &[u8],
        evidence: Evidence,
    ) {
        self.update(target, Command::update_record(sfi, 1, data), false);
        self.read_back(
            target,
            Command::read_record(sfi, 1, data.len() as u8),
            data,
            evidence,
        );
    }

    /// SELECT a key file, UPDATE it with `content` (secret), and when `read_back`, READ it back
    /// (secret; ADM1 allows reading key files): the proof for keys no authentication uses.
    pub(super) fn write_key_file(
        &mut self,
        target: &str,
        fid: u16,
        content: &[u8],
        read_back: bool,
    ) {
        self.select(target, fid);
        self.update(
            target,
            Command::update_binary(BinaryTarget::Current, 0, content),
            true,
        );
        if read_back {
            self.push(
                StepSpec {
                    expect_data: Some(content.to_vec()),
                    secret: true,
                    ..Self::plain(StepKind::ReadBack, target)
                },
                Command::read_binary(BinaryTarget::Current, 0, content.len() as u8),
            );
        }
    }

    /// AUTHENTICATE in 3G context in the selected application: the card's answer goes to the
    /// centre, which checks it against the keys ([`super::check_auth_answer`]).
    pub(super) fn authenticate(&mut self, target: &str, challenge: &Challenge) {
        self.push(
            Self::plain(StepKind::Authenticate, target),
            Command::authenticate_3g(&challenge.rand, &challenge.autn),
        );
    }

    /// The finished script.
    pub(super) fn finish(
        self,
        family: &str,
        p: &Personalisation,
        commit_step: u16,
        marker_step: u16,
    ) -> Script {
        Script {
            family: family.to_string(),
            iccid: p.iccid.clone(),
            steps: self.steps,
            commit_step,
            marker_step,
        }
    }
}

/// The personalisation encoded for the USIM side of a card.
#[derive(Debug)]
pub(super) struct Encoded {
    pub(super) iccid: [u8; 10],
    pub(super) imsi: [u8; encoding::IMSI_FILE_LEN],
    pub(super) acc: [u8; 2],
    pub(super) msisdn: Vec<u8>,
    pub(super) smsp: Option<Vec<u8>>,
    pub(super) spn: Option<[u8; encoding::SPN_FILE_LEN]>,
    pub(super) ad: [u8; 4],
    /// The whole EF.HPLMNwAcT: the home PLMN first, the other entries unused.
    pub(super) hplmn_with_act: Option<Vec<u8>>,
    /// The whole EF.FPLMN, cleared.
    pub(super) fplmn: Vec<u8>,
    /// The whole EF.EHPLMN (per [`EhplmnPolicy`]), when the card has the file.
    pub(super) ehplmn: Option<Vec<u8>>,
    /// Digits of the MNC (from the home PLMN; 2 when none is given).
    pub(super) mnc_len: usize,
}

impl Encoded {
    pub(super) fn new(
        p: &Personalisation,
        layout: &UsimLayout,
        options: &FamilyOptions,
    ) -> Result<Self, ProfileError> {
        encoding::validate_iccid(&p.iccid)?;
        if let Some((mcc, mnc)) = &p.mcc_mnc
            && !p.imsi.starts_with(&format!("{mcc}{mnc}"))
        {
            return Err(ProfileError::ImsiOutsideHomePlmn {
                mcc: mcc.clone(),
                mnc: mnc.clone(),
            });
        }
        let home = p
            .mcc_mnc
            .as_ref()
            .map(|(mcc, mnc)| (mcc.as_str(), mnc.as_str()));
        let hplmn_with_act = home
            .map(|(mcc, mnc)| {
                let entry =
                    encoding::encode_plmn_with_act(mcc, mnc, layout.hplmn_access_technologies)?;
                encoding::encode_plmn_with_act_list(&[entry], layout.plmn_with_act_len)
            })
            .transpose()?;
        let ehplmn = layout
            .ehplmn_len
            .map(|len| {
                let listed: Vec<(&str, &str)> = match options.ehplmn {
                    EhplmnPolicy::Home => home.into_iter().collect(),
                    EhplmnPolicy::Clear => Vec::new(),
                };
                encoding::encode_plmn_list(&listed, len)
            })
            .transpose()?;
        let mnc_len = home.map_or(2, |(_, mnc)| mnc.len());
        Ok(Encoded {
            iccid: encoding::encode_iccid(&p.iccid)?,
            imsi: encoding::encode_imsi(&p.imsi)?,
            acc: encoding::encode_acc_for_imsi(&p.imsi)?,
            msisdn: encoding::encode_msisdn_record("", &p.msisdn, layout.msisdn_record_len)?,
            smsp: p
                .smsp
                .as_deref()
                .map(|sc| encoding::encode_smsp_record(sc, layout.smsp_record_len))
                .transpose()?,
            spn: p
                .spn
                .as_deref()
                .map(|name| encoding::encode_spn(name, layout.spn_display_condition))
                .transpose()?,
            ad: encoding::encode_ad(mnc_len)?,
            hplmn_with_act,
            fplmn: encoding::encode_plmn_list(&[], layout.fplmn_len)?,
            ehplmn,
            mnc_len,
        })
    }
}

/// How a family reads EF.ICCID to check the card before anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IccidRead {
    /// READ BINARY by SFI 02 (one APDU).
    BySfi,
    /// SELECT 2FE2, then READ BINARY (for cards whose EF.ICCID has no SFI).
    BySelect,
}

/// Select the MF and read EF.ICCID (the card must be the script's card before any ADM try),
/// then VERIFY ADM1.
pub(super) fn check_card_and_verify_adm1(
    b: &mut ScriptBuilder,
    p: &Personalisation,
    enc: &Encoded,
    how: IccidRead,
) {
    b.select("MF", 0x3F00);
    let read = match how {
        IccidRead::BySfi => Command::read_binary(BinaryTarget::Sfi(0x02), 0, 10),
        IccidRead::BySelect => {
            b.select("MF/EF.ICCID", 0x2FE2);
            Command::read_binary(BinaryTarget::Current, 0, 10)
        }
    };
    b.read_back("MF/EF.ICCID", read, &enc.iccid, Evidence::Unique);
    b.verify_adm1(p);
}

/// DF.TELECOM (a child of the MF, and a sibling of every other DF under it): EF.MSISDN and
/// EF.SMSP record 1.
pub(super) fn write_telecom(b: &mut ScriptBuilder, enc: &Encoded) {
    b.select("DF.TELECOM", 0x7F10);
    b.select("DF.TELECOM/EF.MSISDN", 0x6F40);
    b.write_first_record("DF.TELECOM/EF.MSISDN", None, &enc.msisdn, Evidence::Unique);
    if let Some(smsp) = &enc.smsp {
        b.select("DF.TELECOM/EF.SMSP", 0x6F42);
        b.write_first_record("DF.TELECOM/EF.SMSP", None, smsp, Evidence::Shared);
    }
}

/// The USIM's subscriber files, in the already selected ADF.USIM: EF.SPN by SELECT, then by SFI
/// EF.AD, EF.ACC, EF.HPLMNwAcT, EF.FPLMN (cleared), EF.EHPLMN and, last of all writes, EF.IMSI;
/// then every SFI file read back. Returns the indices of the EF.IMSI update and read-back.
pub(super) fn write_usim_files(b: &mut ScriptBuilder, enc: &Encoded) -> (u16, u16) {
    if let Some(spn) = &enc.spn {
        b.select("ADF.USIM/EF.SPN", 0x6F46);
        b.write_current_file("ADF.USIM/EF.SPN", spn, Evidence::Shared);
    }
    let mut sfi_files: Vec<(&str, u8, &[u8], Evidence)> = vec![
        ("ADF.USIM/EF.AD", 0x03, &enc.ad, Evidence::Shared),
        ("ADF.USIM/EF.ACC", 0x06, &enc.acc, Evidence::Shared),
    ];
    if let Some(hplmn) = &enc.hplmn_with_act {
        sfi_files.push(("ADF.USIM/EF.HPLMNwAcT", 0x13, hplmn, Evidence::Shared));
    }
    sfi_files.push(("ADF.USIM/EF.FPLMN", 0x0D, &enc.fplmn, Evidence::Shared));
    if let Some(ehplmn) = &enc.ehplmn {
        sfi_files.push(("ADF.USIM/EF.EHPLMN", 0x1D, ehplmn, Evidence::Shared));
    }
    sfi_files.push(("ADF.USIM/EF.IMSI", 0x07, &enc.imsi, Evidence::Unique));
    let mut commit_step = 0;
    for (target, sfi, data, _) in &sfi_files {
        commit_step = b.update(
            target,
            Command::update_binary(BinaryTarget::Sfi(*sfi), 0, data),
            false,
        );
    }
    let mut marker_step = 0;
    for (target, sfi, data, evidence) in &sfi_files {
        marker_step = b.read_back(
            target,
            Command::read_binary(BinaryTarget::Sfi(*sfi), 0, data.len() as u8),
            data,
            *evidence,
        );
    }
    (commit_step, marker_step)
}
