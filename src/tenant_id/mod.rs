//! A tenant id as the app stores it, of any SQLite storage class the
//! tenant column can hold: INTEGER (the Rails default), TEXT (UUID keys
//! kept as strings) or BLOB (UUIDs kept as 16 raw bytes, as 37signals'
//! apps do).
//!
//! JSON (options, results, events, the manifest): a number, a string, or
//! `{"$base64": "..."}` for a BLOB, the form `dump.jsonl` gives BLOB
//! values, so an archive spells its tenant id as its rows spell the
//! tenant column.

mod stored;
pub mod uuid;

pub use stored::stored_tenant_id_of;

use crate::value::SqlValue;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::ser::SerializeMap;

/// The JSON key of a BLOB tenant id, as in `dump.jsonl`.
pub const BLOB_KEY: &str = "$base64";

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(try_from = "TenantIdJson")]
pub enum TenantId {
    Integer(i64),
    Text(String),
    Blob(Vec<u8>),
}

/// A tenant id as JSON gives it, before we know it is one: anything else
/// (a float, a number past 64 bits, another object) gets a message that
/// says what was wrong, not serde's "did not match any variant".
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum TenantIdJson {
    Integer(i64),
    Text(String),
    Other(serde_json::Value),
}

impl TryFrom<TenantIdJson> for TenantId {
    type Error = String;

    fn try_from(json: TenantIdJson) -> std::result::Result<Self, String> {
        match json {
            TenantIdJson::Integer(i) => Ok(TenantId::Integer(i)),
            TenantIdJson::Text(s) => Ok(TenantId::Text(s)),
            TenantIdJson::Other(other) => blob_from_json(&other).unwrap_or_else(|| {
                Err(format!(
                    "a tenant id is a 64-bit integer, a string or {{\"{BLOB_KEY}\": \"...\"}} (a BLOB), got {other}"
                ))
            }),
        }
    }
}

/// `{"$base64": "..."}` (that key alone) → a BLOB id; None when the value
/// is no such object, an error when its payload is not a BLOB id.
fn blob_from_json(value: &serde_json::Value) -> Option<std::result::Result<TenantId, String>> {
    let object = value.as_object().filter(|o| o.len() == 1)?;
    let payload = object.get(BLOB_KEY)?.as_str()?;
    Some(match BASE64.decode(payload) {
        Ok(bytes) if bytes.is_empty() => Err("a BLOB tenant id must not be empty".to_string()),
        Ok(bytes) => Ok(TenantId::Blob(bytes)),
        Err(e) => Err(format!("a BLOB tenant id {value}: invalid base64: {e}")),
    })
}

impl serde::Serialize for TenantId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            TenantId::Integer(i) => serializer.serialize_i64(*i),
            TenantId::Text(s) => serializer.serialize_str(s),
            TenantId::Blob(bytes) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry(BLOB_KEY, &BASE64.encode(bytes))?;
                map.end()
            }
        }
    }
}

impl TenantId {
    pub fn to_sql_value(&self) -> SqlValue {
        match self {
            TenantId::Integer(i) => SqlValue::Integer(*i),
            TenantId::Text(s) => SqlValue::Text(s.as_bytes().to_vec()),
            TenantId::Blob(b) => SqlValue::Blob(b.clone()),
        }
    }

    /// True when a stored value is this tenant id. The id is already in the
    /// stored form (see `stored::stored_tenant_id`), so the storage classes must
    /// agree, as they do for SQLite's own `=` on a column of that class.
    pub fn matches(&self, value: &SqlValue) -> bool {
        match (self, value) {
            (TenantId::Integer(a), SqlValue::Integer(b)) => a == b,
            (TenantId::Text(a), SqlValue::Text(b)) => a.as_bytes() == b.as_slice(),
            (TenantId::Blob(a), SqlValue::Blob(b)) => a == b,
            _ => false,
        }
    }

    /// The id in archive names, `tenant_<id>_<stamp>.tar.gz`: safe in any
    /// file system. An integer as digits; text with everything but ASCII
    /// letters, digits and `-` left out; a BLOB as lowercase hex (32 digits
    /// for a UUID, what SQLite's `lower(hex(id))` shows).
    pub fn file_component(&self) -> String {
        match self {
            TenantId::Integer(i) => i.to_string(),
            TenantId::Text(s) => s
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect(),
            TenantId::Blob(b) => crate::archive::hex(b),
        }
    }

    /// Every `file_component` this tenant's archives can have. `prune`
    /// has no database to tell it the tenant column's storage class, so a
    /// UUID given as text (the app's id) also names the archives of the
    /// tenant whose BLOB id holds that UUID.
    pub fn file_components(&self) -> Vec<String> {
        let mut names = vec![self.file_component()];
        if let TenantId::Text(s) = self {
            if let Some(bytes) = uuid::parse(s) {
                names.push(crate::archive::hex(&bytes));
            }
        }
        names
    }
}

/// `x'<hex>'`, cut short after 32 bytes.
fn describe_blob(bytes: &[u8]) -> String {
    const SHOWN: usize = 32;
    let hex = crate::archive::hex(&bytes[..bytes.len().min(SHOWN)]);
    let cut = if bytes.len() > SHOWN { "…" } else { "" };
    format!("x'{hex}{cut}'")
}

impl std::fmt::Display for TenantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TenantId::Integer(i) => write!(f, "{i}"),
            TenantId::Text(s) => write!(f, "{s:?}"),
            TenantId::Blob(b) => f.write_str(&describe_blob(b)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TenantId;

    #[test]
    fn a_tenant_id_is_a_64_bit_integer_a_string_or_a_blob_and_says_so_otherwise() {
        let parse = |json: &str| serde_json::from_str::<TenantId>(json).map_err(|e| e.to_string());
        assert_eq!(parse("7"), Ok(TenantId::Integer(7)));
        assert_eq!(
            parse("-9223372036854775808"),
            Ok(TenantId::Integer(i64::MIN))
        );
        assert_eq!(parse("\"7\""), Ok(TenantId::Text("7".into())));
        assert_eq!(
            parse(r#"{"$base64":"AZA="}"#),
            Ok(TenantId::Blob(vec![0x01, 0x90]))
        );
        for bad in [
            "9223372036854775808",
            "-9223372036854775809",
            "1.5",
            "null",
            "[1]",
            r#"{"$base64":"AZA=","x":1}"#,
            r#"{"$hex":"0190"}"#,
        ] {
            let message = parse(bad).unwrap_err();
            assert!(
                message.starts_with(&format!(
                    "a tenant id is a 64-bit integer, a string or {{\"$base64\": \"...\"}} (a BLOB), got {bad}"
                )),
                "{bad}: {message}"
            );
        }
        assert!(parse(r#"{"$base64":""}"#)
            .unwrap_err()
            .starts_with("a BLOB tenant id must not be empty"));
        assert!(parse(r#"{"$base64":"!!"}"#)
            .unwrap_err()
            .contains("invalid base64"));
        assert_eq!(
            serde_json::to_string(&TenantId::Text("a".into())).unwrap(),
            "\"a\""
        );
        assert_eq!(
            serde_json::to_string(&TenantId::Blob(vec![0x01, 0x90])).unwrap(),
            r#"{"$base64":"AZA="}"#
        );
    }

    #[test]
    fn a_blob_id_is_hex_in_names_and_messages_never_raw_bytes() {
        let id = TenantId::Blob(vec![0x01, 0x90, 0xff, b'\n']);
        assert_eq!(id.file_component(), "0190ff0a");
        assert_eq!(id.to_string(), "x'0190ff0a'");
        let long = TenantId::Blob(vec![0xab; 40]);
        assert_eq!(long.to_string(), format!("x'{}…'", "ab".repeat(32)));
    }

    #[test]
    fn a_uuid_given_as_text_also_names_the_archives_of_its_blob() {
        let text = TenantId::Text("0190A7C4-1B2C-7D3E-8F40-5162738495A6".into());
        assert_eq!(
            text.file_components(),
            [
                "0190A7C4-1B2C-7D3E-8F40-5162738495A6",
                "0190a7c41b2c7d3e8f405162738495a6"
            ]
        );
        assert_eq!(TenantId::Integer(3).file_components(), ["3"]);
    }
}
