//! The acceptance slip (免填单) of a batch issue, as plain text ready to print, and the ICCID
//! ranges it lists (consecutive cards folded into one line).

use std::fmt::Write as _;

use chrono::{DateTime, FixedOffset, Utc};
use uuid::Uuid;

/// At most this many ranges are listed on a slip; the rest are summarised.
pub const MAX_SLIP_RANGES: usize = 50;

/// A run of consecutive ICCIDs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IccidRange {
    /// First ICCID.
    pub first: String,
    /// Last ICCID.
    pub last: String,
    /// Cards in the run.
    pub count: i64,
}

/// What a batch issue slip shows.
#[derive(Debug)]
pub struct IssueSlip<'a> {
    /// Batch id.
    pub batch_id: Uuid,
    /// Issuing warehouse code.
    pub warehouse: &'a str,
    /// The warehouse's unit, in Chinese.
    pub unit_name_zh: &'a str,
    /// Agent ESS department code.
    pub agent_code: &'a str,
    /// Agent name.
    pub agent_name: &'a str,
    /// Card type in Chinese.
    pub card_type_zh: &'a str,
    /// Card type in English.
    pub card_type_en: &'a str,
    /// Number of cards.
    pub card_count: i64,
    /// The ICCID runs.
    pub ranges: &'a [IccidRange],
    /// The ESS staff ID.
    pub staff_id: &'a str,
    /// When the hold lapses.
    pub expires_at: DateTime<Utc>,
}

fn beijing(time: DateTime<Utc>) -> String {
    let offset = FixedOffset::east_opt(8 * 3600)
        .unwrap_or_else(|| FixedOffset::east_opt(0).expect("zero offset"));
    time.with_timezone(&offset)
        .format("%Y-%m-%d %H:%M:%S (UTC+8)")
        .to_string()
}

/// Renders the slip.
pub fn issue_slip(slip: &IssueSlip<'_>) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "免填单 / Acceptance slip — 批量领卡 / Batch issue to agent"
    );
    let _ = writeln!(text, "批次号 Batch:           {}", slip.batch_id);
    let _ = writeln!(
        text,
        "发卡仓库 Warehouse:     {} ({} 社会渠道现场写卡目标仓库)",
        slip.warehouse, slip.unit_name_zh
    );
    let _ = writeln!(
        text,
        "代理商 Agent:           {} {}",
        slip.agent_code, slip.agent_name
    );
    let _ = writeln!(
        text,
        "卡品 Card type:         {} / {}",
        slip.card_type_zh, slip.card_type_en
    );
    let _ = writeln!(text, "数量 Cards:             {}", slip.card_count);
    let _ = writeln!(text, "号段 ICCID ranges:");
    for range in slip.ranges.iter().take(MAX_SLIP_RANGES) {
        if range.first == range.last {
            let _ = writeln!(text, "    {}  (1)", range.first);
        } else {
            let _ = writeln!(
                text,
                "    {} – {}  ({})",
                range.first, range.last, range.count
            );
        }
    }
    if slip.ranges.len() > MAX_SLIP_RANGES {
        let listed: i64 = slip
            .ranges
            .iter()
            .take(MAX_SLIP_RANGES)
            .map(|range| range.count)
            .sum();
        let _ = writeln!(
            text,
            "    … 其余 {} 张见批次明细 / {} more cards in the batch detail",
            slip.card_count - listed,
            slip.card_count - listed
        );
    }
    let _ = writeln!(text, "经办工号 Staff ID:      {}", slip.staff_id);
    let _ = writeln!(
        text,
        "请于此前确认 Confirm by: {}",
        beijing(slip.expires_at)
    );
    let _ = writeln!(text);
    let _ = writeln!(
        text,
        "代理商签字 Agent signature: ______________    经办人签字 Clerk signature: ______________"
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slip_lists_ranges_and_cuts_long_lists() {
        let ranges: Vec<IccidRange> = (0..60)
            .map(|index| IccidRange {
                first: format!("A{index}"),
                last: format!("B{index}"),
                count: 2,
            })
            .collect();
        let text = issue_slip(&IssueSlip {
            batch_id: Uuid::nil(),
            warehouse: "13ZDF16",
            unit_name_zh: "河西分公司",
            agent_code: "ESS0601",
            agent_name: "河西分公司社会渠道代理商1",
            card_type_zh: "128K手机白卡(普通)",
            card_type_en: "128K handset blank card, normal size",
            card_count: 120,
            ranges: &ranges,
            staff_id: "T0601",
            expires_at: DateTime::from_timestamp(0, 0).expect("epoch"),
        });
        assert!(text.contains("A0 – B0  (2)"));
        assert!(text.contains("A49 – B49"));
        assert!(!text.contains("A50 – B50"));
        assert!(text.contains("其余 20 张"));
        assert!(text.contains("1970-01-01 08:00:00 (UTC+8)"));
    }
}
