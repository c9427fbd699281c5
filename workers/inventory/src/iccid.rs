//! ICCIDs as the inventory knows them: 19 or 20 decimal digits, starting with the telecom
//! industry prefix 89, ending in a Luhn check digit.
//!
//! Only the shape is checked here; whether a card exists is a database question.

use std::fmt;

/// A well-formed ICCID.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Iccid(String);

/// Why a string is not an ICCID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IccidError {
    /// Not 19 or 20 characters.
    #[error("an ICCID has 19 or 20 digits, this has {0}")]
    Length(usize),
    /// A character that is not a decimal digit.
    #[error("an ICCID has only decimal digits")]
    NotDigits,
    /// Does not start with 89.
    #[error("an ICCID starts with 89")]
    Prefix,
    /// The Luhn check digit is wrong.
    #[error("the ICCID's check digit is wrong")]
    CheckDigit,
}

/// The Luhn check digit for a string of decimal digits (the contract's own check).
pub use simflow_schemas::common::formats::luhn_check_digit;

impl Iccid {
    /// Parses and checks an ICCID (surrounding whitespace is ignored).
    pub fn parse(text: &str) -> Result<Iccid, IccidError> {
        let text = text.trim();
        if !(19..=20).contains(&text.len()) {
            return Err(IccidError::Length(text.chars().count()));
        }
        if !text.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(IccidError::NotDigits);
        }
        if !text.starts_with("89") {
            return Err(IccidError::Prefix);
        }
        let (body, check) = text.split_at(text.len() - 1);
        if luhn_check_digit(body) != check.parse::<u8>().ok() {
            return Err(IccidError::CheckDigit);
        }
        Ok(Iccid(text.to_owned()))
    }

    /// Builds the ICCID whose body (without check digit) is `body`.
    pub fn from_body(body: &str) -> Result<Iccid, IccidError> {
        let check = luhn_check_digit(body).ok_or(IccidError::NotDigits)?;
        Iccid::parse(&format!("{body}{check}"))
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digits, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Iccid {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_luhn_vector_holds() {
        // pySim tests/unittests/test_utils.py: 898821100000053008 has check digit 2.
        assert_eq!(luhn_check_digit("898821100000053008"), Some(2));
        assert!(Iccid::parse("8988211000000530082").is_ok());
    }

    #[test]
    fn malformed_iccids_say_what_is_wrong() {
        assert_eq!(
            Iccid::parse("8988211000000530083"),
            Err(IccidError::CheckDigit)
        );
        assert_eq!(
            Iccid::parse("898821100000053008"),
            Err(IccidError::Length(18))
        );
        assert_eq!(
            Iccid::parse("89882110000005300x2"),
            Err(IccidError::NotDigits)
        );
        assert_eq!(Iccid::parse("1988211000000530082"), Err(IccidError::Prefix));
    }

    #[test]
    fn a_body_gets_its_check_digit() {
        let iccid = Iccid::from_body("898821100000053008").expect("valid body");
        assert_eq!(iccid.as_str(), "8988211000000530082");
    }
}
