//! Fees of an account opening, in integer fen (分), and the acceptance form (受理单).
//!
//! The rule: card fee (卡费) and prepaid credit (预存话费) as the package sets them, plus the
//! first-month tariff (入网当月资费): the monthly fee pro rata for the days left in the month,
//! today included, in Beijing time, rounded down to the fen:
//! `floor(monthly_fee × days_left ÷ days_in_month)`. The total is their sum.

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, Utc};
use simflow_schemas::writecard::FeeLine;

/// A package's prices.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Package {
    /// Code.
    pub package_code: String,
    /// Chinese name.
    pub name_zh: String,
    /// English name.
    pub name_en: String,
    /// Monthly fee in fen.
    pub monthly_fee_fen: i64,
    /// Prepaid credit in fen.
    pub prepaid_fen: i64,
    /// Card fee in fen.
    pub card_fee_fen: i64,
}

fn beijing() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600)
        .unwrap_or_else(|| FixedOffset::east_opt(0).expect("zero offset"))
}

fn days_in_month(date: NaiveDate) -> u32 {
    let (year, month) = if date.month() == 12 {
        (date.year() + 1, 1)
    } else {
        (date.year(), date.month() + 1)
    };
    NaiveDate::from_ymd_opt(year, month, 1)
        .and_then(|first_of_next| first_of_next.pred_opt())
        .map(|last| last.day())
        .unwrap_or(30)
}

/// The fee lines of an opening at `now`.
pub fn fee_lines(package: &Package, now: DateTime<Utc>) -> Vec<FeeLine> {
    let today = now.with_timezone(&beijing()).date_naive();
    let days = days_in_month(today);
    let days_left = days - today.day() + 1;
    let first_month = i64::try_from(
        i128::from(package.monthly_fee_fen) * i128::from(days_left) / i128::from(days),
    )
    .unwrap_or(i64::MAX);
    vec![
        FeeLine {
            code: "CARD_FEE".into(),
            label_zh: "卡费".into(),
            label_en: "Card fee".into(),
            amount_fen: package.card_fee_fen,
        },
        FeeLine {
            code: "FIRST_MONTH".into(),
            label_zh: format!("入网当月资费（{days_left}/{days}天）"),
            label_en: format!("First-month tariff ({days_left}/{days} days)"),
            amount_fen: first_month,
        },
        FeeLine {
            code: "PREPAID".into(),
            label_zh: "预存话费".into(),
            label_en: "Prepaid credit".into(),
            amount_fen: package.prepaid_fen,
        },
    ]
}

/// Yuan with two decimals from fen, without floating point.
pub fn yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let fen = fen.unsigned_abs();
    format!("{sign}{}.{:02}", fen / 100, fen % 100)
}

/// The customer's name as printed: the first character, the rest as `*`.
pub fn mask_name(name: &str) -> String {
    let mut characters = name.trim().chars();
    match characters.next() {
        Some(first) => std::iter::once(first)
            .chain(characters.map(|_| '*'))
            .collect(),
        None => String::new(),
    }
}

/// What the acceptance form shows.
#[derive(Debug)]
pub struct FormFacts<'a> {
    /// Order id.
    pub order_id: uuid::Uuid,
    /// Outlet code.
    pub outlet_code: &'a str,
    /// Agent code.
    pub agent_code: &'a str,
    /// Clerk's staff ID.
    pub staff_id: &'a str,
    /// Customer name as entered.
    pub customer_name: &'a str,
    /// Number.
    pub msisdn: &'a str,
    /// Card.
    pub iccid: &'a str,
    /// Package.
    pub package: &'a Package,
    /// Fee lines.
    pub fees: &'a [FeeLine],
    /// When.
    pub now: DateTime<Utc>,
}

/// Renders the acceptance form (业务受理单) as plain text.
pub fn acceptance_form(facts: &FormFacts<'_>) -> String {
    let mut text = String::new();
    let total: i64 = facts.fees.iter().map(|line| line.amount_fen).sum();
    let _ = writeln!(
        text,
        "业务受理单 / Acceptance form — 开户 / Account opening"
    );
    let _ = writeln!(text, "订单号 Order:        {}", facts.order_id);
    let _ = writeln!(
        text,
        "日期 Date:           {}",
        facts
            .now
            .with_timezone(&beijing())
            .format("%Y-%m-%d %H:%M (UTC+8)")
    );
    let _ = writeln!(
        text,
        "网点 Outlet:         {} (代理商 agent {})",
        facts.outlet_code, facts.agent_code
    );
    let _ = writeln!(text, "经办工号 Staff ID:   {}", facts.staff_id);
    let _ = writeln!(
        text,
        "客户 Customer:       {}",
        mask_name(facts.customer_name)
    );
    let _ = writeln!(text, "号码 Number:         {}", facts.msisdn);
    let _ = writeln!(text, "卡号 ICCID:          {}", facts.iccid);
    let _ = writeln!(
        text,
        "套餐 Package:        {} / {}",
        facts.package.name_zh, facts.package.name_en
    );
    let _ = writeln!(text, "费用 Fees:");
    for line in facts.fees {
        let _ = writeln!(
            text,
            "    {} / {}: {} 元",
            line.label_zh,
            line.label_en,
            yuan(line.amount_fen)
        );
    }
    let _ = writeln!(text, "合计 Total:          {} 元", yuan(total));
    let _ = writeln!(text);
    let _ = writeln!(
        text,
        "客户签字 Customer signature: ______________    营业员签字 Clerk signature: ______________"
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package() -> Package {
        Package {
            package_code: "3G-96".into(),
            name_zh: "3G畅享套餐96元".into(),
            name_en: "3G unlimited plan, 96 yuan".into(),
            monthly_fee_fen: 9600,
            prepaid_fen: 10_000,
            card_fee_fen: 0,
        }
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn the_first_month_is_charged_pro_rata_in_beijing_time() {
        // 2026-11-27 08:00 UTC is 16:00 in Beijing: 4 of November's 30 days are left.
        let lines = fee_lines(&package(), at("2026-11-27T08:00:00Z"));
        assert_eq!(lines[1].amount_fen, 9600 * 4 / 30);
        assert_eq!(lines[1].amount_fen, 1280);
        // 2026-11-30 20:00 UTC is already December 1st in Beijing: the whole month.
        let december = fee_lines(&package(), at("2026-11-30T20:00:00Z"));
        assert_eq!(december[1].amount_fen, 9600);
    }

    #[test]
    fn february_and_leap_years_have_their_own_length() {
        let lines = fee_lines(&package(), at("2028-02-28T01:00:00Z"));
        assert!(lines[1].label_en.contains("2/29"), "{}", lines[1].label_en);
        assert_eq!(lines[1].amount_fen, 9600 * 2 / 29);
    }

    #[test]
    fn money_prints_as_yuan_without_floating_point() {
        assert_eq!(yuan(12_345), "123.45");
        assert_eq!(yuan(5), "0.05");
        assert_eq!(yuan(-250), "-2.50");
    }

    #[test]
    fn names_are_masked_but_the_first_character() {
        assert_eq!(mask_name("张三丰"), "张**");
        assert_eq!(mask_name("Li"), "L*");
        assert_eq!(mask_name(""), "");
    }
}
