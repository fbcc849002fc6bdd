//! The Rails naming conventions tenant_kit relies on when an app declares no
//! foreign keys: class name → table (`"TimeEntry"` → `time_entries`,
//! `"Admin::Note"` → `admin_notes`), `<thing>_id` → `<things>`, and a
//! `parent_id` with no `parents` table → its own table (a tree).

/// `"TimeEntry"` → `"time_entry"`, `"HTMLPage"` → `"html_page"`.
pub fn underscore(camel: &str) -> String {
    let chars: Vec<char> = camel.chars().collect();
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev_lower =
                i > 0 && (chars[i - 1].is_ascii_lowercase() || chars[i - 1].is_ascii_digit());
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            let prev_upper = i > 0 && chars[i - 1].is_ascii_uppercase();
            if i > 0 && (prev_lower || (prev_upper && next_lower)) {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// English plural of a lower-case word, covering the rules Rails' default
/// inflections apply to table names.
pub fn pluralize(word: &str) -> String {
    const IRREGULAR: &[(&str, &str)] = &[
        ("person", "people"),
        ("man", "men"),
        ("woman", "women"),
        ("child", "children"),
        ("sex", "sexes"),
        ("move", "moves"),
        ("zombie", "zombies"),
        ("ox", "oxen"),
        ("mouse", "mice"),
        ("louse", "lice"),
    ];
    const UNCOUNTABLE: &[&str] = &[
        "equipment",
        "information",
        "rice",
        "money",
        "species",
        "series",
        "fish",
        "sheep",
        "jeans",
        "police",
        "data",
        "metadata",
    ];
    if word.is_empty() || UNCOUNTABLE.iter().any(|u| word.ends_with(u)) {
        return word.to_string();
    }
    for (one, many) in IRREGULAR {
        if word == *one || word.ends_with(&format!("_{one}")) {
            return format!("{}{}", &word[..word.len() - one.len()], many);
        }
    }
    let ends = |s: &str| word.ends_with(s);
    let stem = |n: usize| &word[..word.len() - n];
    if ends("quiz") {
        format!("{word}zes")
    } else if ends("matrix") || ends("vertex") || ends("index") {
        format!("{}ices", stem(2))
    } else if ends("s") || ends("x") || ends("z") || ends("ch") || ends("sh") {
        if ends("ss") || ends("us") || ends("is") || !ends("s") {
            if ends("is") {
                format!("{}es", stem(2)) // analysis → analyses
            } else {
                format!("{word}es")
            }
        } else {
            word.to_string() // already plural ("news", "settings")
        }
    } else if ends("y") && !word[..word.len() - 1].ends_with(['a', 'e', 'i', 'o', 'u']) {
        format!("{}ies", stem(1))
    } else if ends("fe") {
        format!("{}ves", stem(2))
    } else if ends("lf") || ends("rf") || ends("eaf") || ends("arf") {
        format!("{}ves", stem(1))
    } else {
        format!("{word}s")
    }
}

/// The class name as Ruby resolves it from the top level: `"::Task"`,
/// `"Object::Task"` and `"::Object::Object::Task"` are all `Task`
/// (`"Task".constantize` and `"Object::Task".constantize` are one class).
pub fn canonical_class(class_name: &str) -> &str {
    let mut name = class_name;
    loop {
        let rest = name
            .strip_prefix("::")
            .or_else(|| name.strip_prefix("Object::"));
        match rest {
            Some(rest) => name = rest,
            None => return name,
        }
    }
}

/// The shorter names Ruby falls back to when a namespaced constant is
/// missing (`"Admin::Task".constantize` is `::Task` when `Admin` has no
/// `Task`): `"A::B::Task"` → `"B::Task"`, `"Task"`.
pub fn namespace_fallbacks(class_name: &str) -> impl Iterator<Item = &str> {
    let name = canonical_class(class_name);
    name.match_indices("::").map(move |(i, _)| &name[i + 2..])
}

/// Table Rails gives a model class name: `"Admin::Note"` → `"admin_notes"`,
/// `"ActiveStorage::Blob"` → `"active_storage_blobs"`, `"::Task"` and
/// `"Object::Task"` → `"tasks"`.
pub fn table_for_class(class_name: &str) -> String {
    let parts: Vec<String> = canonical_class(class_name)
        .split("::")
        .filter(|p| !p.is_empty())
        .map(underscore)
        .collect();
    match parts.split_last() {
        Some((last, namespace)) => {
            let mut name = namespace.join("_");
            if !name.is_empty() {
                name.push('_');
            }
            name.push_str(&pluralize(last));
            name
        }
        None => String::new(),
    }
}

/// Table a `<thing>_id` column points to by convention (`project_id` →
/// `projects`), or None when the column is not named that way.
pub fn table_for_reference(column: &str) -> Option<String> {
    let stem = column.strip_suffix("_id")?;
    (!stem.is_empty()).then(|| pluralize(stem))
}

/// Prefixes that qualify a reference without naming its table:
/// `related_category_id` and `parent_category_id` point at `categories`.
const QUALIFIERS: &[&str] = &["related_", "parent_"];

/// The stems a `<thing>_id` column may name a table by, best first:
/// `related_category_id` → `related_category`, then `category`.
pub fn reference_stems(column: &str) -> impl Iterator<Item = &str> {
    let stem = column.strip_suffix("_id").unwrap_or("");
    let unqualified = QUALIFIERS.iter().filter_map(move |q| stem.strip_prefix(q));
    std::iter::once(stem)
        .chain(unqualified)
        .filter(|s| !s.is_empty())
}

/// Whether values of `column` could equal keys in `key` by design: a text
/// column against an integer key (or the reverse) holds something else
/// (a provider's id); declared types we cannot tell apart match.
pub fn types_can_match(column: &crate::schema::Column, key: &crate::schema::Column) -> bool {
    let class = |c: &crate::schema::Column| match c.affinity_keyword() {
        "TEXT" => Some(true),
        // NUMERIC (`uuid`, `decimal`) may hold text or numbers.
        "INTEGER" => Some(false),
        _ => None,
    };
    !matches!((class(column), class(key)), (Some(a), Some(b)) if a != b)
}

/// The column a tree of rows of one table links by (`acts_as_tree`,
/// `closure_tree`, `belongs_to :parent, class_name: name`): a reference to
/// the row's own table when the schema has no `parents` table.
pub const TREE_PARENT_COLUMN: &str = "parent_id";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rails_table_names() {
        for (class, table) in [
            ("Task", "tasks"),
            ("TimeEntry", "time_entries"),
            ("Admin::Note", "admin_notes"),
            ("ActiveStorage::Attachment", "active_storage_attachments"),
            (
                "ActiveStorage::VariantRecord",
                "active_storage_variant_records",
            ),
            ("Person", "people"),
            ("Company", "companies"),
            ("Day", "days"),
            ("Box", "boxes"),
            ("Address", "addresses"),
            ("Status", "statuses"),
            ("Branch", "branches"),
            ("HTMLPage", "html_pages"),
            ("Setting", "settings"),
            ("::Task", "tasks"),
            ("Object::Task", "tasks"),
            ("::Object::Object::Task", "tasks"),
            ("Object::Admin::Note", "admin_notes"),
        ] {
            assert_eq!(table_for_class(class), table, "{class}");
        }
        assert_eq!(
            table_for_reference("account_id").as_deref(),
            Some("accounts")
        );
        assert_eq!(
            table_for_reference("category_id").as_deref(),
            Some("categories")
        );
        assert_eq!(table_for_reference("name"), None);
    }

    #[test]
    fn namespaces_fall_back_to_shorter_names() {
        let names: Vec<&str> = namespace_fallbacks("::Object::A::B::Task").collect();
        assert_eq!(names, ["B::Task", "Task"]);
        assert_eq!(namespace_fallbacks("Task").count(), 0);
    }
}
