#!/usr/bin/env ruby
# frozen_string_literal: true

# Baseline for the backup benchmark: the app's original BackupTenantJob as a
# plain Ruby/ActiveRecord program, written the way a careful Rails developer
# would (not a strawman): raw rows through the ActiveRecord connection in
# keyset-paginated batches (no model instantiation), one read transaction for
# a consistent snapshot, streaming NDJSON to a temp file, per-table counts and
# SHA-256 in the manifest, blob files streamed into a tar
# (Gem::Package::TarWriter) through Zlib gzip level 6, written under a temp
# name and renamed. The archive follows tenant_kit's format version 1
# (DESIGN.md), so TenantKit.verify / .restore can read it too.
#
#   ruby bench/baseline/ruby_backup.rb --database db.sqlite3 --tenant-id 1 \
#        --output-dir out --storage-root storage [--tenant-column tenant_id]
#
# Prints progress to stderr and, as its last stdout line, `RESULT <json>`
# (path, tables, blobs, bytes, sha256, errors, seconds).

require "optparse"
require "time"
require "json"
require "zlib"
require "digest"
require "base64"
require "fileutils"
require "tmpdir"
require "rubygems/package"
require_relative "tenant_scope"

class RubyBackup
  FORMAT = "tenant_kit"
  FORMAT_VERSION = "1.0"

  # An IO for Zlib::GzipWriter that hashes what it writes to the file.
  class HashingFile
    attr_reader :digest

    def initialize(file)
      @file = file
      @digest = Digest::SHA256.new
    end

    def write(data)
      @digest << data
      @file.write(data)
    end
  end

  def initialize(database:, tenant_id:, output_dir:, storage_root:, tenant_column: "tenant_id", log: $stderr)
    @database = database
    @tenant_id = Integer(tenant_id)
    @output_dir = output_dir
    @storage_root = storage_root
    @tenant_column = tenant_column
    @log = log
  end

  def run
    ActiveRecord::Base.establish_connection(adapter: "sqlite3", database: @database)
    conn = ActiveRecord::Base.connection
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    Dir.mktmpdir("ruby_backup", @output_dir) do |tmp|
      dump_path = File.join(tmp, "dump.jsonl")
      manifest = nil
      # One read transaction: every SELECT sees the same snapshot.
      conn.transaction do
        scope = TenantScope.new(conn, tenant_column: @tenant_column)
        manifest = dump(scope, dump_path)
      end
      archive = write_archive(tmp, dump_path, manifest)
      {
        "path" => archive[:path], "tables" => manifest["tables"].to_h { |t| [t["name"], t["rows"]] },
        "blobs" => manifest["blobs"].size, "bytes" => File.size(archive[:path]), "sha256" => archive[:sha256],
        "errors" => manifest["errors"],
        "seconds" => (Process.clock_gettime(Process::CLOCK_MONOTONIC) - started).round(3),
      }
    end
  ensure
    ActiveRecord::Base.remove_connection
  end

  private

  def progress(step, **data)
    @log&.puts(JSON.generate({ step: step, at: Time.now.utc.iso8601 }.merge(data)))
  end

  # Write dump.jsonl (parents first) and return the manifest Hash.
  def dump(scope, dump_path)
    conn = scope.conn
    tables = {}
    digest = Digest::SHA256.new
    File.open(dump_path, "wb") do |out|
      write_rows = lambda do |table, rows|
        cols = scope.columns[table]
        entry = tables[table] ||= { "rows" => 0, "columns" => cols }
        rows.each do |values|
          row = {}
          cols.each_with_index do |c, i|
            v = values[i]
            # Binary strings are SQLite BLOBs; everything else maps to JSON as is.
            row[c] = v.is_a?(String) && v.encoding == Encoding::BINARY ? { "$base64" => Base64.strict_encode64(v) } : v
          end
          line = JSON.generate({ "table" => table, "row" => row }) << "\n"
          digest << line
          out.write(line)
        end
        entry["rows"] += rows.size
      end
      progress(:scan_tables, tables: scope.tenant_tables.size + scope.join_tables.size)

      if scope.tenants_table
        scope.each_batch(scope.tenants_table, scope.sql("id = ?", @tenant_id)) { |rows| write_rows.call(scope.tenants_table, rows) }
      end
      scope.tenant_tables.each do |table|
        scope.each_batch(table, scope.tenant_where(@tenant_id)) { |rows| write_rows.call(table, rows) }
        progress(:dump_progress, table: table, processed: tables.dig(table, "rows") || 0)
      end
      scope.join_tables.each do |table, (column, parent)|
        scope.each_id_batch(parent, @tenant_id) do |ids|
          rows = conn.select_rows("SELECT #{scope.columns[table].map { |c| conn.quote_column_name(c) }.join(', ')} " \
                                  "FROM #{scope.q(table)} WHERE #{conn.quote_column_name(column)} IN (#{ids.join(',')})")
          write_rows.call(table, rows)
        end
        progress(:dump_progress, table: table, processed: tables.dig(table, "rows") || 0)
      end
      @blobs = []
      if scope.active_storage?
        ids = scope.active_storage_ids(@tenant_id)
        { TenantScope::BLOBS => ids[:blobs], TenantScope::VARIANTS => ids[:variants],
          TenantScope::ATTACHMENTS => ids[:attachments] }.each do |table, id_list|
          id_list.each_slice(TenantScope::BATCH) do |slice|
            scope.each_batch(table, "id IN (#{slice.join(',')})") do |rows|
              write_rows.call(table, rows)
              if table == TenantScope::BLOBS
                cols = scope.columns[table]
                rows.each { |r| @blobs << cols.zip(r).to_h.slice("key", "byte_size", "checksum") }
              end
            end
          end
          progress(:dump_progress, table: table, processed: tables.dig(table, "rows") || 0)
        end
      end
    end
    schema_version = conn.select_value("SELECT max(version) FROM schema_migrations") rescue nil
    errors = []
    blobs = @blobs.filter_map do |b|
      file = File.join(@storage_root, b["key"][0, 2], b["key"][2, 2], b["key"])
      unless File.file?(file)
        errors << { "kind" => "missing_blob_file", "key" => b["key"], "message" => "#{file} is missing" }
        next
      end
      { "key" => b["key"], "size" => File.size(file), "checksum" => b["checksum"],
        "sha256" => Digest::SHA256.file(file).hexdigest, "file" => file }
    end
    # The manifest layout tenant_kit writes (format version 1.0).
    schema = scope.columns.keys.sort.to_h do |t|
      [t, conn.exec_query("PRAGMA table_info(#{scope.q(t)})").map do |c|
        { "name" => c["name"], "type" => c["type"], "not_null" => c["notnull"] == 1, "primary_key" => c["pk"].to_i.positive? }
      end]
    end
    {
      "format" => FORMAT, "format_version" => FORMAT_VERSION, "tool_version" => "ruby_backup baseline",
      "created_at" => Time.now.utc.iso8601(3),
      "tenant" => { "id" => @tenant_id, "column" => @tenant_column, "table" => scope.tenants_table },
      "source" => { "sqlite_version" => SQLite3::SQLITE_VERSION, "schema_version" => schema_version, "schema" => schema },
      "tables" => tables.map { |name, t| { "name" => name, "columns" => t["columns"], "rows" => t["rows"], "scope" => scope_of(scope, name) } },
      "skipped" => TenantScope::SKIPPED.map { |name| { "name" => name, "reason" => "Rails metadata, not tenant data" } },
      "dump" => { "name" => "dump.jsonl", "size" => File.size(dump_path), "sha256" => digest.hexdigest },
      "blobs" => blobs,
      "errors" => errors,
    }
  end

  # How the rows of `table` were chosen, for the manifest.
  def scope_of(scope, table)
    if table == scope.tenants_table then "tenant_row"
    elsif scope.tenant_tables.include?(table) then "tenant_column"
    elsif (column, parent = scope.join_tables[table]) then "via #{table}.#{column} -> #{parent}"
    else "via ActiveStorage (attachments.record_type/record_id, blob_id)"
    end
  end

  # tar (manifest.json, dump.jsonl, blobs/<key>) | gzip -6 into a temp file,
  # then rename to tenant_<id>_<UTC yyyymmddHHMMSS>.tar.gz with mode 0600.
  def write_archive(tmp, dump_path, manifest)
    final = File.join(@output_dir, "tenant_#{@tenant_id}_#{Time.now.utc.strftime('%Y%m%d%H%M%S')}.tar.gz")
    partial = File.join(tmp, "archive.tar.gz.partial")
    manifest_json = JSON.pretty_generate(manifest.merge("blobs" => manifest["blobs"].map { |b| b.except("file") }))
    sha = nil
    File.open(partial, "wb", 0o600) do |file|
      hashing = HashingFile.new(file)
      gz = Zlib::GzipWriter.new(hashing, Zlib::DEFAULT_COMPRESSION)
      Gem::Package::TarWriter.new(gz) do |tar|
        tar.add_file_simple("manifest.json", 0o600, manifest_json.bytesize) { |io| io.write(manifest_json) }
        copy_into(tar, "dump.jsonl", dump_path)
        manifest["blobs"].each { |b| copy_into(tar, "blobs/#{b['key']}", b["file"]) }
      end
      gz.finish
      sha = hashing.digest.hexdigest
    end
    File.rename(partial, final)
    progress(:archive_created, path: final, bytes: File.size(final))
    { path: final, sha256: sha }
  end

  def copy_into(tar, name, path)
    tar.add_file_simple(name, 0o600, File.size(path)) do |io|
      File.open(path, "rb") do |f|
        buffer = String.new(capacity: 1 << 16)
        io.write(buffer) while f.read(1 << 16, buffer)
      end
    end
  end
end

if $PROGRAM_NAME == __FILE__
  options = { tenant_column: "tenant_id" }
  OptionParser.new do |o|
    o.on("--database PATH") { |v| options[:database] = v }
    o.on("--tenant-id ID", Integer) { |v| options[:tenant_id] = v }
    o.on("--output-dir DIR") { |v| options[:output_dir] = v }
    o.on("--storage-root DIR") { |v| options[:storage_root] = v }
    o.on("--tenant-column NAME") { |v| options[:tenant_column] = v }
    o.on("--quiet") { options[:log] = nil }
  end.parse!
  # For the benchmark harness: this process's RSS before the job and its peak.
  vm_kb = ->(field) { File.read("/proc/self/status")[/^#{field}:\s+(\d+)/, 1].to_i }
  rss_start = vm_kb.call("VmRSS")
  result = RubyBackup.new(**options).run
  puts "RESULT #{JSON.generate(result.merge('rss_start_kb' => rss_start, 'hwm_kb' => vm_kb.call('VmHWM')))}"
end
