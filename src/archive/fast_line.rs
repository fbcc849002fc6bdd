//! A fast path for the common shape of a `dump.jsonl` line, as our backups
//! write it: `{"table":"t","row":{"a":1,"b":"x","c":null}}`, no whitespace,
//! strings without escapes, plain numbers. It accepts a line only when the
//! full serde parser (`dump::parse_line_with_serde`) would produce the very
//! same row; anything else (escapes, tagged values, other key orders,
//! duplicate keys, numbers SQLite cannot hold, any error) returns `None`
//! and the full parser decides. The fuzz target `dump_line` checks that the
//! two agree.
//!
//! Why: serde_json with `arbitrary_precision` allocates a string per number;
//! restoring half a million rows spent most of its parse time there.

use super::dump::{Name, Row, RowLine};
use crate::value::{number_from_text, SqlValue};

/// The names of the previous line, handed out again when the next line
/// repeats them (as every line of a table does).
#[derive(Default)]
pub struct Names {
    table: Option<Name>,
    columns: Vec<Name>,
}

impl Names {
    fn table(&mut self, name: &str) -> Name {
        match &self.table {
            Some(known) if **known == *name => known.clone(),
            _ => self.table.insert(Name::from(name)).clone(),
        }
    }

    fn column(&mut self, position: usize, name: &str) -> Name {
        match self.columns.get(position) {
            Some(known) if **known == *name => known.clone(),
            _ => {
                let fresh = Name::from(name);
                self.columns.truncate(position);
                self.columns.push(fresh.clone());
                fresh
            }
        }
    }
}

/// Parse `bytes` (one line, with or without its final `\n`), or None.
pub fn parse(bytes: &[u8]) -> Option<RowLine> {
    parse_with(bytes, &mut Names::default())
}

/// [`parse`], sharing the names with the previous line's where they agree.
pub fn parse_with(bytes: &[u8], names: &mut Names) -> Option<RowLine> {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    // One UTF-8 check of the whole line instead of one per string: a line
    // our parser accepts is ASCII outside its strings, so the line is
    // valid exactly when every string is (and serde words the error).
    let body = std::str::from_utf8(body).ok()?;
    let mut p = Cursor {
        bytes: body.as_bytes(),
        text: body,
        at: 0,
    };
    p.literal(b"{\"table\":")?;
    let table = names.table(p.string()?);
    p.literal(b",\"row\":{")?;
    let mut cells: Vec<(Name, SqlValue)> = Vec::with_capacity(names.columns.len().max(4));
    if !p.eat(b'}') {
        loop {
            let key = p.string()?;
            // Duplicates are an error: the full parser words it.
            if cells.len() >= 64 || cells.iter().any(|(c, _)| **c == *key) {
                return None;
            }
            p.literal(b":")?;
            let value = p.value()?;
            cells.push((names.column(cells.len(), key), value));
            if p.eat(b',') {
                continue;
            }
            p.literal(b"}")?;
            break;
        }
    }
    p.literal(b"}")?;
    (p.at == body.len()).then_some(RowLine {
        table,
        row: Row(cells),
    })
}

struct Cursor<'a> {
    bytes: &'a [u8],
    /// `bytes`, known to be UTF-8.
    text: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn eat(&mut self, byte: u8) -> bool {
        if self.bytes.get(self.at) == Some(&byte) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn literal(&mut self, text: &[u8]) -> Option<()> {
        if self.bytes[self.at..].starts_with(text) {
            self.at += text.len();
            Some(())
        } else {
            None
        }
    }

    /// A string without escapes or control characters.
    fn string(&mut self) -> Option<&'a str> {
        if !self.eat(b'"') {
            return None;
        }
        let start = self.at;
        let len = self.bytes[start..]
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        if self.bytes[start + len] != b'"' {
            return None;
        }
        self.at = start + len + 1;
        // Both ends sit next to an ASCII quote: a char boundary.
        self.text.get(start..start + len)
    }

    fn value(&mut self) -> Option<SqlValue> {
        match self.bytes.get(self.at)? {
            b'"' => Some(SqlValue::Text(self.string()?.as_bytes().to_vec())),
            b'n' => {
                self.literal(b"null")?;
                Some(SqlValue::Null)
            }
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    /// JSON's number grammar exactly, then the same conversion the full
    /// parser applies (`number_from_text`).
    fn number(&mut self) -> Option<SqlValue> {
        let start = self.at;
        self.eat(b'-');
        match self.bytes.get(self.at)? {
            b'0' => self.at += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.eat(b'.') {
            if !self.bytes.get(self.at)?.is_ascii_digit() {
                return None;
            }
            self.digits();
        }
        if self.eat(b'e') || self.eat(b'E') {
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            if !self.bytes.get(self.at)?.is_ascii_digit() {
                return None;
            }
            self.digits();
        }
        number_from_text(self.text.get(start..self.at)?).ok()
    }

    fn digits(&mut self) {
        while self.bytes.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::dump::parse_line_with_serde;

    /// The fast path agrees with serde wherever it answers.
    fn agrees(line: &str) -> bool {
        let fast = parse(line.as_bytes());
        let full = parse_line_with_serde(line.as_bytes(), 1);
        match (&fast, &full) {
            (Some(f), Ok(s)) => f.table == s.table && f.row.0 == s.row.0,
            (Some(_), Err(_)) => false,
            (None, _) => true,
        }
    }

    #[test]
    fn takes_the_common_shape_and_agrees_with_serde() {
        let line = "{\"table\":\"tasks\",\"row\":{\"id\":1,\"r\":2.0,\"e\":1e3,\"n\":-0,\"s\":\"Üser 🐢\",\"x\":null}}\n";
        let parsed = parse(line.as_bytes()).expect("common shape");
        assert_eq!(parsed.row.get("r"), Some(&SqlValue::Real(2.0)));
        assert_eq!(parsed.row.get("id"), Some(&SqlValue::Integer(1)));
        assert!(agrees(line));
        assert!(parse(b"{\"table\":\"t\",\"row\":{}}").is_some());
    }

    #[test]
    fn leaves_everything_else_to_serde() {
        for line in [
            r#"{"table":"t","row":{"a":1,"a":2}}"#,
            r#"{"row":{},"table":"t"}"#,
            r#"{"table":"t","row":{"a":"x\"y"}}"#,
            r#"{"table":"t","row":{"a":{"$base64":"AA=="}}}"#,
            r#"{"table":"t","row":{"a":99999999999999999999}}"#,
            r#"{"table":"t","row":{"a":1e999}}"#,
            r#"{"table":"t","row":{"a":01}}"#,
            r#"{"table":"t","row":{"a":1.}}"#,
            r#"{"table":"t","row":{"a":.5}}"#,
            r#"{"table":"t","row":{"a":-}}"#,
            r#"{"table":"t","row":{"a":true}}"#,
            r#"{"table":"t","row":{"a":1}} "#,
            r#"{"table":"t","row":{"a":1}}x"#,
            r#"{"table":"t","row":{"a":1},"x":1}"#,
            r#"{"table":"t","row":{"a":1,}}"#,
            r#"{"table":"t", "row":{}}"#,
            "{\"table\":\"t\",\"row\":{\"a\":\"\u{1}\"}}",
        ] {
            assert!(parse(line.as_bytes()).is_none(), "{line}");
            assert!(agrees(line), "{line}");
        }
        assert!(parse(b"{\"table\":\"t\",\"row\":{\"a\":\"\xff\"}}").is_none());
    }
}
