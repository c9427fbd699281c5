//! A software SIM on the real PC/SC stack: a sysmoISIM-SJA2 or sysmoUSIM-SJS1 that plugs into
//! pcscd through Debian's vsmartcard-vpcd virtual reader.
//!
//! [`CardModel`] is the card: the real card's files (sizes, structures, SFIs, EF.ARR records and
//! shipped contents, from a pySim export of a real card, in `layout`), access rules enforced
//! against PIN1/PIN2/ADM1/ADM2 with retry counters, the UICC dialect with logical channels and
//! the classic SIM dialect (CLA A0), and Milenage with an SQN per application.
//! [`CardImage`] describes a card as shipped, in JSON, including its [`FactoryState`];
//! [`SoftSim`] inserts a card into a vpcd reader and pulls it out again, optionally misbehaving
//! as [`Faults`] say. Tests reach into a card with [`SoftSim::snapshot`] and [`SoftSim::counters`].
//!
//! This crate does not talk PC/SC (the host side is `simflow-reader`) and never logs APDU
//! bytes or keys.

mod card;
mod image;
mod layout;
mod vpcd;

pub use card::{ApduCounters, CardModel, CardSnapshot};
pub use image::{CardImage, FactoryState, Faults, ImageError};
pub use vpcd::{CardState, DEFAULT_VPCD_ADDR, InsertedCard, SoftSim};
