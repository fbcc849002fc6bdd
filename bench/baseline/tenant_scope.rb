# frozen_string_literal: true

# Shared by the Ruby/ActiveRecord baselines (ruby_backup.rb, ruby_restore.rb):
# which rows belong to a tenant, found by introspection through the
# ActiveRecord connection, the way the app's original BackupTenantJob and
# RestoreTenantJob did it:
# - tables with the tenant column, parents first (from `*_id` column names
#   and declared foreign keys);
# - the tenants table (`tenant_id` -> `tenants`), the tenant's own row;
# - join tables (no primary key, no tenant column) through their first
#   `<parent>_id` column that names a tenant table (`tags_tasks.tag_id`);
# - ActiveStorage: attachments whose record_type maps the Rails way to a
#   tenant table, their blobs, the blobs' variant records and the variant
#   images attached to those.

require "active_record"
require "tsort"

class TenantScope
  SKIPPED = %w[schema_migrations ar_internal_metadata].freeze
  BLOBS = "active_storage_blobs"
  ATTACHMENTS = "active_storage_attachments"
  VARIANTS = "active_storage_variant_records"
  ACTIVE_STORAGE = [BLOBS, ATTACHMENTS, VARIANTS].freeze
  BATCH = 5_000

  attr_reader :conn, :tenant_column, :columns, :tenant_tables, :tenants_table, :join_tables

  def initialize(conn, tenant_column: "tenant_id")
    @conn = conn
    @tenant_column = tenant_column
    tables = conn.tables - SKIPPED # the adapter already hides sqlite_* tables
    @columns = tables.to_h { |t| [t, conn.columns(t).map(&:name)] }
    with_column = tables.select { |t| @columns[t].include?(tenant_column) }
    @tenant_tables = sort_parents_first(with_column)
    @tenants_table = tenant_column.delete_suffix("_id").pluralize
    @tenants_table = nil unless tables.include?(@tenants_table)
    # join table => [column, parent table]
    @join_tables = (tables - with_column - ACTIVE_STORAGE - [@tenants_table]).filter_map do |t|
      next unless conn.primary_key(t).nil?

      column = @columns[t].find { |c| c.end_with?("_id") && with_column.include?(parent_of(c)) }
      [t, [column, parent_of(column)]] if column
    end.to_h
    @active_storage = ACTIVE_STORAGE.all? { |t| tables.include?(t) }
  end

  def active_storage?
    @active_storage
  end

  def q(name)
    conn.quote_table_name(name)
  end

  def sql(template, *binds)
    ActiveRecord::Base.sanitize_sql_array([template, *binds])
  end

  # Yield the rows (Arrays, in `columns[table]` order) of `table` that match
  # `where` (SQL with its values already quoted), in batches of BATCH, by
  # keyset pagination on rowid: memory stays bounded and each batch is an
  # index seek.
  def each_batch(table, where)
    last = nil
    cols = @columns[table].map { |c| conn.quote_column_name(c) }.join(", ")
    loop do
      page = last ? " AND rowid > #{Integer(last)}" : ""
      result = conn.exec_query("SELECT rowid AS __rowid, #{cols} FROM #{q(table)} " \
                               "WHERE (#{where})#{page} ORDER BY rowid LIMIT #{BATCH}")
      break if result.rows.empty?

      last = result.rows.last.first
      yield result.rows.map { |row| row.drop(1) }
    end
  end

  # Ids of `table`'s rows of the tenant, in batches (for join tables).
  def each_id_batch(table, tenant_id)
    last = 0
    loop do
      ids = conn.select_values(sql("SELECT id FROM #{q(table)} WHERE #{q(tenant_column)} = ? AND id > ? " \
                                   "ORDER BY id LIMIT #{BATCH}", tenant_id, last))
      break if ids.empty?

      last = ids.last
      yield ids
    end
  end

  # WHERE clause selecting the tenant's rows of a table with the tenant column.
  def tenant_where(tenant_id)
    sql("#{q(tenant_column)} = ?", tenant_id)
  end

  # ActiveStorage rows of the tenant: { attachments: [ids], blobs: [ids],
  # variants: [ids] }. Attachment and blob counts are small next to the
  # tenant's rows, so ids are collected in memory.
  def active_storage_ids(tenant_id)
    return { attachments: [], blobs: [], variants: [] } unless active_storage?

    attachments = []
    blob_ids = []
    conn.select_values("SELECT DISTINCT record_type FROM #{q(ATTACHMENTS)}").each do |type|
      table = type.tableize.tr("/", "_") # "Admin::Note" -> "admin_notes"
      next unless tenant_tables.include?(table)

      conn.select_rows(sql("SELECT id, blob_id FROM #{q(ATTACHMENTS)} WHERE record_type = ? AND record_id IN " \
                           "(SELECT id FROM #{q(table)} WHERE #{q(tenant_column)} = ?)", type, tenant_id))
          .each { |id, blob| attachments << id; blob_ids << blob }
    end
    variants = blob_ids.each_slice(500).flat_map do |slice|
      conn.select_values("SELECT id FROM #{q(VARIANTS)} WHERE blob_id IN (#{slice.map { |i| Integer(i) }.join(',')})")
    end
    variants.each_slice(500) do |slice|
      conn.select_rows("SELECT id, blob_id FROM #{q(ATTACHMENTS)} WHERE record_type = 'ActiveStorage::VariantRecord' " \
                       "AND record_id IN (#{slice.map { |i| Integer(i) }.join(',')})")
          .each { |id, blob| attachments << id; blob_ids << blob }
    end
    { attachments: attachments.uniq, blobs: blob_ids.uniq, variants: variants.uniq }
  end

  # "tag_id" -> "tags", "parent_id" -> nil unless a parents table exists.
  def parent_of(column)
    column&.delete_suffix("_id")&.pluralize
  end

  private

  # Parents before children: an edge for every `<x>_id` column naming
  # another of `tables` and for every declared foreign key.
  def sort_parents_first(tables)
    deps = tables.to_h do |t|
      by_name = @columns[t].filter_map { |c| parent_of(c) if c.end_with?("_id") }
      declared = conn.foreign_keys(t).map(&:to_table)
      [t, ((by_name + declared) & tables) - [t]]
    end
    each_node = ->(&b) { tables.each(&b) }
    each_child = ->(n, &b) { deps[n].each(&b) }
    TSort.tsort(each_node, each_child)
  end
end
