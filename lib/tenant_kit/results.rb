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
  end

  BackupResult = Struct.new(
    :path, :tables, :rows, :blobs, :blob_bytes, :bytes, :sha256, :dump_sha256,
    :errors, :skipped, :journal_mode, :snapshot_ms, :duration_ms, :encrypted, :recipients,
    keyword_init: true
  ) do
    def self.from_native(json)
      data = JSON.parse(json)
      new(
        path: data["path"], tables: data["tables"], rows: data["rows"], blobs: data["blobs"],
        blob_bytes: data["blob_bytes"], bytes: data["bytes"], sha256: data["sha256"],
        dump_sha256: data["dump_sha256"], errors: Results.symbolize(data["errors"]),
        skipped: Results.symbolize(data["skipped"]), journal_mode: data["journal_mode"],
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
    :encrypted,
    keyword_init: true
  ) do
    def self.from_native(json)
      data = JSON.parse(json)
      new(
        dry_run: data["dry_run"], source_tenant_id: Results.tenant_id(data["source_tenant_id"]),
        tenant_id: Results.tenant_id(data["tenant_id"]),
        planned: Results.per_table(data["planned"]), restored: data["restored"], written: data["written"],
        purged: data["purged"],
        conflicts: Results.symbolize(data["conflicts"]), conflict_count: data["conflict_count"],
        blobs: Results.symbolize(data["blobs"]), renamed_keys: data["renamed_keys"],
        tenant_row_created: data["tenant_row_created"], plan_ms: data["plan_ms"], lock_ms: data["lock_ms"],
        duration_ms: data["duration_ms"], errors: Results.symbolize(data["errors"]),
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
