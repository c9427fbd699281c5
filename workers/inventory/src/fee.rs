//! The fee block of a batch return: the clerk enters the return amount, and the amount actually
//! paid is computed here. Money is integer fen (分), never floating point.
//!
//! The rule: the entered amount covers every card the clerk listed, so only the share of the
//! cards that actually came back is paid, rounded down to the fen:
//! `paid = floor(entered × returned ÷ requested)`. A return where every card came back pays the
//! entered amount exactly; one where none came back pays nothing (and is refused anyway).

/// The rule in words, as the answer states it.
pub const RULE: &str = "实收金额 = 退卡金额 × 成功张数 ÷ 申请张数（向下取整到分） / \
paid = floor(return amount × cards returned ÷ cards requested), in fen";

/// Checks the amount the clerk entered: zero or more fen (`FEE_INVALID` otherwise).
pub fn check_entered(return_amount_fen: i64) -> Result<(), crate::reasons::Reason> {
    if return_amount_fen < 0 {
        return Err(crate::reasons::FEE_INVALID);
    }
    Ok(())
}

/// The amount paid for a return, in fen.
pub fn paid_amount_fen(return_amount_fen: i64, returned: u64, requested: u64) -> i64 {
    if requested == 0 || return_amount_fen <= 0 {
        return 0;
    }
    let returned = returned.min(requested);
    let paid = i128::from(return_amount_fen) * i128::from(returned) / i128::from(requested);
    i64::try_from(paid).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::{check_entered, paid_amount_fen};

    #[test]
    fn a_negative_entered_amount_is_refused_and_zero_is_not() {
        assert_eq!(
            check_entered(-1).map_err(|reason| reason.code),
            Err("FEE_INVALID")
        );
        assert_eq!(check_entered(0), Ok(()));
    }

    #[test]
    fn a_full_return_pays_the_entered_amount() {
        assert_eq!(paid_amount_fen(5000, 50, 50), 5000);
    }

    #[test]
    fn a_partial_return_pays_its_share_rounded_down_to_the_fen() {
        assert_eq!(paid_amount_fen(5000, 49, 50), 4900);
        assert_eq!(paid_amount_fen(1000, 1, 3), 333);
        assert_eq!(paid_amount_fen(1, 1, 2), 0);
    }

    #[test]
    fn nothing_returned_or_nothing_entered_pays_nothing() {
        assert_eq!(paid_amount_fen(5000, 0, 50), 0);
        assert_eq!(paid_amount_fen(0, 50, 50), 0);
        assert_eq!(paid_amount_fen(5000, 0, 0), 0);
    }

    #[test]
    fn large_amounts_do_not_overflow() {
        assert_eq!(paid_amount_fen(i64::MAX, 100_000, 100_000), i64::MAX);
        assert_eq!(paid_amount_fen(i64::MAX / 2, 1, 2), i64::MAX / 4);
    }
}
