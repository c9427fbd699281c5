//! Access rules of UICC files (ETSI TS 102 221 §9.2, ISO/IEC 7816-4): who may read or update.
//!
//! A file's FCP either references a record of an EF.ARR (tag 8B, the *expanded* format stored in
//! that record) or carries its rules inline (tag 8C, the *compact* format).
//! [`AccessRules::parse_expanded`] and [`AccessRules::parse_compact`] turn both into one shape:
//! for each operation a [`Condition`] naming the key references that satisfy it.
//! This module does not know any card's security state: the software SIM evaluates conditions
//! against its own PINs, and the host never needs to.
//!
//! Only what UICC file systems use is understood: access mode DOs by operation bits (80) and by
//! instruction (84, parsed and skipped), security condition DOs always (90), never (97), user
//! verification (A4 with a key reference), and OR / AND templates (A0 / AF) of those.

/// Key references of TS 102 221 §9.5.1 used by the cards we write.
pub mod key {
    /// PIN1, the universal PIN of the card holder.
    pub const PIN1: u8 = 0x01;
    /// PIN2, the second application PIN (local to an application on a UICC).
    pub const PIN2: u8 = 0x81;
    /// ADM1, the administrative key the card issuer holds.
    pub const ADM1: u8 = 0x0A;
    /// ADM2, a second administrative key.
    pub const ADM2: u8 = 0x0B;
}

/// What satisfies one access mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// No condition: always allowed.
    Always,
    /// Never allowed (also: an operation the rules do not mention).
    Never,
    /// Any one of these key references verified (one key is the common case).
    AnyOf(Vec<u8>),
    /// Every one of these key references verified.
    AllOf(Vec<u8>),
}

impl Condition {
    /// Whether the condition holds when `verified(key)` says which keys are verified
    /// (a disabled PIN counts as verified: the card does not ask for it).
    pub fn is_met(&self, verified: impl Fn(u8) -> bool) -> bool {
        match self {
            Condition::Always => true,
            Condition::Never => false,
            Condition::AnyOf(keys) => keys.iter().any(|&key| verified(key)),
            Condition::AllOf(keys) => keys.iter().all(|&key| verified(key)),
        }
    }

    /// The condition of a single key reference.
    pub fn key(reference: u8) -> Self {
        Condition::AnyOf(vec![reference])
    }
}

/// The conditions of the operations a card writer and a handset use on an EF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRules {
    /// READ BINARY / READ RECORD / SEARCH RECORD (access mode bit 1).
    pub read: Condition,
    /// UPDATE BINARY / UPDATE RECORD (bit 2).
    pub update: Condition,
    /// DEACTIVATE FILE (bit 4).
    pub deactivate: Condition,
    /// ACTIVATE FILE (bit 5).
    pub activate: Condition,
}

/// Why bytes are not access rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArrError {
    /// A TLV length runs past the end of the data.
    #[error("access rule TLV is truncated")]
    Truncated,
    /// A security condition DO we do not know (so we cannot say what it allows).
    #[error("unknown security condition tag {0:#04x}")]
    UnknownCondition(u8),
    /// A security condition came before any access mode.
    #[error("security condition without an access mode")]
    ConditionWithoutMode,
    /// A user verification template without a key reference.
    #[error("user verification template without a key reference")]
    NoKeyReference,
    /// An empty compact security attribute.
    #[error("compact security attribute is empty")]
    EmptyCompact,
}

/// Access mode bits of an EF (TS 102 221 §9.2.2 / ISO 7816-4 table 17).
const AM_READ: u8 = 0x01;
const AM_UPDATE: u8 = 0x02;
const AM_DEACTIVATE: u8 = 0x08;
const AM_ACTIVATE: u8 = 0x10;

/// Split simple BER-TLVs with one-byte tags and one-byte lengths, stopping at FF padding.
fn tlvs(mut bytes: &[u8]) -> Result<Vec<(u8, &[u8])>, ArrError> {
    let mut out = Vec::new();
    while let Some((&tag, rest)) = bytes.split_first() {
        if tag == 0xFF || tag == 0x00 {
            break;
        }
        let (&len, rest) = rest.split_first().ok_or(ArrError::Truncated)?;
        let len = usize::from(len);
        if rest.len() < len {
            return Err(ArrError::Truncated);
        }
        out.push((tag, &rest[..len]));
        bytes = &rest[len..];
    }
    Ok(out)
}

/// The key references a user verification template (A4) names.
fn verification_key(template: &[u8]) -> Result<u8, ArrError> {
    tlvs(template)?
        .into_iter()
        .find_map(|(tag, value)| (tag == 0x83).then(|| value.first().copied()).flatten())
        .ok_or(ArrError::NoKeyReference)
}

/// One security condition DO (90, 97, A4, A0, AF) as a [`Condition`].
fn condition(tag: u8, value: &[u8]) -> Result<Condition, ArrError> {
    match tag {
        0x90 => Ok(Condition::Always),
        0x97 => Ok(Condition::Never),
        0xA4 => Ok(Condition::key(verification_key(value)?)),
        0xA0 | 0xAF => {
            let mut keys = Vec::new();
            for (inner_tag, inner) in tlvs(value)? {
                match condition(inner_tag, inner)? {
                    Condition::Always if tag == 0xA0 => return Ok(Condition::Always),
                    Condition::Always => {}
                    Condition::Never if tag == 0xAF => return Ok(Condition::Never),
                    Condition::Never => {}
                    Condition::AnyOf(more) | Condition::AllOf(more) => keys.extend(more),
                }
            }
            Ok(if tag == 0xA0 {
                Condition::AnyOf(keys)
            } else {
                Condition::AllOf(keys)
            })
        }
        other => Err(ArrError::UnknownCondition(other)),
    }
}

/// Several condition DOs after one access mode: any one of them suffices (ISO 7816-4).
fn merge_alternatives(current: Option<Condition>, next: Condition) -> Condition {
    match (current, next) {
        (None, next) => next,
        (Some(Condition::Always), _) | (_, Condition::Always) => Condition::Always,
        (Some(Condition::Never), next) => next,
        (Some(current), Condition::Never) => current,
        (Some(Condition::AnyOf(mut keys)), Condition::AnyOf(more)) => {
            keys.extend(more);
            Condition::AnyOf(keys)
        }
        // An AND next to an alternative: keep the stricter reading rather than guess.
        (Some(current), _) => current,
    }
}

impl AccessRules {
    /// Rules that allow nothing.
    pub fn never() -> Self {
        AccessRules {
            read: Condition::Never,
            update: Condition::Never,
            deactivate: Condition::Never,
            activate: Condition::Never,
        }
    }

    fn apply(&mut self, modes: u8, condition: &Condition) {
        let slots: [(u8, &mut Condition); 4] = [
            (AM_READ, &mut self.read),
            (AM_UPDATE, &mut self.update),
            (AM_DEACTIVATE, &mut self.deactivate),
            (AM_ACTIVATE, &mut self.activate),
        ];
        for (bit, slot) in slots {
            if modes & bit != 0 {
                *slot = condition.clone();
            }
        }
    }

    /// Parse one EF.ARR record (expanded format): access mode DOs, each followed by the security
    /// condition DOs that satisfy it. FF padding ends the record.
    pub fn parse_expanded(record: &[u8]) -> Result<Self, ArrError> {
        let mut rules = AccessRules::never();
        // (access mode bits, alternatives seen so far); instruction-coded modes (84) get 0 bits.
        let mut pending: Option<(u8, Option<Condition>)> = None;
        let flush = |rules: &mut AccessRules, pending: Option<(u8, Option<Condition>)>| {
            if let Some((modes, Some(condition))) = pending {
                rules.apply(modes, &condition);
            }
        };
        for (tag, value) in tlvs(record)? {
            match tag {
                0x80 => {
                    flush(&mut rules, pending.take());
                    pending = Some((value.first().copied().unwrap_or(0), None));
                }
                0x84 => {
                    flush(&mut rules, pending.take());
                    pending = Some((0, None));
                }
                _ => {
                    let parsed = condition(tag, value)?;
                    let (_, alternatives) =
                        pending.as_mut().ok_or(ArrError::ConditionWithoutMode)?;
                    *alternatives = Some(merge_alternatives(alternatives.take(), parsed));
                }
            }
        }
        flush(&mut rules, pending);
        Ok(rules)
    }

    /// Parse a compact security attribute (FCP tag 8C): an access mode byte, then one security
    /// condition byte per mode bit set, from bit 7 down to bit 1. A condition byte 00 is always,
    /// FF never; otherwise bit 5 set means user verification with the key reference in bits 4-1
    /// (sysmocom cards write 1A for ADM1). Operations the mode byte leaves out are never allowed.
    pub fn parse_compact(bytes: &[u8]) -> Result<Self, ArrError> {
        let (&modes, conditions) = bytes.split_first().ok_or(ArrError::EmptyCompact)?;
        let mut rules = AccessRules::never();
        let mut conditions = conditions.iter();
        for bit in (0..7).rev().map(|shift| 1u8 << shift) {
            if modes & bit == 0 {
                continue;
            }
            let byte = *conditions.next().ok_or(ArrError::Truncated)?;
            let condition = match byte {
                0x00 => Condition::Always,
                0xFF => Condition::Never,
                byte if byte & 0x10 != 0 => Condition::key(byte & 0x0F),
                _ => Condition::Never,
            };
            rules.apply(bit, &condition);
        }
        Ok(rules)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Test vectors: a panic is the failure report.
mod tests {
    use super::*;

    fn expanded(text: &str) -> AccessRules {
        AccessRules::parse_expanded(&hex::decode(text).unwrap()).unwrap()
    }

    // Records of a real sysmoISIM-SJA2's EF.ARR files, as pySim's card export shows them.

    #[test]
    fn the_iccid_rule_of_the_sja2_mf_reads_always_and_never_updates() {
        let rules =
            expanded("80010190008001029700800118a40683010a9501088401d4a40683010a950108ffffffff");
        assert_eq!(rules.read, Condition::Always);
        assert_eq!(rules.update, Condition::Never);
        assert_eq!(rules.activate, Condition::key(key::ADM1));
        assert_eq!(rules.deactivate, Condition::key(key::ADM1));
    }

    #[test]
    fn the_usim_imsi_rule_reads_with_pin1_and_updates_with_adm1() {
        let rules =
            expanded("800101a40683010195010880011aa40683010a9501088401d4a40683010a950108ff");
        assert_eq!(rules.read, Condition::key(key::PIN1));
        assert_eq!(rules.update, Condition::key(key::ADM1));
        assert!(rules.update.is_met(|key| key == key::ADM1));
        assert!(!rules.update.is_met(|key| key == key::PIN1));
    }

    #[test]
    fn a_record_with_several_modes_keeps_each_modes_own_condition() {
        // ADF.USIM EF.ARR record 5: INCREASE (by INS) with PIN1, read PIN1, update PIN2.
        let rules = expanded(
            "840132a406830101950108800101a406830101950108800102a406830181950108\
             800118a40683010a95010880012097008401d4a40683010a950108",
        );
        assert_eq!(rules.read, Condition::key(key::PIN1));
        assert_eq!(rules.update, Condition::key(key::PIN2));
        assert_eq!(rules.activate, Condition::key(key::ADM1));
    }

    #[test]
    fn an_or_template_allows_either_key() {
        let rules = expanded("8001019000800102a010a406830181950108a40683010a950108");
        assert_eq!(rules.update, Condition::AnyOf(vec![key::PIN2, key::ADM1]));
        assert!(rules.update.is_met(|key| key == key::ADM1));
        assert!(rules.update.is_met(|key| key == key::PIN2));
        assert!(!rules.update.is_met(|key| key == key::PIN1));
    }

    #[test]
    fn compact_rules_of_the_sysmocom_key_files_need_adm1_for_read_and_update() {
        let rules = AccessRules::parse_compact(&[0x03, 0x1A, 0x1A]).unwrap();
        assert_eq!(rules.read, Condition::key(key::ADM1));
        assert_eq!(rules.update, Condition::key(key::ADM1));
        assert_eq!(rules.activate, Condition::Never);
        // An access mode byte with no bits set allows nothing (the GBA files answer 6982).
        assert_eq!(
            AccessRules::parse_compact(&[0x00]).unwrap(),
            AccessRules::never()
        );
    }

    #[test]
    fn malformed_rules_are_refused() {
        assert_eq!(
            AccessRules::parse_expanded(&[0x80, 0x01]),
            Err(ArrError::Truncated)
        );
        assert_eq!(
            AccessRules::parse_expanded(&[0x90, 0x00]),
            Err(ArrError::ConditionWithoutMode)
        );
        assert_eq!(
            AccessRules::parse_expanded(&[0x80, 0x01, 0x01, 0x9E, 0x01, 0x00]),
            Err(ArrError::UnknownCondition(0x9E))
        );
        assert_eq!(
            AccessRules::parse_expanded(&[0x80, 0x01, 0x01, 0xA4, 0x03, 0x95, 0x01, 0x08]),
            Err(ArrError::NoKeyReference)
        );
        assert_eq!(AccessRules::parse_compact(&[]), Err(ArrError::EmptyCompact));
        assert_eq!(
            AccessRules::parse_compact(&[0x03, 0x1A]),
            Err(ArrError::Truncated)
        );
    }
}
