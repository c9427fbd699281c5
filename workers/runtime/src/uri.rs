//! Pieces of broker and database URIs: percent-encoding a path segment (a vhost, a user, a
//! queue name). Both the settings and the management client need it; neither depends on the
//! other for it.

/// Percent-encodes one path segment (vhost `/` becomes `%2F`).
pub fn encode_segment(segment: &str) -> String {
    let mut encoded = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}
