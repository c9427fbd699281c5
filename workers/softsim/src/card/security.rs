//! The card's secret codes: PIN1 and PIN2 with their unblock keys, ADM1 and ADM2, their retry
//! counters, and which of them are verified in this session.
//!
//! Counters and values are "EEPROM" (they survive a reset); what is verified is session state
//! (cleared on power-up and reset). A disabled PIN1 counts as verified: the card does not ask for
//! it. PIN1 and PIN2 block after 3 wrong tries and are unblocked with their PUK (10 tries);
//! ADM keys block for good after 3 wrong tries (TS 102 221 §9.5; sysmocom's ADM1 behaves so).
//! This module answers status words only; it does not know files or commands.

use simflow_card::apdu::sw;
use simflow_card::arr::key;
use zeroize::Zeroize;

/// Tries a PIN or ADM key starts with.
pub(crate) const PIN_TRIES: u8 = 3;

/// Tries an unblock key starts with.
pub(crate) const PUK_TRIES: u8 = 10;

/// One secret code and its retry counter. Never printed.
#[derive(Clone)]
pub(crate) struct Code {
    value: [u8; 8],
    tries_left: u8,
    max_tries: u8,
}

impl std::fmt::Debug for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Code")
            .field("tries_left", &self.tries_left)
            .finish_non_exhaustive()
    }
}

impl Drop for Code {
    fn drop(&mut self) {
        self.value.zeroize();
    }
}

impl Code {
    pub(crate) fn new(value: [u8; 8], max_tries: u8) -> Self {
        Code {
            value,
            tries_left: max_tries,
            max_tries,
        }
    }

    pub(crate) fn tries_left(&self) -> u8 {
        self.tries_left
    }

    /// Compare `candidate`; a wrong one costs a try. Ok when right.
    fn check(&mut self, candidate: &[u8]) -> Result<(), u8> {
        if candidate == self.value {
            self.tries_left = self.max_tries;
            Ok(())
        } else {
            self.tries_left = self.tries_left.saturating_sub(1);
            Err(self.tries_left)
        }
    }
}

/// PIN1/PIN2 with their PUKs, ADM1/ADM2, and the session's verified set.
#[derive(Debug, Clone)]
pub(crate) struct Security {
    pin1: Code,
    puk1: Code,
    pin2: Code,
    puk2: Code,
    adm1: Code,
    adm2: Code,
    pin1_enabled: bool,
    verified: Vec<u8>,
}

/// The values a card is made with.
#[derive(Debug)]
pub(crate) struct Codes {
    pub(crate) pin1: [u8; 8],
    pub(crate) puk1: [u8; 8],
    pub(crate) pin2: [u8; 8],
    pub(crate) puk2: [u8; 8],
    pub(crate) adm1: [u8; 8],
    pub(crate) adm2: [u8; 8],
    pub(crate) pin1_enabled: bool,
}

impl Security {
    pub(crate) fn new(codes: &Codes) -> Self {
        Security {
            pin1: Code::new(codes.pin1, PIN_TRIES),
            puk1: Code::new(codes.puk1, PUK_TRIES),
            pin2: Code::new(codes.pin2, PIN_TRIES),
            puk2: Code::new(codes.puk2, PUK_TRIES),
            adm1: Code::new(codes.adm1, PIN_TRIES),
            adm2: Code::new(codes.adm2, PIN_TRIES),
            pin1_enabled: codes.pin1_enabled,
            verified: Vec::new(),
        }
    }

    /// Forget what was verified (power-up, reset).
    pub(crate) fn reset_session(&mut self) {
        self.verified.clear();
    }

    /// Whether the card considers `reference` satisfied now.
    pub(crate) fn is_verified(&self, reference: u8) -> bool {
        (reference == key::PIN1 && !self.pin1_enabled) || self.verified.contains(&reference)
    }

    pub(crate) fn pin1_enabled(&self) -> bool {
        self.pin1_enabled
    }

    fn code_mut(&mut self, reference: u8) -> Option<&mut Code> {
        match reference {
            key::PIN1 => Some(&mut self.pin1),
            key::PIN2 => Some(&mut self.pin2),
            key::ADM1 => Some(&mut self.adm1),
            key::ADM2 => Some(&mut self.adm2),
            _ => None,
        }
    }

    /// Tries left of a code (for PIN status and the classic SIM's CHV status bytes).
    pub(crate) fn tries_left(&self, reference: u8) -> u8 {
        match reference {
            key::PIN1 => self.pin1.tries_left(),
            key::PIN2 => self.pin2.tries_left(),
            key::ADM1 => self.adm1.tries_left(),
            key::ADM2 => self.adm2.tries_left(),
            _ => 0,
        }
    }

    /// Tries left of the unblock key of PIN1 or PIN2.
    pub(crate) fn unblock_tries_left(&self, reference: u8) -> u8 {
        match reference {
            key::PIN1 => self.puk1.tries_left(),
            key::PIN2 => self.puk2.tries_left(),
            _ => 0,
        }
    }

    /// VERIFY (TS 102 221 §11.1.9): with no data, the status; otherwise a try.
    /// 9000 / 63Cx (x tries left) / 6983 blocked / 6A88 unknown key reference.
    pub(crate) fn verify(&mut self, reference: u8, candidate: &[u8]) -> u16 {
        let verified = self.is_verified(reference);
        let Some(code) = self.code_mut(reference) else {
            return sw::REFERENCED_DATA_NOT_FOUND;
        };
        if code.tries_left() == 0 {
            return sw::AUTH_METHOD_BLOCKED;
        }
        if candidate.is_empty() {
            return if verified {
                sw::OK
            } else {
                0x63C0 | u16::from(code.tries_left())
            };
        }
        if candidate.len() != 8 {
            return sw::WRONG_LENGTH;
        }
        match code.check(candidate) {
            Ok(()) => {
                self.verified.push(reference);
                sw::OK
            }
            Err(tries_left) => {
                self.verified.retain(|&verified| verified != reference);
                0x63C0 | u16::from(tries_left)
            }
        }
    }

    /// UNBLOCK PIN (TS 102 221 §11.1.13): the PUK, then the new PIN (8 bytes each).
    pub(crate) fn unblock(&mut self, reference: u8, data: &[u8]) -> u16 {
        let (puk, pin) = match reference {
            key::PIN1 => (&mut self.puk1, &mut self.pin1),
            key::PIN2 => (&mut self.puk2, &mut self.pin2),
            _ => return sw::REFERENCED_DATA_NOT_FOUND,
        };
        if puk.tries_left() == 0 {
            return sw::AUTH_METHOD_BLOCKED;
        }
        if data.len() != 16 {
            return sw::WRONG_LENGTH;
        }
        match puk.check(&data[..8]) {
            Ok(()) => {
                let mut new_pin = [0u8; 8];
                new_pin.copy_from_slice(&data[8..]);
                *pin = Code::new(new_pin, PIN_TRIES);
                new_pin.zeroize();
                if reference == key::PIN1 {
                    self.pin1_enabled = true;
                }
                self.verified.push(reference);
                sw::OK
            }
            Err(tries_left) => 0x63C0 | u16::from(tries_left),
        }
    }

    /// The PIN status template DO of a DF's FCP (TS 102 221 §9.5.2): PS_DO with one bit per key
    /// reference (1 = enabled), then the references PIN1, PIN2, ADM1, ADM2.
    pub(crate) fn pin_status_template(&self) -> Vec<u8> {
        let ps_do = if self.pin1_enabled { 0xF0 } else { 0x70 };
        vec![
            0x90,
            0x01,
            ps_do,
            0x83,
            0x01,
            key::PIN1,
            0x83,
            0x01,
            key::PIN2,
            0x83,
            0x01,
            key::ADM1,
            0x83,
            0x01,
            key::ADM2,
        ]
    }
}
