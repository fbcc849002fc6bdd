//! Full-text indexes over restored tables. An FTS4/FTS5 table with external
//! content (`content='tasks'`) stores only its index: rows the restore
//! purges, inserts or updates in `tasks` leave it stale unless the app's
//! triggers keep it in step. After the restore's writes, each such index
//! the app does not maintain is rebuilt from its content table, inside the
//! same transaction. Contentless indexes (`content=''`) cannot be rebuilt
//! from anything: they are reported for the app to reindex.

use crate::error::Result;
use crate::sql;
use rusqlite::Connection;
use serde::Serialize;
use std::collections::BTreeMap;

/// What became of one full-text index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IndexAction {
    /// Rebuilt from its content table (no trigger of the app keeps it).
    Rebuilt,
    /// The app's triggers on the content table update it with each row.
    KeptByTriggers,
    /// Contentless: only the app can reindex the restored rows.
    Contentless,
}

/// A full-text index and where its content lives.
struct FtsTable {
    name: String,
    /// `Some("")` for contentless, None for an index with its own content
    /// (kept in step by SQLite itself).
    content: Option<String>,
}

/// Refresh the indexes whose content table is in `changed` (tables the
/// restore wrote to or purged); contentless ones are reported whenever
/// anything changed.
pub(super) fn refresh(
    conn: &Connection,
    changed: &[&str],
) -> Result<BTreeMap<String, IndexAction>> {
    let mut out = BTreeMap::new();
    if changed.is_empty() {
        return Ok(out);
    }
    for fts in full_text_tables(conn)? {
        let Some(content) = fts.content else { continue };
        if content.is_empty() {
            out.insert(fts.name, IndexAction::Contentless);
            continue;
        }
        let Some(&table) = changed.iter().find(|t| t.eq_ignore_ascii_case(&content)) else {
            continue;
        };
        if kept_by_triggers(conn, table, &fts.name)? {
            out.insert(fts.name, IndexAction::KeptByTriggers);
            continue;
        }
        // FTS5's command column is named after the table.
        conn.execute(
            &format!(
                "INSERT INTO {}({}) VALUES ('rebuild')",
                sql::main_table(&fts.name),
                sql::ident(&fts.name)
            ),
            [],
        )?;
        out.insert(fts.name, IndexAction::Rebuilt);
    }
    Ok(out)
}

fn full_text_tables(conn: &Connection) -> Result<Vec<FtsTable>> {
    let mut stmt = conn.prepare(
        "SELECT name, sql FROM main.sqlite_schema WHERE type = 'table' AND sql LIKE 'CREATE VIRTUAL TABLE%'",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (name, sql) = row?;
        let Some((module, args)) = module_and_args(&sql) else {
            continue;
        };
        if !matches!(module.as_str(), "fts4" | "fts5") {
            continue;
        }
        let content = split_args(args)
            .into_iter()
            .find_map(|arg| option(&arg, "content"));
        out.push(FtsTable { name, content });
    }
    Ok(out)
}

/// `USING fts5(a, b, content='t')` → ("fts5", "a, b, content='t'").
fn module_and_args(sql: &str) -> Option<(String, &str)> {
    let lower = sql.to_ascii_lowercase();
    let using = lower.find(" using ")? + " using ".len();
    let open = using + sql[using..].find('(')?;
    let close = sql.rfind(')')?;
    let module = sql[using..open].trim().to_ascii_lowercase();
    (close > open).then(|| (module, &sql[open + 1..close]))
}

/// Arguments split at commas outside quotes.
fn split_args(args: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quote: Option<char> = None;
    for c in args.chars() {
        match (quote, c) {
            (None, '\'' | '"' | '`' | '[') => quote = Some(if c == '[' { ']' } else { c }),
            (Some(q), _) if c == q => quote = None,
            (None, ',') => {
                out.push(String::new());
                continue;
            }
            _ => {}
        }
        out.last_mut().expect("never empty").push(c);
    }
    out
}

/// The value of `key = value` (quotes removed), when `arg` is that option.
fn option(arg: &str, key: &str) -> Option<String> {
    let arg = arg.trim();
    let rest = arg
        .get(..key.len())?
        .eq_ignore_ascii_case(key)
        .then(|| &arg[key.len()..])?;
    let value = rest.trim_start().strip_prefix('=')?.trim();
    let unquoted = match value.chars().next() {
        Some(q @ ('\'' | '"' | '`')) => value
            .strip_prefix(q)
            .and_then(|v| v.strip_suffix(q))
            .map(|v| v.replace(&format!("{q}{q}"), &q.to_string()))?,
        Some('[') => value.strip_prefix('[')?.strip_suffix(']')?.to_string(),
        _ => value.to_string(),
    };
    Some(unquoted)
}

/// Whether some trigger on `table` writes to the index `fts` (the usual
/// `AFTER INSERT ON tasks BEGIN INSERT INTO tasks_fts …`). One trigger is
/// taken to mean the app keeps the index in step on every change.
fn kept_by_triggers(conn: &Connection, table: &str, fts: &str) -> Result<bool> {
    let mut stmt = conn.prepare(
        "SELECT sql FROM main.sqlite_schema WHERE type = 'trigger' AND tbl_name = ?1 COLLATE NOCASE",
    )?;
    let sqls = stmt.query_map([table], |r| r.get::<_, Option<String>>(0))?;
    let fts = fts.to_ascii_lowercase();
    for sql in sqls {
        if sql?.is_some_and(|s| s.to_ascii_lowercase().contains(&fts)) {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_content_option() {
        let (module, args) = module_and_args(
            "CREATE VIRTUAL TABLE s USING fts5(title, body, content='tasks', content_rowid='id')",
        )
        .unwrap();
        assert_eq!(module, "fts5");
        let content: Vec<String> = split_args(args)
            .iter()
            .filter_map(|a| option(a, "content"))
            .collect();
        assert_eq!(content, ["tasks"]);
        assert_eq!(option(" content=\"\"", "content").as_deref(), Some(""));
        assert_eq!(option("content_rowid=id", "content"), None);
    }
}
