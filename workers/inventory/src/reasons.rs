//! Every rejection the inventory workers give, with its stable code and the clerk's text in
//! Chinese and English (`simflow_schemas::Reason`). The write-card worker reuses the codes that
//! mean the same there (`CARD_UNKNOWN`, `CARD_LOCATION_MISMATCH`, …) instead of declaring them
//! again.

pub use simflow_schemas::reason::Reason;

simflow_schemas::reasons! {
    STAFF_UNKNOWN = "工号不存在或已停用", "Unknown or inactive staff ID";
    STAFF_NOT_BOUND = "工号未绑定该仓库", "The staff ID is not bound to this warehouse";
    STAFF_NOT_PERMITTED = "工号无此操作权限", "The staff ID lacks the permission for this operation";
    WAREHOUSE_UNKNOWN = "仓库编码不存在", "Unknown warehouse code";
    WRONG_DIRECTION = "调拨方向错误：只能从二级库下拨到本单位现场写卡目标仓库", "Wrong direction: a transfer goes from a secondary warehouse to its own unit's on-site target warehouse";
    CARD_TYPE_UNKNOWN = "卡品不存在", "Unknown card type";
    CARDS_NOT_AVAILABLE = "部分白卡不符合条件，未做任何处理", "Some cards do not qualify; nothing was done";
    NOT_ENOUGH_CARDS = "库存白卡数量不足", "Not enough blank cards in stock";
    EMPTY_SELECTION = "未选中任何白卡", "No cards were selected";
    SELECTION_TOO_LARGE = "单次选择的白卡数量超过上限", "Too many cards in one job";
    BAD_RANGE = "号段起止ICCID无效", "The range's start and end ICCIDs are not valid";
    ICCID_INVALID = "ICCID格式或校验位错误", "ICCID is malformed or its check digit is wrong";
    CARD_UNKNOWN = "卡号不存在", "No such card";
    CARD_NOT_IN_WAREHOUSE = "白卡不在该仓库", "The card is not in this warehouse";
    CARD_TYPE_MISMATCH = "卡品不符", "The card is of another card type";
    CARD_NOT_BLANK = "非白卡状态", "The card is not blank";
    CARD_HELD = "白卡已被其他单据占用", "The card is held by another transfer or batch";
    DEPARTMENT_MISMATCH = "工号部门编号与白卡所属部门不一致", "The staff ID's department differs from the department the card belongs to";
    DUPLICATE_ICCID = "ICCID重复", "The ICCID is listed twice";
    WAREHOUSE_NOT_TARGET = "批量领卡和退卡只能在社会渠道现场写卡目标仓库办理", "Batch issue and return happen only at an on-site-writing target warehouse";
    AGENT_UNKNOWN = "代理商ESS部门编码不存在", "No agent has this ESS department code";
    AGENT_INACTIVE = "代理商已停用", "The agent is no longer active";
    AGENT_OTHER_UNIT = "代理商不属于该仓库所在单位", "The agent belongs to another unit than the warehouse";
    BATCH_UNKNOWN = "批量领卡批次不存在", "No such batch";
    BATCH_ID_CONFLICT = "批次号已存在且内容不同", "The batch id is already used for a different batch";
    BATCH_EXPIRED = "批量领卡确认已超时，白卡已释放，请重新办理", "The prepared batch expired and its cards were released; prepare it again";
    CARD_LOCATION_MISMATCH = "卡库位不一致", "Card location mismatch: the card is not issued to this agent";
    RETURN_ID_CONFLICT = "退卡单号已存在且内容不同", "The return id is already used for a different return";
    NOTHING_RETURNED = "没有可退的白卡，未做任何处理", "No card could be returned; nothing was done";
    FEE_INVALID = "退卡金额无效", "The return amount is not valid";
    TRANSFER_UNKNOWN = "调拨单不存在", "No such transfer";
    TRANSFER_ID_CONFLICT = "调拨单号已存在且内容不同", "The transfer id is already used for a different transfer";
    APPROVE_IN_BEFORE_OUT = "调拨单尚未调出审核，不能调入审核", "The transfer has not been approved out yet, so it cannot be approved in";
    BRANCH_UNKNOWN = "分公司二级库编码不存在", "No branch has this secondary warehouse code";
    WRITER_SERIAL_INVALID = "写卡器序列号为空或超过64个字符", "The writer serial is empty or longer than 64 characters";
    WRITER_PURCHASE_INCOMPLETE = "写卡器型号和采购单号不能为空", "The writer's model and purchase reference must not be empty";
    WRITER_SERIAL_CONFLICT = "该序列号的写卡器已登记，型号、采购单号或分公司不同", "A writer with this serial is already recorded with another model, purchase reference or branch";
    WRITER_UNKNOWN = "写卡器未登记", "No writer with this serial is recorded";
    WRITER_OTHER_BRANCH = "写卡器不属于该分公司", "The writer belongs to another branch";
    WRITER_NOT_IN_STOCK = "写卡器不在分公司库存中", "The writer is not in the branch's stock";
    WRITER_NOT_ISSUED = "写卡器未发放给网点", "The writer is not issued to an outlet";
    WRITER_NOT_IN_REPAIR = "写卡器不在维修中", "The writer is not at the repairer";
    WRITER_WRITTEN_OFF = "写卡器已报废", "The writer has been written off";
    WRITER_OUTLET_UNKNOWN = "写卡网点不存在", "No outlet has this code";
    WRITER_OUTLET_INACTIVE = "写卡网点已停用", "The outlet is revoked";
    WRITER_OUTLET_OTHER_BRANCH = "网点所属代理商不属于该分公司或已停用", "The outlet's agent is not an active agent of this branch";
    WRITER_OUTLET_HAS_WRITER = "该网点已有写卡器，请先收回", "The outlet already holds a writer; take it back first";
    WRITE_OFF_REASON_MISSING = "报废原因不能为空", "Say why the writer is written off";
}
