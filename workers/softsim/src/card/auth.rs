//! Authentication: which key file a context uses, and the card's answers (TS 31.102 §7.1.2,
//! TS 33.102 §6.3 and §6.8.1.2, TS 51.011 §9.2.16).
//!
//! A [`KeySource`] names the files that hold K and OP/OPc for one application and context, in
//! the layout of the card family (sysmocom key files cfg ‖ K ‖ OP(c), or separate EF.Ki and
//! EF.OPc). Answers: 3G context `DB` RES CK IK Kc, or `DC` AUTS when the SQN is not fresh
//! (MAC failure: 9862); GSM context SRES and Kc through the conversion functions c2 and c3.
//! SQN freshness is the plain "greater than the highest accepted" rule; no IND array.

use simflow_card::milenage;

/// Where K and OP/OPc of one application and context are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeySource {
    /// A sysmocom key file: cfg(1) ‖ K(16) ‖ OP-or-OPc(16); cfg bits 4-1 = 4 is Milenage,
    /// bit 5 set means OPc.
    KeyFile(&'static str),
    /// EF.Ki (K, 16 bytes) and EF.OPc (flag 01 = OPc / 00 = OP, then 16 bytes).
    KiAndOpc { ki: &'static str, opc: &'static str },
}

/// Milenage keys, wiped when dropped.
pub(crate) struct Keys {
    pub(crate) k: [u8; 16],
    pub(crate) opc: [u8; 16],
}

impl Drop for Keys {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.k.zeroize();
        self.opc.zeroize();
    }
}

fn keys_from(k: &[u8], op_or_opc: &[u8], is_opc: bool) -> Option<Keys> {
    let k: [u8; 16] = k.try_into().ok()?;
    let op_or_opc: [u8; 16] = op_or_opc.try_into().ok()?;
    let opc = if is_opc {
        op_or_opc
    } else {
        milenage::opc_from_op(&k, &op_or_opc)
    };
    Some(Keys { k, opc })
}

impl KeySource {
    /// The Milenage keys, given a way to read a file by name; `None` when the files are not
    /// configured for Milenage (a blank that never got keys).
    pub(crate) fn keys<'a>(&self, read: impl Fn(&str) -> Option<&'a [u8]>) -> Option<Keys> {
        match self {
            KeySource::KeyFile(name) => {
                let file = read(name)?;
                let cfg = *file.first()?;
                if cfg & 0x0F != 0x04 {
                    return None;
                }
                keys_from(file.get(1..17)?, file.get(17..33)?, cfg & 0x10 != 0)
            }
            KeySource::KiAndOpc { ki, opc } => {
                let opc_file = read(opc)?;
                let is_opc = match opc_file.first()? {
                    0x01 => true,
                    0x00 => false,
                    _ => return None,
                };
                keys_from(read(ki)?, opc_file.get(1..17)?, is_opc)
            }
        }
    }
}

/// The answer to AUTHENTICATE in 3G context, and the SQN the card now holds.
pub(crate) enum Answer3g {
    /// AUTN's MAC is wrong: 9862.
    MacFailure,
    /// `DB` … or `DC` … data, and the new highest accepted SQN.
    Data(Vec<u8>, u64),
}

/// AUTHENTICATE in 3G context: check AUTN, then answer RES/CK/IK/Kc, or AUTS if SQN ≤ `sqn_ms`.
pub(crate) fn authenticate_3g(
    keys: &Keys,
    rand: &[u8; 16],
    autn: &[u8; 16],
    sqn_ms: u64,
) -> Answer3g {
    let Ok(result) = milenage::check_autn(&keys.k, &keys.opc, rand, autn) else {
        return Answer3g::MacFailure;
    };
    let sqn = result
        .sqn
        .iter()
        .fold(0u64, |acc, &b| acc << 8 | u64::from(b));
    if sqn <= sqn_ms {
        // Synchronisation failure: AUTS carries the card's SQN, proven by MAC-S.
        let sqn_bytes: [u8; 6] = std::array::from_fn(|i| (sqn_ms >> (40 - 8 * i)) as u8);
        let mut out = vec![0xDC, 14];
        out.extend(milenage::compute_auts(&keys.k, &keys.opc, rand, &sqn_bytes));
        return Answer3g::Data(out, sqn_ms);
    }
    let mut out = vec![0xDB, 8];
    out.extend(result.res);
    out.push(16);
    out.extend(result.ck);
    out.push(16);
    out.extend(result.ik);
    out.push(8);
    out.extend(milenage::kc_from_ck_ik(&result.ck, &result.ik));
    Answer3g::Data(out, sqn)
}

/// SRES (4 bytes) and Kc (8 bytes) for a RAND: the GSM context.
pub(crate) fn gsm_sres_kc(keys: &Keys, rand: &[u8; 16]) -> ([u8; 4], [u8; 8]) {
    milenage::gsm_triplet(&keys.k, &keys.opc, rand)
}
