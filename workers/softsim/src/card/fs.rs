//! The card's file system: DFs and ADFs, EFs, and links that put one EF into several DFs.
//!
//! A DF lists its entries (FID, SFI and security attributes as that DF presents the file) and an
//! entry points at an EF, so the same content can appear under DF.GSM and ADF.USIM with different
//! FCPs, as real cards show them. Selection follows TS 102 221 §8.4.1 (FID: the MF, the current
//! application 7FFF, the current DF, its children, its parent and the parent's children; paths
//! from the MF or the current DF; AIDs by a unique prefix).
//! Access rules are resolved here (an entry's EF.ARR record, searched in its DF and then up the
//! tree, or its compact rules) but judged by [`super::security`]. No command handling here.

use simflow_card::arr::AccessRules;
use simflow_card::fcp::{Fcp, FileType};

/// Index of the MF.
pub(crate) const MF: usize = 0;

/// The structure of an EF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Structure {
    Transparent,
    Linear { record_len: usize },
    Cyclic { record_len: usize },
}

impl Structure {
    pub(crate) fn record_len(self) -> Option<usize> {
        match self {
            Structure::Transparent => None,
            Structure::Linear { record_len } | Structure::Cyclic { record_len } => Some(record_len),
        }
    }
}

/// How a DF presents an EF's security attributes in the FCP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FileSecurity {
    /// Tag 8B: a record of the EF.ARR with this FID.
    Arr { arr_fid: u16, record: u8 },
    /// Tag 8C: compact rules.
    Compact(Vec<u8>),
}

/// An elementary file's content.
#[derive(Debug, Clone)]
pub(crate) struct Ef {
    pub(crate) structure: Structure,
    pub(crate) data: Vec<u8>,
}

/// An EF as one DF lists it.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Path name, e.g. `ADF.USIM/EF.IMSI`.
    pub(crate) name: String,
    pub(crate) fid: u16,
    pub(crate) sfi: Option<u8>,
    pub(crate) ef: usize,
    pub(crate) security: FileSecurity,
}

/// A DF, ADF or the MF.
#[derive(Debug, Clone)]
pub(crate) struct Df {
    pub(crate) name: String,
    pub(crate) fid: u16,
    pub(crate) aid: Option<Vec<u8>>,
    pub(crate) parent: Option<usize>,
    pub(crate) children: Vec<usize>,
    pub(crate) entries: Vec<Entry>,
    pub(crate) security: FileSecurity,
}

/// What a selection lands on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Selected {
    Df(usize),
    /// An EF: (DF, entry index in that DF).
    Ef(usize, usize),
}

/// The whole tree.
#[derive(Debug, Clone, Default)]
pub(crate) struct FileSystem {
    pub(crate) dfs: Vec<Df>,
    pub(crate) efs: Vec<Ef>,
}

impl FileSystem {
    /// Add a DF (the first one added is the MF).
    pub(crate) fn add_df(
        &mut self,
        parent: Option<usize>,
        name: &str,
        fid: u16,
        aid: Option<Vec<u8>>,
        security: FileSecurity,
    ) -> usize {
        let index = self.dfs.len();
        self.dfs.push(Df {
            name: name.to_string(),
            fid,
            aid,
            parent,
            children: Vec::new(),
            entries: Vec::new(),
            security,
        });
        if let Some(parent) = parent {
            self.dfs[parent].children.push(index);
        }
        index
    }

    /// Add a new EF to `df`; returns the EF's index.
    pub(crate) fn add_ef(&mut self, df: usize, entry: EntrySpec<'_>, ef: Ef) -> usize {
        let index = self.efs.len();
        self.efs.push(ef);
        self.link(df, entry, index);
        index
    }

    /// List an existing EF in `df` as well (a link: one content, several FCPs).
    pub(crate) fn link(&mut self, df: usize, entry: EntrySpec<'_>, ef: usize) {
        let name = format!("{}/{}", self.dfs[df].name, entry.label);
        self.dfs[df].entries.push(Entry {
            name,
            fid: entry.fid,
            sfi: entry.sfi,
            ef,
            security: entry.security,
        });
    }

    /// The DF with this path name.
    pub(crate) fn df_named(&self, name: &str) -> Option<usize> {
        self.dfs.iter().position(|df| df.name == name)
    }

    /// The EF behind the entry with this path name.
    pub(crate) fn ef_named(&self, name: &str) -> Option<usize> {
        self.dfs
            .iter()
            .flat_map(|df| df.entries.iter())
            .find(|entry| entry.name == name)
            .map(|entry| entry.ef)
    }

    /// The entry of `df` with this FID.
    fn entry_by_fid(&self, df: usize, fid: u16) -> Option<usize> {
        self.dfs[df]
            .entries
            .iter()
            .position(|entry| entry.fid == fid)
    }

    /// The entry of `df` with this SFI.
    pub(crate) fn entry_by_sfi(&self, df: usize, sfi: u8) -> Option<usize> {
        self.dfs[df]
            .entries
            .iter()
            .position(|entry| entry.sfi == Some(sfi))
    }

    /// Select by FID from `current` (TS 102 221 §8.4.1); `app` is the current application.
    pub(crate) fn select_fid(
        &self,
        current: usize,
        app: Option<usize>,
        fid: u16,
    ) -> Option<Selected> {
        if fid == 0x3F00 {
            return Some(Selected::Df(MF));
        }
        if fid == 0x7FFF {
            return app.map(Selected::Df);
        }
        if self.dfs[current].fid == fid {
            return Some(Selected::Df(current));
        }
        if let Some(entry) = self.entry_by_fid(current, fid) {
            return Some(Selected::Ef(current, entry));
        }
        let mut candidates = self.dfs[current].children.clone();
        if let Some(parent) = self.dfs[current].parent {
            candidates.push(parent);
            candidates.extend(self.dfs[parent].children.iter().copied());
        }
        candidates
            .into_iter()
            .find(|&df| self.dfs[df].fid == fid)
            .map(Selected::Df)
    }

    /// Select along a path of FIDs starting at `start` (the MF for P1 = 08, the current DF for
    /// P1 = 09): every FID but the last names a child DF (7FFF: the current application).
    pub(crate) fn select_path(
        &self,
        start: usize,
        app: Option<usize>,
        path: &[u16],
    ) -> Option<Selected> {
        let (last, walk) = path.split_last()?;
        let mut df = start;
        for &fid in walk {
            df = if fid == 0x7FFF {
                app?
            } else {
                *self.dfs[df]
                    .children
                    .iter()
                    .find(|&&child| self.dfs[child].fid == fid)?
            };
        }
        if *last == 0x7FFF {
            return app.map(Selected::Df);
        }
        if let Some(entry) = self.entry_by_fid(df, *last) {
            return Some(Selected::Ef(df, entry));
        }
        self.dfs[df]
            .children
            .iter()
            .copied()
            .find(|&child| self.dfs[child].fid == *last)
            .map(Selected::Df)
    }

    /// The ADF whose AID starts with `prefix` (at least the 5-byte RID).
    pub(crate) fn select_aid(&self, prefix: &[u8]) -> Option<usize> {
        if prefix.len() < 5 {
            return None;
        }
        self.dfs
            .iter()
            .position(|df| df.aid.as_ref().is_some_and(|aid| aid.starts_with(prefix)))
    }

    /// The access rules of entry `entry` of `df`, from its EF.ARR record or compact rules.
    /// Anything missing or malformed allows nothing (a card fails closed).
    pub(crate) fn rules(&self, df: usize, entry: usize) -> AccessRules {
        match &self.dfs[df].entries[entry].security {
            FileSecurity::Compact(bytes) => {
                AccessRules::parse_compact(bytes).unwrap_or_else(|_| AccessRules::never())
            }
            FileSecurity::Arr { arr_fid, record } => self
                .arr_record(df, *arr_fid, *record)
                .and_then(|bytes| AccessRules::parse_expanded(bytes).ok())
                .unwrap_or_else(AccessRules::never),
        }
    }

    /// Record `record` of the EF.ARR `arr_fid` in `df` or, failing that, up the tree.
    fn arr_record(&self, df: usize, arr_fid: u16, record: u8) -> Option<&[u8]> {
        let mut at = Some(df);
        while let Some(df) = at {
            if let Some(entry) = self.entry_by_fid(df, arr_fid) {
                let ef = &self.efs[self.dfs[df].entries[entry].ef];
                let len = ef.structure.record_len()?;
                let start = (usize::from(record).checked_sub(1)?) * len;
                return ef.data.get(start..start + len);
            }
            at = self.dfs[df].parent;
        }
        None
    }

    fn security_into(security: &FileSecurity, fcp: &mut Fcp) {
        match security {
            FileSecurity::Arr { arr_fid, record } => {
                let [hi, lo] = arr_fid.to_be_bytes();
                fcp.arr_reference = Some(vec![hi, lo, *record]);
            }
            FileSecurity::Compact(bytes) => fcp.compact_security = Some(bytes.clone()),
        }
    }

    /// The FCP template of entry `entry` of `df`.
    pub(crate) fn ef_fcp(&self, df: usize, entry: usize) -> Vec<u8> {
        let listed = &self.dfs[df].entries[entry];
        let file = &self.efs[listed.ef];
        let mut fcp = match file.structure {
            Structure::Transparent => Fcp::new(FileType::Transparent, listed.fid),
            Structure::Linear { record_len } | Structure::Cyclic { record_len } => {
                let kind = if matches!(file.structure, Structure::Cyclic { .. }) {
                    FileType::Cyclic
                } else {
                    FileType::LinearFixed
                };
                let mut fcp = Fcp::new(kind, listed.fid);
                fcp.record_len = Some(record_len as u16);
                fcp.record_count = Some((file.data.len() / record_len) as u8);
                fcp
            }
        };
        fcp.size = Some(file.data.len() as u32);
        fcp.sfi = listed.sfi;
        Self::security_into(&listed.security, &mut fcp);
        fcp.build()
    }

    /// The FCP template of a DF, with the card's PIN status template.
    pub(crate) fn df_fcp(&self, df: usize, pin_status: Vec<u8>) -> Vec<u8> {
        let dir = &self.dfs[df];
        let mut fcp = Fcp::new(FileType::Df, dir.fid);
        fcp.aid = dir.aid.clone();
        fcp.total_size = Some(0x2000);
        fcp.pin_status = Some(pin_status);
        Self::security_into(&dir.security, &mut fcp);
        fcp.build()
    }
}

/// How an EF is listed in a DF.
#[derive(Debug, Clone)]
pub(crate) struct EntrySpec<'a> {
    /// The EF's label within the DF, e.g. `EF.IMSI`.
    pub(crate) label: &'a str,
    pub(crate) fid: u16,
    pub(crate) sfi: Option<u8>,
    pub(crate) security: FileSecurity,
}
