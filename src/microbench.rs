//! Entry points of the micro-benchmarks (`bench/escape_and_parse.rs`), so
//! they time the very functions a backup and a restore run. Not an API:
//! hidden from the docs.

/// A `&str` as a JSON string literal (table and column names, tags).
pub fn escape_str(out: &mut Vec<u8>, s: &str) {
    crate::value::write_json_string(out, s);
}

/// A TEXT value as a backup writes it into a dump line: a JSON string when
/// it is UTF-8, tagged base64 otherwise.
pub fn escape_text(out: &mut Vec<u8>, text: &[u8]) {
    crate::value::write_json(out, rusqlite::types::ValueRef::Text(text));
}
