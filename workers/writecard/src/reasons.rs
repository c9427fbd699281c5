//! Every answer of the write-card worker that is not a success, with its stable code and the
//! clerk's text in Chinese and English (the deck's wording where the deck has one).

use simflow_runtime::JobError;
use simflow_schemas::common::ClerkMessage;

/// A reason: code, Chinese, English.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reason {
    /// Stable code.
    pub code: &'static str,
    /// Chinese text.
    pub zh: &'static str,
    /// English text.
    pub en: &'static str,
}

impl Reason {
    /// As a clerk message.
    pub fn message(&self) -> ClerkMessage {
        ClerkMessage::new(self.code, self.zh, self.en)
    }

    /// As a rejection (a business answer; nothing changes).
    pub fn reject(&self) -> JobError {
        JobError::reject(self.code, self.zh, self.en)
    }

    /// As a failure that waits for ops in the dead-letter queue.
    pub fn needs_ops(&self) -> JobError {
        JobError::needs_ops(self.code, self.zh, self.en)
    }
}

macro_rules! reasons {
    ($($name:ident = $code:literal, $zh:literal, $en:literal;)*) => {
        $(#[doc = $en] pub const $name: Reason = Reason { code: $code, zh: $zh, en: $en };)*
    };
}

reasons! {
    WRITE_SCRIPT_MISSING = "WRITE_SCRIPT_MISSING", "写卡脚本内容不存在，请把号卡文件维护到数据库！", "No write script for this card: load its card data file into the database.";
    CARD_UNUSABLE = "CARD_UNUSABLE", "请更换白卡！", "Please use another blank card.";
    OUTLET_UNKNOWN = "OUTLET_UNKNOWN", "写卡网点不存在或已停用", "Unknown or revoked outlet";
    CARD_UNKNOWN = "CARD_UNKNOWN", "卡号不存在", "No such card";
    CARD_LOCATION_MISMATCH = "CARD_LOCATION_MISMATCH", "卡库位不一致", "Card location mismatch: the card is not issued to this outlet's agent";
    CARD_IN_OTHER_ORDER = "CARD_IN_OTHER_ORDER", "该白卡已用于其他开户订单，请更换白卡！", "The card belongs to another order; please use another blank card.";
    STAFF_UNKNOWN = "STAFF_UNKNOWN", "工号不存在或已停用", "Unknown or inactive staff ID";
    DEPARTMENT_MISMATCH = "DEPARTMENT_MISMATCH", "工号所属社会渠道部门与领卡代理商部门不一致", "The clerk's department differs from the department of the agent that holds the card";
    AGENT_INACTIVE = "AGENT_INACTIVE", "代理商已停用", "The agent is no longer active";
    NUMBER_UNAVAILABLE = "NUMBER_UNAVAILABLE", "所选号码不存在或已被占用，请重新选号", "The chosen number does not exist or is taken; choose another";
    PACKAGE_UNKNOWN = "PACKAGE_UNKNOWN", "套餐不存在", "Unknown package";
    ORDER_CONFLICT = "ORDER_CONFLICT", "订单号已存在且内容不同", "The order id is already used for a different order";
    ORDER_UNKNOWN = "ORDER_UNKNOWN", "开户订单不存在", "No such order";
    ORDER_NOT_WRITTEN = "ORDER_NOT_WRITTEN", "尚未写卡成功，不能提交", "The card has not been written yet; the order cannot be submitted";
    ORDER_NOT_PRESUBMITTED = "ORDER_NOT_PRESUBMITTED", "请先预提交并打印受理单", "Pre-submit the order and print the acceptance form first";
    ORDER_SUBMITTED = "ORDER_SUBMITTED", "订单已正式提交，不能撤销", "The order was submitted and cannot be cancelled";
    ORDER_CANCELLED = "ORDER_CANCELLED", "订单已撤销", "The order was cancelled";
    IMSI_POOL_EMPTY = "IMSI_POOL_EMPTY", "IMSI资源不足，请联系运维补充", "The IMSI pool is empty; ops must add IMSIs";
    CARD_DATA_UNREADABLE = "CARD_DATA_UNREADABLE", "号卡数据无法解密，请联系运维", "The card data cannot be decrypted; ops must check the key-encryption keys";
    SCRIPT_BUILD_FAILED = "SCRIPT_BUILD_FAILED", "写卡脚本生成失败，请联系运维", "The write script could not be built; ops must check the card data";
    SCRIPT_EXPIRED = "SCRIPT_EXPIRED", "写卡超时，请重新读卡写卡", "The write script expired before the writer took it; read and write the card again";
    READ_EXPIRED = "READ_EXPIRED", "读卡超时，请确认写卡器已连接后重试", "The read request expired before the writer took it; check the writer and try again";
    AUTH_FAILED = "AUTH_FAILED", "白卡鉴权校验失败，请更换白卡！", "The card failed the authentication check; please use another blank card.";
    RESULT_NOT_FROM_OUTLET = "RESULT_NOT_FROM_OUTLET", "写卡结果不是由该网点写卡器发出", "The result was not sent by the outlet the script was sealed for";
    UNKNOWN_SCRIPT = "UNKNOWN_SCRIPT", "写卡脚本不存在", "No such write script";
    OUTLET_REFUSED_WORK = "OUTLET_REFUSED_WORK", "写卡器拒收了该任务，请联系运维", "The outlet's writer refused the work; ops must look at it";
}
