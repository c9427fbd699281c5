//! Pure card logic for writing blank SIM cards: the bytes, not the wires.
//!
//! This crate knows what to send to a UICC and what the answers mean:
//! command and response APDUs ([`apdu`]), the encodings of the files we personalise ([`encoding`]),
//! IMS identities and the ISIM files that hold them ([`ims`]), FCP templates ([`fcp`]) and the
//! access rules they reference ([`arr`]), the Milenage authentication functions ([`milenage`]),
//! and the card families with their write scripts ([`profile`]).
//!
//! It does no I/O: no PC/SC, no sockets, no async runtime, no logging.
//! The reader crate runs the scripts, the software SIM answers them, the pipeline ships them.

pub mod apdu;
pub mod arr;
pub mod encoding;
pub mod fcp;
pub mod ims;
pub mod milenage;
pub mod profile;

mod hexser;
