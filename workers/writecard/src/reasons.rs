//! Every answer of the write-card worker that is not a success, with its stable code and the
//! clerk's text in Chinese and English (the deck's wording where the deck has one).
//! Codes that mean the same as an inventory code (`CARD_UNKNOWN`, `CARD_LOCATION_MISMATCH`,
//! `STAFF_UNKNOWN`, `AGENT_INACTIVE`) are the inventory's, re-exported here, not declared again.

pub use simflow_inventory::reasons::{
    AGENT_INACTIVE, CARD_LOCATION_MISMATCH, CARD_UNKNOWN, STAFF_UNKNOWN,
};

simflow_schemas::reasons! {
    WRITE_SCRIPT_MISSING = "写卡脚本内容不存在，请把号卡文件维护到数据库！", "No write script for this card: load its card data file into the database.";
    CARD_UNUSABLE = "请更换白卡！", "Please use another blank card.";
    OUTLET_UNKNOWN = "写卡网点不存在或已停用", "Unknown or revoked outlet";
    OUTLET_SUSPENDED = "写卡网点已暂停服务，请联系渠道经理", "The outlet is suspended; contact the channel manager";
    CARD_IN_OTHER_ORDER = "该白卡已用于其他开户订单，请更换白卡！", "The card belongs to another order; please use another blank card.";
    CLERK_DEPARTMENT_MISMATCH = "工号所属社会渠道部门与领卡代理商部门不一致", "The clerk's department differs from the department of the agent that holds the card";
    NUMBER_UNAVAILABLE = "所选号码不存在或已被占用，请重新选号", "The chosen number does not exist or is taken; choose another";
    PACKAGE_UNKNOWN = "套餐不存在", "Unknown package";
    ORDER_CONFLICT = "订单号已存在且内容不同", "The order id is already used for a different order";
    ORDER_UNKNOWN = "开户订单不存在", "No such order";
    ORDER_NOT_WRITTEN = "尚未写卡成功，不能提交", "The card has not been written yet; the order cannot be submitted";
    ORDER_NOT_PRESUBMITTED = "请先预提交并打印受理单", "Pre-submit the order and print the acceptance form first";
    ORDER_SUBMITTED = "订单已正式提交，不能撤销", "The order was submitted and cannot be cancelled";
    ORDER_CANCELLED = "订单已撤销", "The order was cancelled";
    IMSI_POOL_EMPTY = "IMSI资源不足，请联系运维补充", "The IMSI pool is empty; ops must add IMSIs";
    CARD_DATA_UNREADABLE = "号卡数据无法解密，请联系运维", "The card data cannot be decrypted; ops must check the key-encryption keys";
    SCRIPT_BUILD_FAILED = "写卡脚本生成失败，请联系运维", "The write script could not be built; ops must check the card data";
    SCRIPT_EXPIRED = "写卡超时，请重新读卡写卡", "The write script expired before the writer took it; read and write the card again";
    READ_EXPIRED = "读卡超时，请确认写卡器已连接后重试", "The read request expired before the writer took it; check the writer and try again";
    AUTH_FAILED = "白卡鉴权校验失败，请更换白卡！", "The card failed the authentication check; please use another blank card.";
    RESULT_NOT_FROM_OUTLET = "写卡结果不是由该网点写卡器发出", "The result was not sent by the outlet the script was sealed for";
    UNKNOWN_SCRIPT = "写卡脚本不存在", "No such write script";
    CARD_STATE_INCONSISTENT = "白卡状态与订单或写卡结果不一致，请联系运维", "The card's state does not match its order or write result; ops must check the card's history";
    KEY_ROTATION_REFUSED = "写卡器密钥更换未被接受，请联系运维", "The writer's key rotation was not accepted (it names a key the centre does not seal to); ops must look at it";
    OUTLET_REFUSED_WORK = "写卡器拒收了该任务，请联系运维", "The outlet's writer refused the work; ops must look at it";
    WRITER_NOT_ISSUED_HERE = "该网点的写卡器未在写卡器发放明细中登记给本网点，请使用分公司发放的写卡器", "The outlet's card writer is not issued to this outlet in the writer ledger; use the writer the branch issued";
}
