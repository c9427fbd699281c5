//! The wire contract of simflow.
