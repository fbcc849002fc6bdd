//! `dump.jsonl`: one `{"table": ..., "row": {...}}` object a line, lines
//! capped in length, keys never duplicated, values exact (see value.rs).
//! The backup writes lines with [`LineWriter`]; verify and restore read
//! them with [`DumpReader`] / [`parse_line`].

use crate::error::{Error, Result};
use crate::value::{write_json, write_json_string, SqlValue};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::rc::Rc;

/// A table or column name read from a line. Shared: consecutive lines
/// name the same table and columns, and the fast parser hands out the
/// previous line's names instead of allocating them again for every row.
pub type Name = Rc<str>;

#[derive(Debug)]
pub struct RowLine {
    pub table: Name,
    pub row: Row,
}

/// What serde reads; [`RowLine`] with owned names.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SerdeRowLine {
    table: String,
    row: Row,
}

/// Column name → value, in the order of the line.
#[derive(Debug, Default)]
pub struct Row(pub Vec<(Name, SqlValue)>);

impl Row {
    pub fn get(&self, column: &str) -> Option<&SqlValue> {
        self.0.iter().find(|(c, _)| &**c == column).map(|(_, v)| v)
    }
}

impl<'de> Deserialize<'de> for Row {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(RowVisitor)
    }
}

struct RowVisitor;

impl<'de> Visitor<'de> for RowVisitor {
    type Value = Row;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of column values")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Row, A::Error> {
        let mut cells: Vec<(Name, SqlValue)> = Vec::with_capacity(16);
        // Rows are narrow: a scan of the keys so far beats hashing them;
        // wide rows get a set so a hostile line stays linear.
        let mut seen: Option<HashSet<String>> = None;
        while let Some(key) = map.next_key::<String>()? {
            let repeated = match &mut seen {
                Some(set) => !set.insert(key.clone()),
                None => cells.iter().any(|(c, _)| **c == *key),
            };
            if repeated {
                return Err(de::Error::custom(format!("column {key:?} appears twice")));
            }
            if seen.is_none() && cells.len() >= 32 {
                let mut set: HashSet<String> = cells.iter().map(|(c, _)| c.to_string()).collect();
                set.insert(key.clone());
                seen = Some(set);
            }
            let value: SqlValue = map.next_value()?;
            cells.push((Name::from(key), value));
        }
        Ok(Row(cells))
    }
}

/// Streams the lines of a dump file (or of any reader of one).
pub struct DumpReader<R: Read = File> {
    input: BufReader<R>,
    max_line: usize,
    line_no: u64,
    buf: Vec<u8>,
    names: super::fast_line::Names,
}

impl DumpReader {
    pub fn open(path: &Path, max_line: usize) -> Result<DumpReader> {
        let file = File::open(path).map_err(|e| Error::io(format!("reopening dump.jsonl: {e}")))?;
        Ok(DumpReader::new(file, max_line))
    }
}

impl<R: Read> DumpReader<R> {
    pub fn new(input: R, max_line: usize) -> DumpReader<R> {
        DumpReader {
            input: BufReader::with_capacity(1 << 20, input),
            max_line,
            line_no: 0,
            buf: Vec::new(),
            names: Default::default(),
        }
    }

    pub fn line_no(&self) -> u64 {
        self.line_no
    }

    /// The next row, or None at the end of the file.
    pub fn next_row(&mut self) -> Result<Option<RowLine>> {
        self.buf.clear();
        // Read at most max_line + 1 bytes, so a line without newline of
        // hundreds of megabytes fails early without being held in memory.
        let limit = self.max_line as u64 + 1;
        let n = (&mut self.input)
            .take(limit)
            .read_until(b'\n', &mut self.buf)
            .map_err(|e| Error::io(format!("reading dump.jsonl: {e}")))?;
        if n == 0 {
            return Ok(None);
        }
        self.line_no += 1;
        if self.buf.last() != Some(&b'\n') {
            return Err(if n as u64 >= limit {
                Error::archive(format!(
                    "dump.jsonl line {}: longer than {} bytes",
                    self.line_no, self.max_line
                ))
            } else {
                Error::archive(format!(
                    "dump.jsonl line {}: missing final newline",
                    self.line_no
                ))
            });
        }
        match super::fast_line::parse_with(&self.buf, &mut self.names) {
            Some(line) => Ok(Some(line)),
            None => parse_line_with_serde(&self.buf, self.line_no).map(Some),
        }
    }
}

/// Parse one line of dump.jsonl (`line_no` names it in errors): the fast
/// path for the shape our backups write, serde for everything else.
pub fn parse_line(bytes: &[u8], line_no: u64) -> Result<RowLine> {
    match super::fast_line::parse(bytes) {
        Some(line) => Ok(line),
        None => parse_line_with_serde(bytes, line_no),
    }
}

/// The full parser, which also words every error.
pub fn parse_line_with_serde(bytes: &[u8], line_no: u64) -> Result<RowLine> {
    serde_json::from_slice::<SerdeRowLine>(bytes)
        .map(|line| RowLine {
            table: Name::from(line.table),
            row: line.row,
        })
        .map_err(|e| Error::archive(format!("dump.jsonl line {line_no}: {e}")))
}

/// Writes one table's rows as dump.jsonl lines. The constant part of every
/// line (the table and the column names, quoted) is built once per table,
/// so a row costs only its values.
pub(crate) struct LineWriter {
    /// `{"table":"<name>","row":{`
    prefix: Vec<u8>,
    /// `"<column>":`, with a leading comma from the second column on.
    keys: Vec<Vec<u8>>,
}

impl LineWriter {
    pub(crate) fn new(table: &str, columns: &[&str]) -> Self {
        let mut prefix = b"{\"table\":".to_vec();
        write_json_string(&mut prefix, table);
        prefix.extend_from_slice(b",\"row\":{");
        let keys = columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut k = if i == 0 { Vec::new() } else { b",".to_vec() };
                write_json_string(&mut k, c);
                k.push(b':');
                k
            })
            .collect();
        LineWriter { prefix, keys }
    }

    /// Append the line of `row`, whose columns are the writer's in order,
    /// newline included.
    pub(crate) fn write_row(&self, line: &mut Vec<u8>, row: &rusqlite::Row<'_>) -> Result<()> {
        line.extend_from_slice(&self.prefix);
        for (i, key) in self.keys.iter().enumerate() {
            line.extend_from_slice(key);
            write_json(line, row.get_ref(i)?);
        }
        line.extend_from_slice(b"}}\n");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<RowLine> {
        parse_line_with_serde(s.as_bytes(), 1)
    }

    #[test]
    fn parses_exact_rows_and_refuses_tricks() {
        let line = parse(
            r#"{"table":"t","row":{"id":1,"r":2.0,"s":"1","b":{"$base64":"AA=="},"n":null}}"#,
        )
        .unwrap();
        assert_eq!(line.row.get("id"), Some(&SqlValue::Integer(1)));
        assert_eq!(line.row.get("r"), Some(&SqlValue::Real(2.0)));
        assert_eq!(line.row.get("s"), Some(&SqlValue::Text(b"1".to_vec())));
        assert_eq!(line.row.get("b"), Some(&SqlValue::Blob(vec![0])));
        assert_eq!(line.row.get("n"), Some(&SqlValue::Null));
        assert!(parse(r#"{"table":"t","row":{"id":1,"id":2}}"#).is_err());
        assert!(parse(r#"{"table":"t","table":"u","row":{}}"#).is_err());
        assert!(parse(r#"{"table":"t","row":{},"x":1}"#).is_err());
        assert!(parse(r#"{"table":"t","row":{"a":{"b":{"c":1}}}}"#).is_err());
        assert!(parse(r#"{"table":"t","row":{"a":[1]}}"#).is_err());
        let deep = format!(
            r#"{{"table":"t","row":{{"a":{}1{}}}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert!(parse(&deep).is_err());
    }
}
