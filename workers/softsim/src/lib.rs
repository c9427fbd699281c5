//! A software SIM on the real PC/SC stack: a sysmoISIM-SJA2-like UICC that plugs into pcscd
//! through Debian's vsmartcard-vpcd virtual reader.
//!
//! [`CardModel`] is the card (files, access conditions, ADM1 counter, Milenage, SQN);
//! [`CardImage`] describes a card as shipped, in JSON; [`SoftSim`] inserts a card into a vpcd
//! reader and pulls it out again, optionally misbehaving as [`Faults`] say.
//! Tests reach into a card with [`SoftSim::snapshot`] and [`SoftSim::counters`].
//!
//! This crate does not talk PC/SC (the host side is `simflow-reader`) and never logs APDU
//! bytes or keys.

mod card;
mod image;
mod vpcd;

pub use card::{ApduCounters, CardModel, CardSnapshot};
pub use image::{CardImage, Faults, ImageError};
pub use vpcd::{CardState, DEFAULT_VPCD_ADDR, InsertedCard, SoftSim};
