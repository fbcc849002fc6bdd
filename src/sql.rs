//! SQL text: the one place that spells names, string literals, column
//! lists, key matches and our temp-table names into statements.
//!
//! Values always travel as bound parameters. What cannot (table and column
//! names read from the database, polymorphic class names read from it or
//! from an archive) goes through [`ident`] or [`string`] here and nowhere
//! else, so a hostile name can never end a literal or an identifier early.
//!
//! Columns come in two shapes: an app column by name (`m."title"`) and a
//! column of a staged table by position (`s.c3`; staged tables have columns
//! `c0, c1, …`, see `restore::stage`), and a third: a column of a key
//! table by position (`s.k0`; member sets and candidates have columns
//! `k0, k1, …`, see `scope::member_sets`). [`Col`] is any of them, so one
//! [`key_match`] serves joins between app tables, staged tables, key
//! tables and any two of them.

use std::fmt;

/// A quoted identifier: `"name"`, inner quotes doubled.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// String literals joined by commas, for `IN (…)`: `'a', 'b'`.
pub(crate) fn strings<S: AsRef<str>>(texts: &[S]) -> String {
    list(texts.iter().map(|t| string(t.as_ref())))
}

/// A string literal: `'text'`, inner quotes doubled. For class names and
/// other text that is part of a statement's structure, never for row values.
pub(crate) fn string(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// An app table, always through its schema: our temp tables (`tk_*`) come
/// first in SQLite's name lookup and would shadow an app table of the same
/// name.
pub(crate) fn main_table(name: &str) -> String {
    format!("main.{}", ident(name))
}

/// One column of a statement: an app column by name or a staged column by
/// position.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Col<'a> {
    Named(&'a str),
    Staged(usize),
    /// Column `k<i>` of a key table: the `i`th column of a row key.
    Key(usize),
}

impl Col<'_> {
    /// The column under a table alias: `m."title"` or `s.c3`.
    pub(crate) fn of(self, alias: &str) -> String {
        match self {
            Col::Named(name) => format!("{alias}.{}", ident(name)),
            Col::Staged(i) => format!("{alias}.c{i}"),
            Col::Key(i) => format!("{alias}.k{i}"),
        }
    }

    /// The column without an alias: `"title"` or `c3`.
    pub(crate) fn bare(self) -> String {
        match self {
            Col::Named(name) => ident(name),
            Col::Staged(i) => format!("c{i}"),
            Col::Key(i) => format!("k{i}"),
        }
    }
}

/// Quoted names joined by commas: `"a", "b"`.
pub(crate) fn column_list<S: AsRef<str>>(names: &[S]) -> String {
    bare_columns(names.iter().map(|n| Col::Named(n.as_ref())))
}

/// App columns by name under an alias joined by commas: `a."x", a."y"`.
pub(crate) fn column_list_of<S: AsRef<str>>(alias: &str, names: &[S]) -> String {
    columns_of(alias, names.iter().map(|n| Col::Named(n.as_ref())))
}

/// Staged columns `c<i>` under an alias joined by commas: `s.c0, s.c2`.
pub(crate) fn staged_columns(alias: &str, positions: impl IntoIterator<Item = usize>) -> String {
    columns_of(alias, positions.into_iter().map(Col::Staged))
}

/// Items of a statement joined by commas: `a, b`.
pub(crate) fn list(items: impl IntoIterator<Item = String>) -> String {
    items.into_iter().collect::<Vec<_>>().join(", ")
}

/// Columns under an alias joined by commas: `m."a", m."b"`.
pub(crate) fn columns_of<'a>(alias: &str, cols: impl IntoIterator<Item = Col<'a>>) -> String {
    list(cols.into_iter().map(|c| c.of(alias)))
}

/// Columns without an alias joined by commas: `k0, k1`.
pub(crate) fn bare_columns<'a>(cols: impl IntoIterator<Item = Col<'a>>) -> String {
    list(cols.into_iter().map(Col::bare))
}

/// The columns of a key table of `n` columns: `k0, k1, …`.
pub(crate) fn key_columns(n: usize) -> String {
    bare_columns(keys(n))
}

/// The key columns `k0, …, k<count-1>` of one of our key sets.
pub(crate) fn keys(count: usize) -> impl Iterator<Item = Col<'static>> {
    (0..count).map(Col::Key)
}

/// A row value for `IN`: `a.x` for one column, `(a.x, a.y)` for more.
pub(crate) fn row_value<'a>(alias: &str, cols: impl IntoIterator<Item = Col<'a>>) -> String {
    let parts: Vec<String> = cols.into_iter().map(|c| c.of(alias)).collect();
    if parts.len() == 1 {
        parts.into_iter().next().unwrap_or_default()
    } else {
        format!("({})", parts.join(", "))
    }
}

/// `a.x = ?2 AND a.y = ?3`: columns equal to bound parameters, numbered
/// from `first`; without an alias (`None`) the columns are bare.
pub(crate) fn params_match<'a>(
    alias: Option<&str>,
    cols: impl IntoIterator<Item = Col<'a>>,
    first: usize,
) -> String {
    all_of(cols.into_iter().enumerate().map(|(k, c)| {
        let col = alias.map_or_else(|| c.bare(), |a| c.of(a));
        format!("{col} = ?{}", first + k)
    }))
}

/// `a.x IS NOT NULL AND a.y IS NOT NULL`.
pub(crate) fn not_null<'a>(alias: &str, cols: impl IntoIterator<Item = Col<'a>>) -> String {
    all_of(
        cols.into_iter()
            .map(|c| format!("{} IS NOT NULL", c.of(alias))),
    )
}

/// Conditions joined by `AND`; `1` (true) when there are none.
pub(crate) fn all_of(conditions: impl IntoIterator<Item = String>) -> String {
    let parts: Vec<String> = conditions.into_iter().collect();
    if parts.is_empty() {
        "1".to_string()
    } else {
        parts.join(" AND ")
    }
}

/// How two columns of a key match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Match {
    /// `=`: NULL matches nothing, as in a foreign key.
    Equal,
    /// `IS`: NULL matches NULL, for rows compared value by value.
    Is,
}

/// `l.a = r.x AND l.b = r.y` for the column pairs of a key between the
/// table under `left` and the table under `right`.
pub(crate) fn key_match<'a>(
    left: &str,
    right: &str,
    pairs: impl IntoIterator<Item = (Col<'a>, Col<'a>)>,
    how: Match,
) -> String {
    let op = match how {
        Match::Equal => "=",
        Match::Is => "IS",
    };
    all_of(
        pairs
            .into_iter()
            .map(|(l, r)| format!("{} {op} {}", l.of(left), r.of(right))),
    )
}

/// `alias.<type column> = '<class>'`: the rows under `alias` whose
/// polymorphic type column names `class`.
pub(crate) fn class_is(alias: &str, type_col: Col<'_>, class: &str) -> String {
    format!("{} = {}", type_col.of(alias), string(class))
}

/// One of our temp tables: `temp.tk_<kind>_<n>`, where `n` is the index of
/// the staged table it belongs to (or a counter). The kind is one of our
/// own constants, never input, so the name needs no quoting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TempTable {
    kind: &'static str,
    index: usize,
}

impl TempTable {
    pub(crate) const fn new(kind: &'static str, index: usize) -> Self {
        TempTable { kind, index }
    }

    /// The staged rows of archive table `index`: `temp.tk_stage_<index>`.
    pub(crate) const fn stage(index: usize) -> Self {
        TempTable::new("stage", index)
    }

    /// Another temp table belonging to the same staged table:
    /// `tk_hits_3` beside `tk_stage_3`.
    pub(crate) const fn sibling(self, kind: &'static str) -> Self {
        TempTable::new(kind, self.index)
    }

    /// A set of rowids of a staged table (`sid`), made empty.
    pub(crate) fn create_rowid_set(self) -> String {
        format!(
            "DROP TABLE IF EXISTS {self}; CREATE TEMP TABLE {}(sid INTEGER PRIMARY KEY);",
            self.name()
        )
    }

    /// A set of row keys `k0, …` (`count` columns, keyed like the member
    /// sets), made empty.
    pub(crate) fn create_key_set(self, count: usize) -> String {
        let k = key_columns(count);
        format!(
            "DROP TABLE IF EXISTS {self}; CREATE TEMP TABLE {}({k}, PRIMARY KEY({k})) WITHOUT ROWID;",
            self.name()
        )
    }

    /// An index on staged columns, named after them
    /// (`tk_stage_3_c0_c2`), so every statement that needs it makes it
    /// once.
    pub(crate) fn create_index_on(self, positions: &[usize]) -> String {
        let name = self.name();
        let cols = || positions.iter().map(|&p| Col::Staged(p).bare());
        format!(
            "CREATE INDEX IF NOT EXISTS temp.{name}_{} ON {name}({});",
            cols().collect::<Vec<_>>().join("_"),
            list(cols())
        )
    }

    /// The name without the schema (`tk_stage_3`), for `CREATE INDEX`
    /// names and `sqlite_temp_master` lookups.
    pub(crate) fn name(self) -> String {
        format!("tk_{}_{}", self.kind, self.index)
    }
}

impl fmt::Display for TempTable {
    /// The qualified name, `temp.tk_<kind>_<n>`, for use in statements.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "temp.tk_{}_{}", self.kind, self.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_hostile_names_and_strings() {
        assert_eq!(
            ident(r#"a"; DROP TABLE x; --"#),
            r#""a""; DROP TABLE x; --""#
        );
        assert_eq!(string("O'Brien'); --"), "'O''Brien''); --'");
        assert_eq!(strings(&["Task", "It's"]), "'Task', 'It''s'");
        assert_eq!(main_table("tk_stage_0"), r#"main."tk_stage_0""#);
    }

    #[test]
    fn lists_and_matches_columns_of_both_shapes() {
        assert_eq!(column_list(&["id", "a\"b"]), r#""id", "a""b""#);
        assert_eq!(staged_columns("s", [0, 2]), "s.c0, s.c2");
        assert_eq!(column_list_of("a", &["id", "a\"b"]), r#"a."id", a."a""b""#);
        assert_eq!(
            key_match(
                "p",
                "s",
                [
                    (Col::Named("id"), Col::Staged(3)),
                    (Col::Named("k"), Col::Staged(0))
                ],
                Match::Equal
            ),
            r#"p."id" = s.c3 AND p."k" = s.c0"#
        );
        assert_eq!(
            key_match("m", "s", [(Col::Named("v"), Col::Staged(1))], Match::Is),
            r#"m."v" IS s.c1"#
        );
        assert_eq!(key_match("m", "s", [], Match::Equal), "1");
        assert_eq!(
            class_is("c", Col::Named("record_type"), "Task's"),
            r#"c."record_type" = 'Task''s'"#
        );
        assert_eq!(Col::Staged(4).bare(), "c4");
    }

    #[test]
    fn names_key_table_columns() {
        assert_eq!(key_columns(3), "k0, k1, k2");
        assert_eq!(Col::Key(2).bare(), "k2");
        assert_eq!(
            columns_of("c", [Col::Named("rowid"), Col::Named("a\"b")]),
            r#"c."rowid", c."a""b""#
        );
        assert_eq!(
            key_match(
                "s",
                "t",
                [(Col::Key(0), Col::Named("id")), (Col::Key(1), Col::Key(1))],
                Match::Equal
            ),
            r#"s.k0 = t."id" AND s.k1 = t.k1"#
        );
    }

    #[test]
    fn names_temp_tables_of_a_staged_table() {
        let stage = TempTable::stage(3);
        assert_eq!(stage.to_string(), "temp.tk_stage_3");
        assert_eq!(stage.sibling("hits").to_string(), "temp.tk_hits_3");
        assert_eq!(stage.sibling("hits").name(), "tk_hits_3");
    }

    #[test]
    fn lists_rows_keys_and_parameters() {
        assert_eq!(list(["a".to_string(), "b".to_string()]), "a, b");
        assert_eq!(
            columns_of("m", [Col::Named("id"), Col::Named("k")]),
            r#"m."id", m."k""#
        );
        assert_eq!(key_columns(2), "k0, k1");
        assert_eq!(Col::Key(1).of("x"), "x.k1");
        assert_eq!(row_value("c", [Col::Staged(2)]), "c.c2");
        assert_eq!(
            row_value("p", [Col::Staged(0), Col::Staged(4)]),
            "(p.c0, p.c4)"
        );
        assert_eq!(
            params_match(Some("m"), [Col::Named("id"), Col::Named("k")], 2),
            r#"m."id" = ?2 AND m."k" = ?3"#
        );
        assert_eq!(params_match(None, [Col::Staged(3)], 1), "c3 = ?1");
        assert_eq!(
            not_null("s", [Col::Staged(1), Col::Staged(2)]),
            "s.c1 IS NOT NULL AND s.c2 IS NOT NULL"
        );
    }

    #[test]
    fn makes_our_temp_tables() {
        let sel = TempTable::stage(2).sibling("sel");
        assert_eq!(
            sel.create_rowid_set(),
            "DROP TABLE IF EXISTS temp.tk_sel_2; CREATE TEMP TABLE tk_sel_2(sid INTEGER PRIMARY KEY);"
        );
        assert_eq!(
            TempTable::new("selp", 1).create_key_set(2),
            "DROP TABLE IF EXISTS temp.tk_selp_1; CREATE TEMP TABLE tk_selp_1(k0, k1, PRIMARY KEY(k0, k1)) WITHOUT ROWID;"
        );
        assert_eq!(
            TempTable::stage(3).create_index_on(&[0, 2]),
            "CREATE INDEX IF NOT EXISTS temp.tk_stage_3_c0_c2 ON tk_stage_3(c0, c2);"
        );
        // The statements work as written.
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TEMP TABLE tk_stage_3(c0, c1, c2)")
            .unwrap();
        conn.execute_batch(&TempTable::stage(3).create_index_on(&[0, 2]))
            .unwrap();
        conn.execute_batch(&sel.create_rowid_set()).unwrap();
        conn.execute_batch(&TempTable::new("selp", 1).create_key_set(2))
            .unwrap();
        conn.execute_batch(&TempTable::new("selp", 1).create_key_set(2))
            .unwrap();
    }
}
