//! The end-to-end suite: one binary, one module per capability.

mod card;
