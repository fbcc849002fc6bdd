//! SQLite values and their exact JSON form in `dump.jsonl`.
//!
//! Every value keeps its storage class across a round trip:
//! - INTEGER: a JSON integer (`42`); anything beyond 64 bits is refused;
//! - REAL: a JSON number that always has a `.` or an exponent (`2.0`,
//!   `1e300`), so a whole-number real stays real; non-finite reals, which
//!   JSON cannot spell, are `{"$real": "inf"}` / `{"$real": "-inf"}`;
//! - TEXT: a JSON string; text holding bytes that are not UTF-8 (Ruby can
//!   write those) is `{"$text_base64": "..."}` rather than being altered;
//! - BLOB: `{"$base64": "..."}`;
//! - NULL: `null`.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use rusqlite::types::{ToSqlOutput, ValueRef};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Integer(i64),
    Real(f64),
    /// Text as SQLite stores it: usually UTF-8, but not guaranteed.
    Text(Vec<u8>),
    Blob(Vec<u8>),
}

impl SqlValue {
    pub fn from_ref(value: ValueRef<'_>) -> Self {
        match value {
            ValueRef::Null => SqlValue::Null,
            ValueRef::Integer(i) => SqlValue::Integer(i),
            ValueRef::Real(r) => SqlValue::Real(r),
            ValueRef::Text(t) => SqlValue::Text(t.to_vec()),
            ValueRef::Blob(b) => SqlValue::Blob(b.to_vec()),
        }
    }

    /// Text content as &str when it is valid UTF-8.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            SqlValue::Text(t) => std::str::from_utf8(t).ok(),
            _ => None,
        }
    }

    /// Short human description for error messages (never the whole value).
    pub fn describe(&self) -> String {
        match self {
            SqlValue::Null => "NULL".into(),
            SqlValue::Integer(i) => i.to_string(),
            SqlValue::Real(r) => format!("{r:?}"),
            SqlValue::Text(t) => {
                let s = String::from_utf8_lossy(t);
                let short: String = s.chars().take(60).collect();
                format!("{short:?}")
            }
            SqlValue::Blob(b) => format!("<blob {} bytes>", b.len()),
        }
    }
}

impl rusqlite::ToSql for SqlValue {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            SqlValue::Null => ValueRef::Null,
            SqlValue::Integer(i) => ValueRef::Integer(*i),
            SqlValue::Real(r) => ValueRef::Real(*r),
            SqlValue::Text(t) => ValueRef::Text(t),
            SqlValue::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

/// Append the JSON form of a value read straight from SQLite.
pub fn write_json(out: &mut Vec<u8>, value: ValueRef<'_>) {
    match value {
        ValueRef::Null => out.extend_from_slice(b"null"),
        ValueRef::Integer(i) => out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes()),
        ValueRef::Real(r) => write_real(out, r),
        ValueRef::Text(t) => write_json_text(out, t),
        ValueRef::Blob(b) => write_tagged(out, "$base64", &BASE64.encode(b)),
    }
}

/// TEXT as a JSON string when it is UTF-8, as tagged base64 when it is
/// not (Ruby can store such bytes): lossless either way.
fn write_json_text(out: &mut Vec<u8>, text: &[u8]) {
    if !write_string_literal(out, text) {
        write_tagged(out, "$text_base64", &BASE64.encode(text));
    }
}

fn write_real(out: &mut Vec<u8>, r: f64) {
    if !r.is_finite() {
        // SQLite turns NaN into NULL, so only the infinities reach us.
        let spelled = if r > 0.0 { "inf" } else { "-inf" };
        write_tagged(out, "$real", spelled);
        return;
    }
    // serde_json prints the shortest representation that round-trips
    // (ryu) and always keeps a `.` or exponent: 2.0 stays "2.0".
    serde_json::to_writer(&mut *out, &r).expect("writing to a Vec cannot fail");
}

/// Append `s` as a JSON string literal, escaped exactly as serde_json
/// escapes it. Written out because the backup spends a good part of its
/// time here.
pub fn write_json_string(out: &mut Vec<u8>, s: &str) {
    write_escaped(out, s.as_bytes());
}

/// Append `text` as a JSON string literal, escaped as serde_json escapes
/// it, when it is UTF-8; false, with nothing appended, when it is not.
/// Escaping copies non-ASCII bytes as they are, so the text is validated
/// only when it has some, in one call over the whole text (std's validator
/// is far quicker than checking each run of non-ASCII bytes on its own).
fn write_string_literal(out: &mut Vec<u8>, text: &[u8]) -> bool {
    let start = out.len();
    let non_ascii = write_escaped(out, text);
    if non_ascii && std::str::from_utf8(text).is_err() {
        out.truncate(start);
        return false;
    }
    true
}

/// Append `text` quoted, its control characters, quotes and backslashes
/// escaped, every other byte as it is; true when some byte was not ASCII.
fn write_escaped(out: &mut Vec<u8>, text: &[u8]) -> bool {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(text.len() + 2);
    out.push(b'"');
    let mut non_ascii = false;
    let mut i = 0;
    loop {
        let (plain, high) = plain_prefix(&text[i..]);
        non_ascii |= high;
        let plain_end = i + plain;
        out.extend_from_slice(&text[i..plain_end]);
        let Some(&b) = text.get(plain_end) else {
            break;
        };
        match ESCAPE[b as usize] {
            b'u' => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 0xf) as usize]);
            }
            letter => {
                out.push(b'\\');
                out.push(letter);
            }
        }
        i = plain_end + 1;
    }
    out.push(b'"');
    non_ascii
}

/// How many leading bytes stand for themselves in a JSON string (no
/// control character, quote or backslash; non-ASCII bytes do), and whether
/// one of them is not ASCII. Eight bytes at a time: a word is plain when
/// no byte is below 0x20 and none equals `"` or `\\`.
fn plain_prefix(bytes: &[u8]) -> (usize, bool) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Non-zero exactly when some byte of `v` is below `n` (n <= 0x80);
    // which bit is set says nothing, but whether one is, is all we ask.
    let any_below = |v: u64, n: u64| v.wrapping_sub(ONES * n) & !v & HIGH;
    let any_zero = |v: u64| any_below(v, 1);
    let mut high = 0u64;
    let mut i = 0;
    while let Some(word) = bytes.get(i..i + 8) {
        let x = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        let special = any_below(x, 0x20)
            | any_zero(x ^ (ONES * u64::from(b'"')))
            | any_zero(x ^ (ONES * u64::from(b'\\')));
        if special != 0 {
            break;
        }
        high |= x;
        i += 8;
    }
    let mut tail = 0u8;
    while i < bytes.len() && ESCAPE[bytes[i] as usize] == 0 {
        tail |= bytes[i];
        i += 1;
    }
    (i, high & HIGH != 0 || tail >= 0x80)
}

/// For each byte: 0 when it stands for itself in a JSON string, else the
/// letter after the backslash (`u` for `\\u00XX`).
static ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

fn write_tagged(out: &mut Vec<u8>, tag: &str, payload: &str) {
    out.push(b'{');
    write_json_string(out, tag);
    out.push(b':');
    write_json_string(out, payload);
    out.push(b'}');
}

/// serde_json (with `arbitrary_precision`) hands numbers to `deserialize_any`
/// as a one-entry map under this key, the number's exact text as value. We
/// use it to tell `1` from `1.0` and to refuse integers beyond 64 bits.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// Parse the exact text of a JSON number into INTEGER or REAL.
pub fn number_from_text(text: &str) -> Result<SqlValue, String> {
    if text.contains(['.', 'e', 'E']) {
        let r: f64 = text.parse().map_err(|_| format!("invalid number {text}"))?;
        if !r.is_finite() {
            return Err(format!("number {text} is out of range for REAL"));
        }
        Ok(SqlValue::Real(r))
    } else {
        text.parse::<i64>()
            .map(SqlValue::Integer)
            .map_err(|_| format!("integer {text} does not fit in 64 bits"))
    }
}

impl<'de> de::Deserialize<'de> for SqlValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SqlValueVisitor)
    }
}

struct SqlValueVisitor;

impl<'de> Visitor<'de> for SqlValueVisitor {
    type Value = SqlValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("null, a number, a string, or {\"$base64\": \"...\"}")
    }

    fn visit_unit<E: de::Error>(self) -> Result<SqlValue, E> {
        Ok(SqlValue::Null)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<SqlValue, E> {
        Ok(SqlValue::Integer(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<SqlValue, E> {
        i64::try_from(v)
            .map(SqlValue::Integer)
            .map_err(|_| E::custom(format!("integer {v} does not fit in 64 bits")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<SqlValue, E> {
        Ok(SqlValue::Real(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<SqlValue, E> {
        Ok(SqlValue::Text(v.as_bytes().to_vec()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<SqlValue, E> {
        Ok(SqlValue::Text(v.into_bytes()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SqlValue, A::Error> {
        let key: String = map
            .next_key()?
            .ok_or_else(|| de::Error::custom("empty object is not a value"))?;
        let payload: String = map.next_value()?;
        let value = match key.as_str() {
            NUMBER_TOKEN => number_from_text(&payload).map_err(de::Error::custom)?,
            "$base64" => SqlValue::Blob(decode_base64(&payload)?),
            "$text_base64" => SqlValue::Text(decode_base64(&payload)?),
            "$real" => match payload.as_str() {
                "inf" => SqlValue::Real(f64::INFINITY),
                "-inf" => SqlValue::Real(f64::NEG_INFINITY),
                other => return Err(de::Error::custom(format!("unknown $real {other:?}"))),
            },
            other => return Err(de::Error::custom(format!("unknown tagged value {other:?}"))),
        };
        if map.next_key::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::custom(format!(
                "tagged value {key:?} has extra keys"
            )));
        }
        Ok(value)
    }
}

fn decode_base64<E: de::Error>(payload: &str) -> Result<Vec<u8>, E> {
    BASE64
        .decode(payload)
        .map_err(|e| E::custom(format!("invalid base64: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let every_ascii: String = (0u8..0x80).map(char::from).collect();
        for s in [
            "",
            "plain",
            "quote \" and backslash \\",
            "\u{7f}\u{80}Üser 🐢 \u{2028}",
            every_ascii.as_str(),
        ] {
            let mut ours = Vec::new();
            write_json_string(&mut ours, s);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(s).unwrap()
            );
        }
        for i in [0, -1, i64::MIN, i64::MAX, 1234567890] {
            assert_eq!(encode(ValueRef::Integer(i)), i.to_string());
        }
    }

    /// Every byte at every position of an eight-byte word: the word-wise
    /// scan must stop exactly where serde_json would start escaping, and
    /// TEXT that is not UTF-8 must go to base64 whole.
    #[test]
    fn text_is_encoded_as_serde_json_encodes_it_at_every_offset() {
        for special in (0u8..=0xff).map(|b| vec![b]).chain([
            "Ü".as_bytes().to_vec(),
            "🐢".as_bytes().to_vec(),
            vec![0xe2, 0x82], // a truncated sequence
        ]) {
            for before in 0..18 {
                for after in [0, 1, 7, 9] {
                    let text: Vec<u8> = [
                        "a".repeat(before).as_bytes(),
                        &special,
                        "z".repeat(after).as_bytes(),
                    ]
                    .concat();
                    let mut ours = Vec::new();
                    write_json(&mut ours, ValueRef::Text(&text));
                    let expected = match std::str::from_utf8(&text) {
                        Ok(s) => serde_json::to_string(s).unwrap(),
                        Err(_) => format!(r#"{{"$text_base64":"{}"}}"#, BASE64.encode(&text)),
                    };
                    assert_eq!(String::from_utf8(ours).unwrap(), expected, "{text:?}");
                }
            }
        }
    }

    /// Texts pieced together from fragments that stress the one-pass scan:
    /// runs of non-ASCII bytes next to escapes, sequences cut in two by an
    /// ASCII byte, lone continuation and lead bytes, long plain stretches.
    #[test]
    fn mixed_texts_are_encoded_as_serde_json_or_base64_encodes_them() {
        let fragments: [&[u8]; 14] = [
            b"a",
            b"plain ascii text!",
            b"\"",
            b"\\",
            b"\n",
            b"\x00",
            b"\x1f",
            "Ü".as_bytes(),
            "🐢".as_bytes(),
            "\u{2028}".as_bytes(),
            b"\xc3",
            b"\xa4",
            b"\x80",
            b"\xf0\x9f",
        ];
        let mut state = 0x853c_49e6_748f_ea9bu64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = next() % 12;
            let text: Vec<u8> = (0..len)
                .flat_map(|_| fragments[(next() % fragments.len() as u64) as usize].to_vec())
                .collect();
            let mut ours = b"prefix ".to_vec();
            write_json(&mut ours, ValueRef::Text(&text));
            let expected = match std::str::from_utf8(&text) {
                Ok(s) => serde_json::to_string(s).unwrap(),
                Err(_) => format!(r#"{{"$text_base64":"{}"}}"#, BASE64.encode(&text)),
            };
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                format!("prefix {expected}"),
                "{text:?}"
            );
        }
    }

    fn encode(v: ValueRef<'_>) -> String {
        let mut out = Vec::new();
        write_json(&mut out, v);
        String::from_utf8(out).unwrap()
    }

    fn decode(s: &str) -> Result<SqlValue, serde_json::Error> {
        serde_json::from_str(s)
    }

    #[test]
    fn storage_classes_round_trip() {
        let cases: Vec<(ValueRef<'_>, &str)> = vec![
            (ValueRef::Null, "null"),
            (ValueRef::Integer(i64::MAX), "9223372036854775807"),
            (ValueRef::Integer(i64::MIN), "-9223372036854775808"),
            (ValueRef::Real(2.0), "2.0"),
            (ValueRef::Real(0.1), "0.1"),
            (ValueRef::Real(-0.0), "-0.0"),
            (ValueRef::Real(1e300), "1e+300"),
            (ValueRef::Real(f64::INFINITY), r#"{"$real":"inf"}"#),
            (ValueRef::Text(b"0042"), r#""0042""#),
            (
                ValueRef::Text("żółw \u{1F422}".as_bytes()),
                "\"żółw \u{1F422}\"",
            ),
            (ValueRef::Text(b"a\xffb"), r#"{"$text_base64":"Yf9i"}"#),
            (ValueRef::Blob(b"\0x\0"), r#"{"$base64":"AHgA"}"#),
        ];
        for (value, json) in cases {
            assert_eq!(encode(value), json);
            let back = decode(json).unwrap();
            assert_eq!(back, SqlValue::from_ref(value), "{json}");
        }
        // -0.0 == 0.0 in PartialEq; check the sign survives too.
        let SqlValue::Real(r) = decode("-0.0").unwrap() else {
            panic!()
        };
        assert!(r.is_sign_negative());
    }

    #[test]
    fn refuses_what_sqlite_cannot_hold_exactly() {
        assert!(decode("9223372036854775808").is_err());
        assert!(decode("123456789012345678901234567890").is_err());
        assert!(decode("1e400").is_err());
        assert!(decode("true").is_err());
        assert!(decode("[1]").is_err());
        assert!(decode(r#"{"$base64":"AA==","x":1}"#).is_err());
        assert!(decode(r#"{"$base64":"!!"}"#).is_err());
        assert!(decode(r#"{"$other":"x"}"#).is_err());
    }
}
