//! The file systems the software SIM is made with: one table per card family ([`sja2`],
//! [`sjs1`]) with the sizes, structures, SFIs, access rules and shipped contents of the real card
//! as pySim's export of one shows them, and the factory state of a [`CardImage`] applied on top.
//!
//! A table lists files per DF ([`Spec`]) and links ([`Link`]: the same EF listed in another DF
//! with its own FCP). What the card model needs beyond files is the family's [`FamilyModel`]:
//! which key files each application authenticates with, and which files hold keys.
//! This module builds; it does not answer commands.

pub(crate) mod sja2;
pub(crate) mod sjs1;

use crate::card::auth::KeySource;
use crate::card::fs::{Ef, EntrySpec, FileSecurity, FileSystem, MF, Structure};
use crate::image::{CardImage, ImageError};
use simflow_card::encoding;

/// The size and structure of an EF.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Shape {
    /// Transparent, this many bytes.
    T(usize),
    /// Linear fixed: record length, record count.
    L(usize, usize),
    /// Cyclic: record length, record count.
    C(usize, usize),
}

/// How an EF's FCP states its access rules.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Sec {
    /// A record of the EF.ARR of its DF (6F06) or, in the MF, of 2F06.
    Rec(u8),
    /// Compact rules (tag 8C).
    Compact(&'static [u8]),
}

/// An EF's shipped content.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Content {
    /// All FF.
    Blank,
    /// All this byte.
    Fill(u8),
    /// These bytes (hex), then FF.
    Hex(&'static str),
    /// These bytes (hex) repeated to the end of the file.
    Repeat(&'static str),
    /// One hex string per record, each padded with FF; later records FF.
    Records(&'static [&'static str]),
}

/// One EF as a DF lists it, with its shipped content.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spec {
    pub(crate) label: &'static str,
    pub(crate) fid: u16,
    pub(crate) shape: Shape,
    pub(crate) sfi: Option<u8>,
    pub(crate) sec: Sec,
    pub(crate) content: Content,
}

/// A file whose content is blank (FF).
pub(crate) const fn ef(
    label: &'static str,
    fid: u16,
    shape: Shape,
    sfi: Option<u8>,
    sec: Sec,
) -> Spec {
    Spec {
        label,
        fid,
        shape,
        sfi,
        sec,
        content: Content::Blank,
    }
}

impl Spec {
    /// The same file shipped with `content`.
    pub(crate) const fn with(self, content: Content) -> Spec {
        Spec { content, ..self }
    }
}

/// An EF of another DF (by path name) listed in this DF too.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Link {
    pub(crate) label: &'static str,
    pub(crate) fid: u16,
    pub(crate) sfi: Option<u8>,
    pub(crate) sec: Sec,
    pub(crate) target: &'static str,
}

/// What the card model needs to know about its family beyond files.
#[derive(Debug, Clone)]
pub(crate) struct FamilyModel {
    /// The family name, as `simflow_card::profile` spells it.
    pub(crate) name: &'static str,
    /// Keys of AUTHENTICATE in 3G context in ADF.USIM.
    pub(crate) usim_3g: KeySource,
    /// Keys of AUTHENTICATE in GSM context in ADF.USIM and of RUN GSM ALGORITHM in DF.GSM.
    pub(crate) gsm: KeySource,
    /// Keys of AUTHENTICATE in ADF.ISIM, if the card has one.
    pub(crate) isim_3g: Option<KeySource>,
    /// The files whose first byte is the key configuration (cfg, or EF.OPc's flag), which real
    /// blanks ship set.
    pub(crate) key_config_files: &'static [&'static str],
}

/// Key files by path name and the content a finished card has in them.
pub(crate) type KeyContents = Vec<(&'static str, Vec<u8>)>;

/// One family's table and its factory facts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Table {
    /// The family name, as `simflow_card::profile` spells it.
    pub(crate) name: &'static str,
    /// Its files (no factory state yet).
    pub(crate) build: fn(&CardImage) -> Built,
    /// What its blanks ship with.
    pub(crate) defaults: fn() -> FactoryDefaults,
    /// The key files' contents for a finished card with these K and OPc.
    pub(crate) key_contents: fn(&[u8; 16], &[u8; 16]) -> KeyContents,
}

impl Table {
    pub(crate) const fn new(
        name: &'static str,
        build: fn(&CardImage) -> Built,
        defaults: fn() -> FactoryDefaults,
        key_contents: fn(&[u8; 16], &[u8; 16]) -> KeyContents,
    ) -> Table {
        Table {
            name,
            build,
            defaults,
            key_contents,
        }
    }
}

/// Every family the software SIM can be.
const TABLES: [Table; 2] = [sja2::TABLE, sjs1::TABLE];

/// A built card: its files and its family.
#[derive(Debug)]
pub(crate) struct Built {
    pub(crate) fs: FileSystem,
    pub(crate) family: FamilyModel,
}

fn hex_bytes(text: &str) -> Vec<u8> {
    // The tables are literals checked by the unit tests; a typo there is a programming error.
    hex::decode(text).unwrap_or_else(|_| panic!("bad hex in a card table: {text}"))
}

fn structure_and_size(shape: Shape) -> (Structure, usize) {
    match shape {
        Shape::T(size) => (Structure::Transparent, size),
        Shape::L(record_len, count) => (Structure::Linear { record_len }, record_len * count),
        Shape::C(record_len, count) => (Structure::Cyclic { record_len }, record_len * count),
    }
}

fn content_bytes(content: Content, structure: Structure, size: usize) -> Vec<u8> {
    let mut data = vec![0xFF; size];
    match content {
        Content::Blank => {}
        Content::Fill(byte) => data.fill(byte),
        Content::Hex(text) => {
            let bytes = hex_bytes(text);
            data[..bytes.len()].copy_from_slice(&bytes);
        }
        Content::Repeat(text) => {
            let pattern = hex_bytes(text);
            for (byte, value) in data.iter_mut().zip(pattern.iter().cycle()) {
                *byte = *value;
            }
        }
        Content::Records(records) => {
            let record_len = structure.record_len().unwrap_or(size);
            for (index, text) in records.iter().enumerate() {
                let bytes = hex_bytes(text);
                let start = index * record_len;
                data[start..start + bytes.len()].copy_from_slice(&bytes);
            }
        }
    }
    data
}

fn security(sec: Sec, arr_fid: u16) -> FileSecurity {
    match sec {
        Sec::Rec(record) => FileSecurity::Arr { arr_fid, record },
        Sec::Compact(bytes) => FileSecurity::Compact(bytes.to_vec()),
    }
}

/// The EF.ARR FID files of `df` reference: 2F06 in the MF, 6F06 elsewhere.
fn arr_fid_of(fs: &FileSystem, df: usize) -> u16 {
    if fs.dfs[df].parent.is_none() {
        0x2F06
    } else {
        0x6F06
    }
}

/// Add the files of `specs` to `df`.
pub(crate) fn add_files(fs: &mut FileSystem, df: usize, specs: &[Spec]) {
    let arr_fid = arr_fid_of(fs, df);
    for spec in specs {
        let (structure, size) = structure_and_size(spec.shape);
        let data = content_bytes(spec.content, structure, size);
        fs.add_ef(
            df,
            EntrySpec {
                label: spec.label,
                fid: spec.fid,
                sfi: spec.sfi,
                security: security(spec.sec, arr_fid),
            },
            Ef { structure, data },
        );
    }
}

/// Add a DF under the MF whose own rules are the MF EF.ARR's record 1, with `specs` in it.
pub(crate) fn add_classic_df(fs: &mut FileSystem, name: &str, fid: u16, specs: &[Spec]) -> usize {
    let security = FileSecurity::Arr {
        arr_fid: 0x2F06,
        record: 1,
    };
    let df = fs.add_df(Some(MF), name, fid, None, security);
    add_files(fs, df, specs);
    df
}

/// List the targets of `links` in `df` too; a link whose label is in `separate` becomes a
/// separate (blank) copy of its target instead.
pub(crate) fn add_links(fs: &mut FileSystem, df: usize, links: &[Link], separate: &[String]) {
    let arr_fid = arr_fid_of(fs, df);
    for link in links {
        let Some(target) = fs.ef_named(link.target) else {
            panic!("card table links to a missing file {}", link.target);
        };
        let entry = EntrySpec {
            label: link.label,
            fid: link.fid,
            sfi: link.sfi,
            security: security(link.sec, arr_fid),
        };
        if separate.iter().any(|label| label == link.label) {
            let structure = fs.efs[target].structure;
            let size = fs.efs[target].data.len();
            fs.add_ef(
                df,
                entry,
                Ef {
                    structure,
                    data: vec![0xFF; size],
                },
            );
        } else {
            fs.link(df, entry, target);
        }
    }
}

/// Parse PLMNs written as MCC and MNC digits ("00101", "310150").
pub(crate) fn plmns(
    field: &'static str,
    texts: &[String],
) -> Result<Vec<(String, String)>, ImageError> {
    texts
        .iter()
        .map(|text| {
            if !(5..=6).contains(&text.len()) {
                return Err(ImageError::BadPlmn(field));
            }
            let (mcc, mnc) = text.split_at(3);
            encoding::encode_plmn(mcc, mnc).map_err(|_| ImageError::BadPlmn(field))?;
            Ok((mcc.to_string(), mnc.to_string()))
        })
        .collect()
}

/// Overwrite a file's content from its start.
pub(crate) fn set_file(fs: &mut FileSystem, name: &str, bytes: &[u8]) -> Result<(), ImageError> {
    let ef = fs
        .ef_named(name)
        .ok_or(ImageError::NoSuchFile(name.to_string()))?;
    let data = &mut fs.efs[ef].data;
    if bytes.len() > data.len() {
        return Err(ImageError::NoSuchFile(name.to_string()));
    }
    data[..bytes.len()].copy_from_slice(bytes);
    Ok(())
}

/// Build the card an image describes: its family's table, then the factory state, then a
/// finished card's subscription when the image has one.
pub(crate) fn build(image: &CardImage) -> Result<Built, ImageError> {
    let name = image.family_name();
    let table = TABLES
        .iter()
        .find(|table| table.name == name)
        .ok_or_else(|| ImageError::UnknownFamily(name.to_string()))?;
    let mut built = (table.build)(image);
    let fs = &mut built.fs;
    set_file(fs, "MF/EF.ICCID", &image.checked_iccid()?)?;
    let defaults = (table.defaults)();
    let factory = &image.factory;
    if fs.ef_named("ADF.USIM/EF.EHPLMN").is_some() {
        let listed = plmns(
            "ehplmn",
            factory.ehplmn.as_ref().unwrap_or(&defaults.ehplmn),
        )?;
        set_plmn_list(fs, "ADF.USIM/EF.EHPLMN", &listed)?;
    }
    let listed = plmns("fplmn", factory.fplmn.as_ref().unwrap_or(&defaults.fplmn))?;
    set_plmn_list(fs, "ADF.USIM/EF.FPLMN", &listed)?;
    let key_config = factory.key_config.unwrap_or(defaults.key_config);
    for name in built.family.key_config_files {
        set_file(fs, name, &[key_config])?;
    }
    if let Some(imsi) = &image.imsi {
        set_file(fs, "ADF.USIM/EF.IMSI", &encoding::encode_imsi(imsi)?)?;
        set_file(fs, "ADF.USIM/EF.ACC", &encoding::encode_acc_for_imsi(imsi)?)?;
        set_file(fs, "ADF.USIM/EF.AD", &encoding::encode_ad(2)?)?;
    }
    if let (Some(ki), Some(opc)) = (image.key("ki")?, image.key("opc")?) {
        for (name, content) in (table.key_contents)(&ki, &opc) {
            set_file(fs, name, &content)?;
        }
    }
    Ok(built)
}

fn set_plmn_list(
    fs: &mut FileSystem,
    name: &str,
    listed: &[(String, String)],
) -> Result<(), ImageError> {
    let len = fs
        .ef_named(name)
        .map(|ef| fs.efs[ef].data.len())
        .ok_or(ImageError::NoSuchFile(name.to_string()))?;
    let pairs: Vec<(&str, &str)> = listed
        .iter()
        .map(|(mcc, mnc)| (mcc.as_str(), mnc.as_str()))
        .collect();
    let bytes = encoding::encode_plmn_list(&pairs, len).map_err(|_| ImageError::BadPlmn("list"))?;
    set_file(fs, name, &bytes)
}

/// What a family's blanks ship with when the image does not say.
#[derive(Debug, Clone)]
pub(crate) struct FactoryDefaults {
    pub(crate) ehplmn: Vec<String>,
    pub(crate) fplmn: Vec<String>,
    pub(crate) key_config: u8,
}
