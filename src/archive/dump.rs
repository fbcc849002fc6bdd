//! `dump.jsonl`: one `{"table": ..., "row": {...}}` object a line, lines
//! capped in length, keys never duplicated, values exact (see value.rs).
//! The backup writes lines with [`LineWriter`]; verify and restore read
//! them with [`DumpReader`] / [`parse_line`] and check them against the
//! manifest with [`check_dump`].

use super::{Manifest, TableEntry};
use crate::error::{Error, Result};
use crate::progress::{Event, Progress, Step, Throttle};
use crate::scope::is_blob_table;
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

/// Walk dump.jsonl checking it against the manifest: tables grouped in the
/// manifest's order, each row with exactly the listed columns, the tenant
/// column (wherever a table has it) equal to the archive's tenant, the
/// per-table counts, and every file of the manifest named by a blob row.
/// `each_row` sees every row once it passed. `verify` and restore's
/// staging both read the dump through here.
pub fn check_dump<R: Read>(
    manifest: &Manifest,
    mut reader: DumpReader<R>,
    progress: &mut dyn Progress,
    mut each_row: impl FnMut(&TableEntry, RowLine) -> Result<()>,
) -> Result<()> {
    let mut check = DumpCheck::new(manifest);
    while let Some(line) = reader.next_row()? {
        let at = reader.line_no();
        let entry = check.enter_table(&line, at)?;
        check.check_row(entry, &line, at)?;
        each_row(entry, line)?;
        check.count_row(progress)?;
    }
    check.finish(progress)
}

/// Where [`check_dump`] is in the manifest, and what it still expects.
struct DumpCheck<'m> {
    manifest: &'m Manifest,
    /// The manifest's table the current line belongs to.
    table_index: usize,
    /// Rows of that table seen so far.
    in_table: u64,
    /// Its columns, for rows written in another order.
    columns: HashSet<&'m str>,
    throttle: Throttle,
    total: u64,
    /// The manifest's files no blob row has named yet: a file that none
    /// names would be written into the storage root owned by nothing, and
    /// no purge would ever remove it.
    unnamed: HashSet<&'m str>,
}

impl<'m> DumpCheck<'m> {
    fn new(manifest: &'m Manifest) -> Self {
        DumpCheck {
            manifest,
            table_index: 0,
            in_table: 0,
            columns: HashSet::new(),
            throttle: Throttle::new(manifest.total_rows()),
            total: 0,
            unnamed: manifest.blobs.iter().map(|b| b.key.as_str()).collect(),
        }
    }

    /// Move to the line's table: forward only, never back, each table
    /// left with its declared count.
    fn enter_table(&mut self, line: &RowLine, at: u64) -> Result<&'m TableEntry> {
        let tables = &self.manifest.tables;
        while self.table_index < tables.len() && *tables[self.table_index].name != *line.table {
            if self.in_table != tables[self.table_index].rows {
                return Err(count_mismatch(&tables[self.table_index], self.in_table));
            }
            self.table_index += 1;
            self.in_table = 0;
            self.columns.clear();
        }
        let Some(entry) = tables.get(self.table_index) else {
            return Err(Error::archive(format!(
                "dump.jsonl line {at}: table {:?} is not in the manifest, or out of order",
                line.table
            )));
        };
        if self.columns.is_empty() {
            self.columns = entry.columns.iter().map(String::as_str).collect();
        }
        Ok(entry)
    }

    /// The row's columns, its tenant, the table's count so far, and the
    /// blob key it names.
    fn check_row(&mut self, entry: &TableEntry, line: &RowLine, at: u64) -> Result<()> {
        // Our own backups write the manifest's column order: compare in
        // place, and fall back to the set for other orders.
        let cells = &line.row.0;
        let same_order = cells
            .iter()
            .map(|(c, _)| &**c)
            .eq(entry.columns.iter().map(String::as_str));
        if !same_order
            && (cells.len() != self.columns.len()
                || !cells.iter().all(|(c, _)| self.columns.contains(&**c)))
        {
            return Err(Error::archive(format!(
                "dump.jsonl line {at}: the columns of {} differ from the manifest",
                entry.name
            )));
        }
        // Every table, the one the manifest calls the tenants table too:
        // which table that is, is the archive's word, not a licence.
        let tenant = &self.manifest.tenant;
        if let Some(value) = line.row.get(&tenant.column) {
            if !tenant.id.matches(value) {
                return Err(Error::archive(format!(
                    "dump.jsonl line {at}: {}.{} is {}, not the archive's tenant {}",
                    entry.name,
                    tenant.column,
                    value.describe(),
                    tenant.id
                )));
            }
        }
        self.in_table += 1;
        if self.in_table > entry.rows {
            return Err(count_mismatch(entry, self.in_table));
        }
        if !self.unnamed.is_empty() && is_blob_table(&entry.name) {
            if let Some(key) = line.row.get("key").and_then(|v| v.as_text()) {
                self.unnamed.remove(key);
            }
        }
        Ok(())
    }

    /// A row passed: now and then, look for a cancel and report.
    fn count_row(&mut self, progress: &mut dyn Progress) -> Result<()> {
        self.total += 1;
        if self.total % 1024 == 0 {
            progress.check_interrupt()?;
        }
        if self.throttle.due(self.total) {
            progress.emit(self.rows_event())?;
        }
        Ok(())
    }

    fn rows_event(&self) -> Event {
        Event::new(Step::Verify)
            .with("phase", "rows")
            .with("processed", self.total)
            .with("total", self.manifest.total_rows())
    }

    /// The end of the dump: every table complete, every file named.
    fn finish(self, progress: &mut dyn Progress) -> Result<()> {
        let tables = self.manifest.tables.iter().enumerate();
        for (i, entry) in tables.skip(self.table_index) {
            let seen = if i == self.table_index {
                self.in_table
            } else {
                0
            };
            if seen != entry.rows {
                return Err(count_mismatch(entry, seen));
            }
        }
        if let Some(key) = self.unnamed.iter().min() {
            return Err(Error::archive(format!(
                "the manifest lists the file of blob {key:?}{}, but no active_storage_blobs row of the dump has that key: it would belong to nothing",
                match self.unnamed.len() {
                    1 => String::new(),
                    n => format!(" (and {} more)", n - 1),
                }
            )));
        }
        progress.emit(self.rows_event())
    }
}

fn count_mismatch(entry: &TableEntry, found: u64) -> Error {
    Error::integrity(format!(
        "table {}: manifest says {} rows, dump.jsonl has {}{}",
        entry.name,
        entry.rows,
        if found > entry.rows {
            "more than that: "
        } else {
            ""
        },
        found
    ))
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
