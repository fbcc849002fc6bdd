//! The rules that decide which rows are a tenant's, on schemas written by
//! hand: no database, so each rule is tested alone and fast.

use super::classes::PolymorphicClasses;
use super::{Membership, ReferenceSource, RelationHint, ScopeOptions, TableRule, TenantScope};
use crate::schema::{Column, ForeignKey, Schema, Table};

/// A table being written: `table("tasks").id().col("tenant_id").fk("user_id", "users")`.
struct T(Table);

fn table(name: &str) -> T {
    T(Table {
        name: name.to_string(),
        columns: Vec::new(),
        foreign_keys: Vec::new(),
        without_rowid: false,
        skip: None,
    })
}

impl T {
    fn column(mut self, name: &str, decl_type: &str, pk_position: u32) -> Self {
        self.0.columns.push(Column {
            name: name.to_string(),
            decl_type: decl_type.to_string(),
            not_null: false,
            has_default: false,
            pk_position,
            generated: false,
        });
        self
    }

    /// `id INTEGER PRIMARY KEY`.
    fn id(self) -> Self {
        self.column("id", "INTEGER", 1)
    }

    fn col(self, name: &str) -> Self {
        self.column(name, "INTEGER", 0)
    }

    fn text(self, name: &str) -> Self {
        self.column(name, "TEXT", 0)
    }

    /// `name INTEGER REFERENCES parent(id)`.
    fn fk(mut self, name: &str, parent: &str) -> Self {
        self.0.foreign_keys.push(ForeignKey {
            from: vec![name.to_string()],
            table: parent.to_string(),
            to: vec!["id".to_string()],
        });
        self.col(name)
    }
}

/// Tables in name order, as `Schema::read` lists them.
fn schema(tables: impl IntoIterator<Item = T>) -> Schema {
    let mut tables: Vec<Table> = tables.into_iter().map(|t| t.0).collect();
    tables.sort_by(|a, b| a.name.cmp(&b.name));
    Schema {
        tables,
        migration_version: None,
    }
}

fn scope(schema: &Schema, options: &ScopeOptions) -> TenantScope {
    TenantScope::from_schema(schema, options, PolymorphicClasses::default()).unwrap()
}

fn membership<'s>(scope: &'s TenantScope, table: &str) -> Option<&'s Membership> {
    scope.table(table).map(|t| &t.membership)
}

/// (parent, source) of each reference that makes `table`'s rows members.
fn owners(scope: &TenantScope, table: &str) -> Vec<(String, ReferenceSource)> {
    match membership(scope, table) {
        Some(Membership::Derived { owners, .. }) => owners
            .iter()
            .map(|r| (r.parent.clone(), r.source))
            .collect(),
        other => panic!("{table} is not derived: {other:?}"),
    }
}

fn skip_reason<'s>(scope: &'s TenantScope, table: &str) -> Option<&'s str> {
    scope
        .skipped
        .iter()
        .find(|(t, _)| t == table)
        .map(|(_, reason)| reason.as_str())
}

fn order(scope: &TenantScope) -> Vec<&str> {
    scope.tables.iter().map(|t| t.name.as_str()).collect()
}

const NOT_REACHED: &str = "no tenant_id column and no reference to tenant rows";

fn tenants() -> T {
    table("tenants").id()
}

#[test]
fn a_table_with_the_tenant_column_is_owned_and_the_tenants_table_holds_one_row() {
    let s = schema([
        tenants(),
        table("tasks").id().fk("tenant_id", "tenants"),
        table("settings").id().text("name"),
    ]);
    let scope = scope(&s, &ScopeOptions::default());
    assert_eq!(
        membership(&scope, "tenants"),
        Some(&Membership::TenantRow { key: "id".into() })
    );
    assert_eq!(membership(&scope, "tasks"), Some(&Membership::TenantColumn));
    assert_eq!(membership(&scope, "settings"), None);
    assert_eq!(skip_reason(&scope, "settings"), Some(NOT_REACHED));
    assert_eq!(order(&scope), ["tenants", "tasks"]);
}

#[test]
fn rows_reached_through_a_foreign_key_naming_or_a_polymorphic_pair_are_derived() {
    let s = schema([
        tenants(),
        table("tasks").id().col("tenant_id"),
        table("notes").id().fk("task_id", "tasks"),
        table("marks").id().col("note_id"),
        table("comments")
            .id()
            .col("commentable_id")
            .text("commentable_type"),
    ]);
    let options = ScopeOptions::default();
    let classes = PolymorphicClasses::default().with("comments", "commentable_type", ["Note"]);
    let scope = TenantScope::from_schema(&s, &options, classes).unwrap();
    assert_eq!(
        owners(&scope, "notes"),
        [("tasks".into(), ReferenceSource::ForeignKey)]
    );
    assert_eq!(
        owners(&scope, "marks"),
        [("notes".into(), ReferenceSource::Naming)]
    );
    assert_eq!(
        owners(&scope, "comments"),
        [("notes".into(), ReferenceSource::PolymorphicNaming)]
    );
    let Some(Membership::Derived { owners, .. }) = membership(&scope, "comments") else {
        unreachable!()
    };
    assert_eq!(
        owners[0].polymorphic,
        Some(("commentable_type".into(), "Note".into()))
    );
    let guessed: Vec<(&str, &str)> = scope
        .guesses
        .iter()
        .map(|g| (g.table.as_str(), g.references.as_str()))
        .collect();
    assert_eq!(guessed, [("marks", "notes")]);
    // Parents before children: the tenants row, then by the row, then
    // derived tables after what they hang off.
    assert_eq!(
        order(&scope),
        ["tenants", "tasks", "notes", "comments", "marks"]
    );

    // No row names a class: the pair refers to nothing.
    let without = scope_of_classes(&s, PolymorphicClasses::default());
    assert_eq!(membership(&without, "comments"), None);
    assert_eq!(skip_reason(&without, "comments"), Some(NOT_REACHED));
}

fn scope_of_classes(s: &Schema, classes: PolymorphicClasses) -> TenantScope {
    TenantScope::from_schema(s, &ScopeOptions::default(), classes).unwrap()
}

#[test]
fn a_join_table_of_two_owned_tables_is_derived_from_both() {
    let s = schema([
        tenants(),
        table("tasks").id().col("tenant_id"),
        table("tags").id().col("tenant_id"),
        table("tags_tasks")
            .fk("tag_id", "tags")
            .fk("task_id", "tasks"),
    ]);
    let scope = scope(&s, &ScopeOptions::default());
    assert_eq!(
        owners(&scope, "tags_tasks"),
        [
            ("tags".into(), ReferenceSource::ForeignKey),
            ("tasks".into(), ReferenceSource::ForeignKey)
        ]
    );
    assert_eq!(order(&scope), ["tenants", "tags", "tasks", "tags_tasks"]);
    assert_eq!(
        scope.may_cross_tenants(&s),
        ["tags_tasks".to_string()].into()
    );
}

#[test]
fn a_skipped_table_breaks_the_chain_of_references() {
    let s = schema([
        tenants(),
        table("tasks").id().col("tenant_id"),
        table("notes").id().fk("task_id", "tasks"),
        table("note_marks").id().fk("note_id", "notes"),
    ]);
    let chained = scope(&s, &ScopeOptions::default());
    assert_eq!(
        owners(&chained, "note_marks"),
        [("notes".into(), ReferenceSource::ForeignKey)]
    );

    let options = ScopeOptions {
        tables: [("notes".to_string(), TableRule::Skip)].into(),
        ..ScopeOptions::default()
    };
    let scope = scope(&s, &options);
    assert_eq!(membership(&scope, "notes"), None);
    assert_eq!(membership(&scope, "note_marks"), None);
    assert_eq!(
        skip_reason(&scope, "notes"),
        Some("skipped by the caller (tables:)")
    );
    assert_eq!(skip_reason(&scope, "note_marks"), Some(NOT_REACHED));
    assert!(scope
        .references
        .iter()
        .all(|r| r.table != "notes" && r.parent != "notes"));
}

#[test]
fn a_table_without_the_tenant_column_that_owned_rows_refer_to_is_shared_not_owned() {
    let s = schema([
        tenants(),
        table("users").id().text("email"),
        table("tasks").id().col("tenant_id").fk("user_id", "users"),
        // The user's own reference to a task does not make users owned:
        // they are referred to, not hanging off.
        table("profiles").id().fk("user_id", "users"),
    ]);
    let scope = scope(&s, &ScopeOptions::default());
    assert_eq!(membership(&scope, "users"), None);
    let shared: Vec<&str> = scope.shared.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(shared, ["users"]);
    let Membership::Shared { referenced_by } = &scope.shared[0].membership else {
        panic!("{:?}", scope.shared[0].membership)
    };
    assert_eq!(referenced_by.len(), 1);
    assert_eq!(
        (
            referenced_by[0].table.as_str(),
            referenced_by[0].parent.as_str()
        ),
        ("tasks", "users")
    );
    // Rows that refer to a shared row only are nobody's.
    assert_eq!(membership(&scope, "profiles"), None);
    assert_eq!(skip_reason(&scope, "profiles"), Some(NOT_REACHED));
}

#[test]
fn a_hint_overrides_what_naming_would_guess() {
    let s = schema([
        tenants(),
        table("tasks").id().col("tenant_id"),
        table("owners").id(),
        table("messages").id(),
        table("audits").id().col("owner_id").col("message_id"),
    ]);
    // By naming alone: owner_id → owners, message_id → messages, neither
    // a tenant table, so audits are nobody's.
    let guessed = scope(&s, &ScopeOptions::default());
    assert_eq!(membership(&guessed, "audits"), None);
    assert!(guessed.references.iter().any(|r| r.table == "audits"
        && r.parent == "owners"
        && r.source == ReferenceSource::Naming));

    let hint = |column: &str, references: Option<&str>| RelationHint {
        table: "audits".into(),
        column: vec![column.into()],
        references: references.map(String::from),
        primary_key: Vec::new(),
    };
    let options = ScopeOptions {
        relations: vec![hint("owner_id", Some("tasks")), hint("message_id", None)],
        ..ScopeOptions::default()
    };
    let scope = scope(&s, &options);
    assert_eq!(
        owners(&scope, "audits"),
        [("tasks".into(), ReferenceSource::Hint)]
    );
    let from_audits: Vec<(&str, &str)> = scope
        .references
        .iter()
        .filter(|r| r.table == "audits")
        .map(|r| (r.columns[0].as_str(), r.parent.as_str()))
        .collect();
    assert_eq!(from_audits, [("owner_id", "tasks")]);
    assert!(scope.guesses.is_empty(), "{:?}", scope.guesses);
}

#[test]
fn a_cycle_is_ordered_the_same_way_every_time() {
    // alphas and betas refer to each other; each waits for the other.
    let s = schema([
        tenants(),
        table("tasks").id().col("tenant_id"),
        table("betas")
            .id()
            .fk("task_id", "tasks")
            .fk("alpha_id", "alphas"),
        table("alphas")
            .id()
            .fk("task_id", "tasks")
            .fk("beta_id", "betas"),
        table("gammas").id().fk("beta_id", "betas"),
    ]);
    let first = scope(&s, &ScopeOptions::default());
    // Broken at the table with the fewest unmet parents, schema (name)
    // order among equals: alphas, then what waited for it.
    assert_eq!(
        order(&first),
        ["tenants", "tasks", "alphas", "betas", "gammas"]
    );
    for _ in 0..3 {
        assert_eq!(order(&scope(&s, &ScopeOptions::default())), order(&first));
    }
}
