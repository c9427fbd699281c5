//! Every refusal the card data import gives, with its stable code and the clerk's text in
//! Chinese and English (`simflow_schemas::Reason`), in one place so the wording stays the same
//! in the CLI, the queue answers and the tests.
//!
//! No text here ever carries a value from the file: refusals name a line and a column, never
//! what was in it, because the value may be a key.

use simflow_schemas::cardfile::RowProblem;
pub use simflow_schemas::reason::Reason;

/// A reason as the problem of one row of a card data file.
pub trait RowReason {
    /// As the problem of one row.
    fn for_row(&self, line: u64, column: Option<&str>) -> RowProblem;

    /// The import's reason with this code, if there is one.
    fn by_code(code: &str) -> Option<Reason>;
}

impl RowReason for Reason {
    fn for_row(&self, line: u64, column: Option<&str>) -> RowProblem {
        RowProblem {
            line,
            column: column.map(str::to_owned),
            code: self.code.to_owned(),
            message_zh: self.zh.to_owned(),
            message_en: self.en.to_owned(),
        }
    }

    fn by_code(code: &str) -> Option<Reason> {
        Reason::find(ALL, code)
    }
}

simflow_schemas::reasons! {
    // The whole file is refused and nothing of it is imported.
    FILE_EMPTY = "号卡文件为空", "The card data file is empty";
    FILE_NO_ROWS = "号卡文件只有表头，没有号卡数据", "The card data file has a header line but no card rows";
    FILE_NO_HEADER = "号卡文件缺少表头行（第一行应为列名）", "The card data file has no header line (the first line must name the columns)";
    FILE_NOT_UTF8 = "号卡文件含有非UTF-8编码的字节", "The card data file contains bytes that are not UTF-8";
    FILE_LINE_TOO_LONG = "号卡文件中有一行超过长度上限", "A line of the card data file is longer than the limit";
    FILE_MALFORMED = "号卡文件不是有效的CSV格式", "The card data file is not valid CSV";
    FILE_UNREADABLE = "号卡文件无法读取", "The card data file cannot be read";
    FILE_CHANGED = "号卡文件在导入过程中被修改，请重新导入", "The card data file changed while it was being imported; import it again";
    COLUMN_MISSING = "号卡文件缺少必需的列（ICCID、IMSI、KI、OPC、ADM1）", "The card data file lacks a required column (ICCID, IMSI, KI, OPC, ADM1)";
    COLUMN_UNKNOWN = "号卡文件含有无法识别的列", "The card data file has a column this import does not know";
    COLUMN_DUPLICATE = "号卡文件表头中同一列出现多次", "The card data file names the same column more than once";
    COLUMN_COUNT = "号卡文件中某行的列数与表头不符", "A row of the card data file has a different number of fields than the header";
    CARD_TYPE_INVALID = "卡品编码无效", "The card type code is not valid";
    TRANSPORT_KEY_UNKNOWN = "指定的传输密钥未配置", "The named transport key is not configured";
    TRANSPORT_KEY_REQUIRED = "号卡文件的密钥列已加密，但未指定传输密钥", "The key columns of the file are encrypted but no transport key was named";
    TRANSPORT_KEY_WRONG = "传输密钥无法解密号卡文件（密钥不对）", "The transport key does not decrypt the file (wrong key)";
    // One row is refused; the others are imported.
    VALUE_MISSING = "必填字段为空", "A required field is empty";
    ICCID_BAD_LENGTH = "ICCID长度错误（应为19或20位数字）", "ICCID must have 19 or 20 digits";
    ICCID_NOT_DIGITS = "ICCID只能包含数字", "ICCID must contain digits only";
    ICCID_BAD_LUHN = "ICCID校验位错误", "ICCID check digit is wrong";
    IMSI_INVALID = "IMSI格式错误（应为6到15位数字）", "IMSI must be 6 to 15 digits";
    KEY_BAD_LENGTH = "密钥长度错误", "Key has the wrong length";
    KEY_NOT_HEX = "密钥含有非十六进制字符", "Key contains characters that are not hex digits";
    ADM1_INVALID = "ADM1格式错误（应为8位数字或16位十六进制）", "ADM1 must be 8 digits or 16 hex digits";
    PIN_INVALID = "PIN格式错误（应为4到8位数字）", "PIN must be 4 to 8 digits";
    PUK_INVALID = "PUK格式错误（应为8位数字）", "PUK must be 8 digits";
    FIELD_INVALID = "字段格式错误", "The field is not in the expected format";
    DECRYPT_FAILED = "加密字段无法用传输密钥解密", "The encrypted field does not decrypt with the transport key";
    ICCID_DUPLICATE_IN_FILE = "ICCID在文件中重复出现", "The ICCID appears more than once in the file";
    IMSI_DUPLICATE_IN_FILE = "IMSI在文件中重复出现", "The IMSI appears more than once in the file";
    ICCID_CONFLICT = "该ICCID已导入，且号卡数据不同", "The ICCID was already imported with different card data";
    IMSI_CONFLICT = "该IMSI已属于另一张卡", "The IMSI already belongs to another card";
    // The import cannot run until ops act.
    CARDDATA_KEK_MISSING = "号卡数据加密密钥未配置，请联系运维", "No key-encryption key is configured for card data; ops must configure one";
    CARDDATA_IMPORT_FAILED = "号卡文件导入失败，请联系运维", "The card data import failed; ops must look at the worker log";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_upper_case() {
        let mut codes: Vec<&str> = ALL.iter().map(|reason| reason.code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), ALL.len());
        assert!(codes.iter().all(|code| {
            code.bytes()
                .all(|byte| byte.is_ascii_uppercase() || byte.is_ascii_digit() || byte == b'_')
        }));
    }
}
