//! The runtime's own reasons: what is wrong with a delivery before any business rule runs, and
//! how the runtime gives up on a job. Business crates declare their own codes.

simflow_schemas::reasons! {
    MISSING_MESSAGE_ID = "消息缺少message_id，无法保证只处理一次", "The message has no message_id, so it cannot be handled exactly once";
    MISSING_MESSAGE_TYPE = "消息缺少类型", "The message has no type property";
    UNKNOWN_MESSAGE_TYPE = "未知的消息类型", "Unknown message type";
    UNEXPECTED_MESSAGE_TYPE = "消息类型不属于此队列", "This message type does not belong on this queue";
    MALFORMED_MESSAGE = "消息格式错误", "Malformed message body";
    CONTENT_TYPE_UNSUPPORTED = "消息内容类型不受支持（应为application/json）", "The content_type is not supported (application/json only)";
    CONTENT_ENCODING_UNSUPPORTED = "消息内容编码不受支持（不可压缩或编码）", "The content_encoding is not supported (bodies are plain JSON, not compressed or encoded)";
    MESSAGE_TOO_LARGE = "消息过大", "The message body is larger than the limit";
    OUTCOME_UNROUTABLE = "处理结果无法投递，请联系运维", "The job's outcome could not be routed; ops must fix the topology and replay";
    RETRIES_EXHAUSTED = "多次重试仍失败，已转人工处理", "Still failing after every retry; waiting for ops";
    MESSAGE_ID_REUSED = "消息编号已用于其他内容，本消息未处理", "This message_id was already used for a different body; this message was not handled";
    DATABASE_ERROR = "数据库处理失败，请联系运维", "The database refused the job; ops must look at the worker log";
}
