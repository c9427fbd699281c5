//! Milenage for a card writer: the network side (vectors, AUTS checks) and the card side
//! (AUTN checks, AUTS), over the `milenage` crate's f1…f5*.
//!
//! Also the GSM conversion functions c2 and c3 of TS 33.102 §6.8.1.2 (SRES and Kc from a 3G
//! vector), which is what a USIM answers in GSM context.
//! Nothing here keeps state or logs: callers own the keys, and no type here prints one.

use ::milenage::Milenage;
use std::fmt;

/// AMF used in AUTS computation (TS 33.102 §6.3.3: a dummy all-zero AMF).
const RESYNC_AMF: [u8; 2] = [0, 0];

fn engine(k: &[u8; 16], opc: &[u8; 16]) -> Milenage {
    Milenage::new_with_opc(*k, *opc)
}

fn xor6(a: &[u8; 6], b: &[u8; 6]) -> [u8; 6] {
    std::array::from_fn(|i| a[i] ^ b[i])
}

/// OPc = AES_K(OP) ⊕ OP.
pub fn opc_from_op(k: &[u8; 16], op: &[u8; 16]) -> [u8; 16] {
    *Milenage::new_with_op(*k, *op).opc()
}

/// A 3G authentication vector as the network computes it.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthVector {
    pub rand: [u8; 16],
    pub autn: [u8; 16],
    pub xres: [u8; 8],
    pub ck: [u8; 16],
    pub ik: [u8; 16],
}

impl fmt::Debug for AuthVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthVector")
            .field("rand", &hex::encode(self.rand))
            .field("autn", &hex::encode(self.autn))
            .field("xres_ck_ik", &"<redacted>")
            .finish()
    }
}

/// Compute RES, CK, IK and AUTN = (SQN ⊕ AK) ‖ AMF ‖ MAC-A for a RAND, SQN and AMF.
pub fn generate_vector(
    k: &[u8; 16],
    opc: &[u8; 16],
    rand: &[u8; 16],
    sqn: &[u8; 6],
    amf: &[u8; 2],
) -> AuthVector {
    let mut m = engine(k, opc);
    let mac_a = m.f1(rand, sqn, amf);
    let (xres, ck, ik, ak) = m.f2345(rand);
    let mut autn = [0u8; 16];
    autn[..6].copy_from_slice(&xor6(sqn, &ak));
    autn[6..8].copy_from_slice(amf);
    autn[8..].copy_from_slice(&mac_a);
    AuthVector {
        rand: *rand,
        autn,
        xres,
        ck,
        ik,
    }
}

/// What a USIM derives from a RAND and AUTN whose MAC-A is right.
#[derive(Clone, PartialEq, Eq)]
pub struct CardAuthentication {
    /// The network's sequence number, recovered from AUTN.
    pub sqn: [u8; 6],
    pub amf: [u8; 2],
    pub res: [u8; 8],
    pub ck: [u8; 16],
    pub ik: [u8; 16],
}

impl fmt::Debug for CardAuthentication {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CardAuthentication")
            .field("sqn", &hex::encode(self.sqn))
            .field("res_ck_ik", &"<redacted>")
            .finish()
    }
}

/// The AUTN's MAC-A does not match: the network (or the test) used another key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("AUTN MAC-A does not match")]
pub struct MacFailure;

/// Card side: check AUTN's MAC-A and derive RES, CK, IK. The SQN freshness check is the
/// caller's (it owns the card's SQN state).
pub fn check_autn(
    k: &[u8; 16],
    opc: &[u8; 16],
    rand: &[u8; 16],
    autn: &[u8; 16],
) -> Result<CardAuthentication, MacFailure> {
    let mut m = engine(k, opc);
    let (res, ck, ik, ak) = m.f2345(rand);
    let sqn_xor_ak: [u8; 6] = std::array::from_fn(|i| autn[i]);
    let sqn = xor6(&sqn_xor_ak, &ak);
    let amf = [autn[6], autn[7]];
    let mac_a = m.f1(rand, &sqn, &amf);
    if mac_a[..] != autn[8..] {
        return Err(MacFailure);
    }
    Ok(CardAuthentication {
        sqn,
        amf,
        res,
        ck,
        ik,
    })
}

/// Card side: AUTS = (SQN_MS ⊕ AK*) ‖ MAC-S, sent on a synchronisation failure.
pub fn compute_auts(k: &[u8; 16], opc: &[u8; 16], rand: &[u8; 16], sqn_ms: &[u8; 6]) -> [u8; 14] {
    let mut m = engine(k, opc);
    let ak_star = m.f5star(rand);
    let mac_s = m.f1star(rand, sqn_ms, &RESYNC_AMF);
    let mut auts = [0u8; 14];
    auts[..6].copy_from_slice(&xor6(sqn_ms, &ak_star));
    auts[6..].copy_from_slice(&mac_s);
    auts
}

/// Network side: recover SQN_MS from AUTS and verify MAC-S. A valid MAC-S proves the card
/// holds the same K and OPc, exactly as a valid RES does.
pub fn check_auts(
    k: &[u8; 16],
    opc: &[u8; 16],
    rand: &[u8; 16],
    auts: &[u8; 14],
) -> Result<[u8; 6], MacFailure> {
    let mut m = engine(k, opc);
    let ak_star = m.f5star(rand);
    let concealed: [u8; 6] = std::array::from_fn(|i| auts[i]);
    let sqn_ms = xor6(&concealed, &ak_star);
    let mac_s = m.f1star(rand, &sqn_ms, &RESYNC_AMF);
    if mac_s[..] == auts[6..] {
        Ok(sqn_ms)
    } else {
        Err(MacFailure)
    }
}

/// c2: SRES from RES (4 to 16 bytes, zero-padded to 16): the XOR of its four 32-bit words.
pub fn sres_from_res(res: &[u8]) -> [u8; 4] {
    let mut padded = [0u8; 16];
    let len = res.len().min(16);
    padded[..len].copy_from_slice(&res[..len]);
    std::array::from_fn(|i| padded[i] ^ padded[4 + i] ^ padded[8 + i] ^ padded[12 + i])
}

/// c3: Kc = CK1 ⊕ CK2 ⊕ IK1 ⊕ IK2 (64-bit halves).
pub fn kc_from_ck_ik(ck: &[u8; 16], ik: &[u8; 16]) -> [u8; 8] {
    std::array::from_fn(|i| ck[i] ^ ck[8 + i] ^ ik[i] ^ ik[8 + i])
}

/// SRES and Kc for a RAND, as a USIM answers AUTHENTICATE in GSM context (no SQN involved).
pub fn gsm_triplet(k: &[u8; 16], opc: &[u8; 16], rand: &[u8; 16]) -> ([u8; 4], [u8; 8]) {
    let (res, ck, ik, _) = engine(k, opc).f2345(rand);
    (sres_from_res(&res), kc_from_ck_ik(&ck, &ik))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 3GPP TS 35.208 §4.3 test sets 1 to 6 (public conformance vectors).
    struct Set {
        k: &'static str,
        rand: &'static str,
        sqn: &'static str,
        amf: &'static str,
        op: &'static str,
        opc: &'static str,
        f1: &'static str,
        f1star: &'static str,
        res: &'static str,
        ck: &'static str,
        ik: &'static str,
        ak: &'static str,
        akstar: &'static str,
    }

    const SETS: [Set; 6] = [
        Set {
            k: "465b5ce8b199b49faa5f0a2ee238a6bc",
            rand: "23553cbe9637a89d218ae64dae47bf35",
            sqn: "ff9bb4d0b607",
            amf: "b9b9",
            op: "cdc202d5123e20f62b6d676ac72cb318",
            opc: "cd63cb71954a9f4e48a5994e37a02baf",
            f1: "4a9ffac354dfafb3",
            f1star: "01cfaf9ec4e871e9",
            res: "a54211d5e3ba50bf",
            ck: "b40ba9a3c58b2a05bbf0d987b21bf8cb",
            ik: "f769bcd751044604127672711c6d3441",
            ak: "aa689c648370",
            akstar: "451e8beca43b",
        },
        Set {
            k: "0396eb317b6d1c36f19c1c84cd6ffd16",
            rand: "c00d603103dcee52c4478119494202e8",
            sqn: "fd8eef40df7d",
            amf: "af17",
            op: "ff53bade17df5d4e793073ce9d7579fa",
            opc: "53c15671c60a4b731c55b4a441c0bde2",
            f1: "5df5b31807e258b0",
            f1star: "a8c016e51ef4a343",
            res: "d3a628ed988620f0",
            ck: "58c433ff7a7082acd424220f2b67c556",
            ik: "21a8c1f929702adb3e738488b9f5c5da",
            ak: "c47783995f72",
            akstar: "30f1197061c1",
        },
        Set {
            k: "fec86ba6eb707ed08905757b1bb44b8f",
            rand: "9f7c8d021accf4db213ccff0c7f71a6a",
            sqn: "9d0277595ffc",
            amf: "725c",
            op: "dbc59adcb6f9a0ef735477b7fadf8374",
            opc: "1006020f0a478bf6b699f15c062e42b3",
            f1: "9cabc3e99baf7281",
            f1star: "95814ba2b3044324",
            res: "8011c48c0c214ed2",
            ck: "5dbdbb2954e8f3cde665b046179a5098",
            ik: "59a92d3b476a0443487055cf88b2307b",
            ak: "33484dc2136b",
            akstar: "deacdd848cc6",
        },
        Set {
            k: "9e5944aea94b81165c82fbf9f32db751",
            rand: "ce83dbc54ac0274a157c17f80d017bd6",
            sqn: "0b604a81eca8",
            amf: "9e09",
            op: "223014c5806694c007ca1eeef57f004f",
            opc: "a64a507ae1a2a98bb88eb4210135dc87",
            f1: "74a58220cba84c49",
            f1star: "ac2cc74a96871837",
            res: "f365cd683cd92e96",
            ck: "e203edb3971574f5a94b0d61b816345d",
            ik: "0c4524adeac041c4dd830d20854fc46b",
            ak: "f0b9c08ad02e",
            akstar: "6085a86c6f63",
        },
        Set {
            k: "4ab1deb05ca6ceb051fc98e77d026a84",
            rand: "74b0cd6031a1c8339b2b6ce2b8c4a186",
            sqn: "e880a1b580b6",
            amf: "9f07",
            op: "2d16c5cd1fdf6b22383584e3bef2a8d8",
            opc: "dcf07cbd51855290b92a07a9891e523e",
            f1: "49e785dd12626ef2",
            f1star: "9e85790336bb3fa2",
            res: "5860fc1bce351e7e",
            ck: "7657766b373d1c2138f307e3de9242f9",
            ik: "1c42e960d89b8fa99f2744e0708ccb53",
            ak: "31e11a609118",
            akstar: "fe2555e54aa9",
        },
        Set {
            k: "6c38a116ac280c454f59332ee35c8c4f",
            rand: "ee6466bc96202c5a557abbeff8babf63",
            sqn: "414b98222181",
            amf: "4464",
            op: "1ba00a1a7c6700ac8c3ff3e96ad08725",
            opc: "3803ef5363b947c6aaa225e58fae3934",
            f1: "078adfb488241a57",
            f1star: "80246b8d0186bcf1",
            res: "16c8233f05a0ac28",
            ck: "3f8c7587fe8e4b233af676aede30ba3b",
            ik: "a7466cc1e6b2a1337d49d3b66e95d7b4",
            ak: "45b0f69ab06c",
            akstar: "1f53cd2b1113",
        },
    ];

    fn arr<const N: usize>(text: &str) -> [u8; N] {
        let mut out = [0u8; N];
        hex::decode_to_slice(text, &mut out).expect("test vector hex");
        out
    }

    #[test]
    fn opc_matches_ts_35_208_sets_1_to_6() {
        for set in &SETS {
            assert_eq!(hex::encode(opc_from_op(&arr(set.k), &arr(set.op))), set.opc);
        }
    }

    #[test]
    fn vectors_match_ts_35_208_sets_1_to_6() {
        for set in &SETS {
            let (k, opc, rand) = (arr::<16>(set.k), arr::<16>(set.opc), arr::<16>(set.rand));
            let sqn: [u8; 6] = arr(set.sqn);
            let vector = generate_vector(&k, &opc, &rand, &sqn, &arr(set.amf));
            assert_eq!(hex::encode(vector.xres), set.res);
            assert_eq!(hex::encode(vector.ck), set.ck);
            assert_eq!(hex::encode(vector.ik), set.ik);
            let ak: [u8; 6] = arr(set.ak);
            let concealed: Vec<u8> = sqn.iter().zip(ak).map(|(s, a)| s ^ a).collect();
            assert_eq!(vector.autn[..6], concealed[..]);
            assert_eq!(hex::encode(&vector.autn[6..8]), set.amf);
            assert_eq!(hex::encode(&vector.autn[8..]), set.f1);
        }
    }

    #[test]
    fn the_card_side_accepts_its_own_vectors_and_recovers_sqn() {
        for set in &SETS {
            let (k, opc, rand) = (arr::<16>(set.k), arr::<16>(set.opc), arr::<16>(set.rand));
            let vector = generate_vector(&k, &opc, &rand, &arr(set.sqn), &arr(set.amf));
            let card = check_autn(&k, &opc, &rand, &vector.autn).expect("MAC-A matches");
            assert_eq!(hex::encode(card.sqn), set.sqn);
            assert_eq!(card.res, vector.xres);
            let mut wrong_k = k;
            wrong_k[0] ^= 1;
            assert_eq!(
                check_autn(&wrong_k, &opc, &rand, &vector.autn),
                Err(MacFailure)
            );
        }
    }

    #[test]
    fn auts_uses_f1star_and_f5star_and_proves_the_key() {
        for set in &SETS {
            let (k, opc, rand) = (arr::<16>(set.k), arr::<16>(set.opc), arr::<16>(set.rand));
            let sqn_ms: [u8; 6] = arr(set.sqn);
            let auts = compute_auts(&k, &opc, &rand, &sqn_ms);
            let ak_star: [u8; 6] = arr(set.akstar);
            let concealed: Vec<u8> = sqn_ms.iter().zip(ak_star).map(|(s, a)| s ^ a).collect();
            assert_eq!(auts[..6], concealed[..]);
            assert_eq!(check_auts(&k, &opc, &rand, &auts), Ok(sqn_ms));
            let mut other_opc = opc;
            other_opc[15] ^= 0x80;
            assert_eq!(check_auts(&k, &other_opc, &rand, &auts), Err(MacFailure));
        }
        // With the test set's own AMF, f1* equals the published value.
        let set = &SETS[0];
        let mut m = Milenage::new_with_opc(arr(set.k), arr(set.opc));
        assert_eq!(
            hex::encode(m.f1star(&arr(set.rand), &arr(set.sqn), &arr(set.amf))),
            set.f1star
        );
    }

    #[test]
    fn gsm_conversion_matches_ts_55_205() {
        // TS 55.205 test sets 1-5 share K/RAND/OPc with TS 35.208 sets 1, 3, 4, 5, 6.
        let cases = [
            (0, "46f8416a", "eae4be823af9a08b"),
            (2, "8c308a5e", "aa01739b8caa976d"),
            (3, "cfbce3fe", "9a8ec95f408cc507"),
            (4, "9655e265", "cdc1dc0841b81a22"),
            (5, "13688f17", "df75bc5ea899879f"),
        ];
        for (index, sres, kc) in cases {
            let set = &SETS[index];
            let (got_sres, got_kc) = gsm_triplet(&arr(set.k), &arr(set.opc), &arr(set.rand));
            assert_eq!(hex::encode(got_sres), sres);
            assert_eq!(hex::encode(got_kc), kc);
        }
    }

    #[test]
    fn debug_output_hides_keys() {
        let set = &SETS[0];
        let vector = generate_vector(
            &arr(set.k),
            &arr(set.opc),
            &arr(set.rand),
            &arr(set.sqn),
            &arr(set.amf),
        );
        let text = format!("{vector:?}");
        assert!(!text.contains(set.ck) && !text.contains(set.res), "{text}");
    }
}
