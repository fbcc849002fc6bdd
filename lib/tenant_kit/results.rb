# frozen_string_literal: true

module TenantKit
  # Result objects: Structs, so `to_h` (symbol keys), `==` and pattern
  # matching work as Ruby code expects. Table names stay String keys.
  module Results
    module_function

    def symbolize(value)
      case value
      when Hash then value.to_h { |k, v| [k.to_sym, symbolize(v)] }
      when Array then value.map { |v| symbolize(v) }
      else value
      end
    end

    # A tenant id from JSON: a BLOB id ({"$base64" => ...}) becomes the
    # binary String the app stores; integers and text stay as they are.
    def tenant_id(value)
      return value unless value.is_a?(Hash) && value.keys == ["$base64"]

      value.fetch("$base64").unpack1("m0")
    end

    # { "tasks" => { "insert" => 1 } } -> { "tasks" => { insert: 1 } }
    def per_table(hash)
      (hash || {}).transform_values { |v| v.is_a?(Hash) ? symbolize(v) : v }
    end

    # What only:/except: selected: { mode: :subtree, tables: [...], roots: [...],
    # rows: { "tasks" => 3 }, left_out: { "users" => 3 } }; nil for a whole restore.
    def selection(value)
      return nil if value.nil?

      {
        mode: value["mode"].to_sym, tables: value["tables"], roots: value["roots"] || [],
        rows: value["rows"], left_out: value["left_out"]
      }
    end
  end

  BackupResult = Struct.new(
    :path, :tables, :shared, :rows, :blobs, :blob_bytes, :bytes, :sha256, :dump_sha256,
    :errors, :skipped, :left_out_cross_tenant, :journal_mode, :snapshot_ms, :duration_ms, :encrypted, :recipients,
    keyword_init: true
  ) do
    def self.from_native(json)
      data = JSON.parse(json)
      new(
        path: data["path"], tables: data["tables"], shared: data["shared"] || {}, rows: data["rows"],
        blobs: data["blobs"],
        blob_bytes: data["blob_bytes"], bytes: data["bytes"], sha256: data["sha256"],
        dump_sha256: data["dump_sha256"], errors: Results.symbolize(data["errors"]),
        skipped: Results.symbolize(data["skipped"]), left_out_cross_tenant: data["left_out_cross_tenant"] || {},
        journal_mode: data["journal_mode"],
        snapshot_ms: data["snapshot_ms"], duration_ms: data["duration_ms"],
        encrypted: data["encrypted"], recipients: data["recipients"]
      )
    end

    def ok?
      errors.empty?
    end
  end

  RestoreResult = Struct.new(
    :dry_run, :source_tenant_id, :tenant_id, :planned, :restored, :written, :purged, :conflicts,
    :conflict_count, :blobs, :renamed_keys, :tenant_row_created, :plan_ms, :lock_ms, :duration_ms, :errors,
    :id_map,
    :selection,
    :shared,
    :encrypted,
    keyword_init: true
  ) do
    def self.from_native(json)
      data = JSON.parse(json)
      new(
        selection: Results.selection(data["selection"]),
        dry_run: data["dry_run"], source_tenant_id: Results.tenant_id(data["source_tenant_id"]),
        tenant_id: Results.tenant_id(data["tenant_id"]),
        planned: Results.per_table(data["planned"]), restored: data["restored"], written: data["written"],
        purged: data["purged"],
        conflicts: Results.symbolize(data["conflicts"]), conflict_count: data["conflict_count"],
        blobs: Results.symbolize(data["blobs"]), renamed_keys: data["renamed_keys"],
        tenant_row_created: data["tenant_row_created"], plan_ms: data["plan_ms"], lock_ms: data["lock_ms"],
        duration_ms: data["duration_ms"], errors: Results.symbolize(data["errors"]),
        id_map: data["id_map"] || {},
        shared: Results.per_table(data["shared"]),
        encrypted: data["encrypted"]
      )
    end

    def dry_run?
      dry_run
    end

    def conflicts?
      conflict_count.positive?
    end
  end

  VerifyResult = Struct.new(
    :ok, :path, :format_version, :tool_version, :created_at, :tenant_id, :tenant_column,
    :tables, :rows, :blobs, :bytes, :schema_version, :errors, :encrypted,
    keyword_init: true
  ) do
    def self.from_native(json)
      data = JSON.parse(json)
      new(**members.to_h { |m| [m, data[m.to_s]] }, tenant_id: Results.tenant_id(data["tenant_id"]),
                                                     errors: Results.symbolize(data["errors"]))
    end

    def ok?
      ok
    end
  end
end

module TenantKit
  # TenantKit.explain's report. tables: [{ name:, class:, reason: }] (class
  # "tenants", "owned", "derived", "skipped" or "not_tenant_data"),
  # references: [{ table:, columns:, references:, primary_key:,
  # polymorphic: { type_column:, class: } or nil, source: }], guesses:
  # [{ table:, column:, references: }] (naming guesses nothing confirms).
  ExplainReport = Struct.new(:tenant_column, :tenant_table, :tables, :references, :guesses, keyword_init: true) do
    def self.from_native(json)
      data = JSON.parse(json)
      new(**members.to_h { |m| [m, Results.symbolize(data[m.to_s])] })
    end

    # The tables of one class ("owned", "skipped", ...), by name.
    def tables_of(klass)
      tables.select { |t| t[:class] == klass.to_s }.map { |t| t[:name] }
    end

    # The report as the C API and `tenant_kit explain --json` give it.
    def to_json(*args)
      to_h.to_json(*args)
    end
  end
end
