#!/usr/bin/env ruby
# frozen_string_literal: true

# Baseline for the restore benchmark: the app's original RestoreTenantJob
# (purge + restore) as a plain Ruby/ActiveRecord program written with care:
# - parse: extract the tar.gz (Gem::Package::TarReader over Zlib) into a temp
#   dir, refusing any entry other than manifest.json, dump.jsonl and
#   blobs/<key>, links and duplicates; check the format version, the
#   SHA-256 of dump.jsonl and of each blob, and the blobs' ActiveStorage MD5;
# - one transaction (deferred foreign keys): delete the tenant's rows (the
#   same set the backup takes, children first; the tenants row stays), then
#   stream dump.jsonl and `insert_all!` each table's rows in batches of 1,000
#   (insert_all! never overwrites: a primary key that exists raises and
#   everything rolls back); the tenants row only if missing;
# - blob files written (temp + rename) before commit, removed again on
#   rollback; files of purged blobs that were not restored removed after
#   commit; row counts checked against the manifest before commit.
# No remap, no dry run, no key renaming: the benchmark restores a tenant's own
# archive over itself.
#
#   ruby bench/baseline/ruby_restore.rb --database db.sqlite3 --archive a.tar.gz \
#        --tenant-id 1 --storage-root storage [--tenant-column tenant_id] [--no-purge]
#
# Reads archives of tenant_kit's format version 1 from TenantKit.backup or from
# ruby_backup.rb. Last stdout line: `RESULT <json>` (purged, restored, blobs,
# lock_seconds, seconds, errors).

require "optparse"
require "json"
require "time"
require "zlib"
require "digest"
require "base64"
require "fileutils"
require "tmpdir"
require "rubygems/package"
require_relative "tenant_scope"

class RubyRestore
  BATCH = 1_000
  ENTRY = %r{\A(?:manifest\.json|dump\.jsonl|blobs/[0-9a-z]{1,64})\z}.freeze

  class Error < StandardError; end

  # One anonymous-but-named model per table, for insert_all!.
  module Models; end

  def initialize(database:, archive:, tenant_id:, storage_root:, tenant_column: "tenant_id", purge: true, log: $stderr)
    @database = database
    @archive = archive
    @tenant_id = Integer(tenant_id)
    @storage_root = storage_root
    @tenant_column = tenant_column
    @purge = purge
    @log = log
  end

  def run
    started = clock
    Dir.mktmpdir("ruby_restore") do |tmp|
      manifest = extract(tmp)
      verify(tmp, manifest)
      ActiveRecord::Base.establish_connection(adapter: "sqlite3", database: @database)
      conn = ActiveRecord::Base.connection
      scope = TenantScope.new(conn, tenant_column: @tenant_column)
      written = []
      purged = {}
      purged_keys = []
      restored = Hash.new(0)
      restored_keys = []
      lock_started = nil
      begin
        conn.transaction do
          conn.execute("PRAGMA defer_foreign_keys = ON")
          lock_started = clock
          purged, purged_keys = purge(scope) if @purge
          restored, restored_keys = insert_rows(scope, tmp)
          check_counts(manifest, restored)
          restored_keys.each { |key| written << write_blob(tmp, key) }
          progress(:commit)
        end
      rescue StandardError
        written.compact.each { |path| FileUtils.rm_f(path) }
        raise
      end
      lock_seconds = clock - lock_started
      # Only now that the rows are gone for good: files nobody uses any more.
      (purged_keys - restored_keys).each { |key| FileUtils.rm_f(disk_path(key)) }
      {
        "dry_run" => false, "purged" => purged, "restored" => restored, "blobs" => restored_keys.size,
        "errors" => [], "lock_seconds" => lock_seconds.round(3), "seconds" => (clock - started).round(3),
      }
    end
  ensure
    ActiveRecord::Base.remove_connection if ActiveRecord::Base.connected?
  end

  private

  def clock
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end

  def progress(step, **data)
    @log&.puts(JSON.generate({ step: step, at: Time.now.utc.iso8601 }.merge(data)))
  end

  def disk_path(key)
    File.join(@storage_root, key[0, 2], key[2, 2], key)
  end

  # Unpack into tmp (only the names the format allows); return the manifest.
  def extract(tmp)
    seen = {}
    FileUtils.mkdir_p(File.join(tmp, "blobs"))
    Zlib::GzipReader.open(@archive) do |gz|
      Gem::Package::TarReader.new(gz).each do |entry|
        name = entry.full_name
        raise Error, "unexpected archive entry #{name.inspect}" unless entry.file? && ENTRY.match?(name)
        raise Error, "duplicate archive entry #{name}" if seen[name]

        seen[name] = true
        File.open(File.join(tmp, name), "wb") do |out|
          while (chunk = entry.read(1 << 16))
            out.write(chunk)
          end
        end
      end
    end
    raise Error, "archive has no manifest.json" unless seen["manifest.json"]
    raise Error, "archive has no dump.jsonl" unless seen["dump.jsonl"]

    manifest = JSON.parse(File.read(File.join(tmp, "manifest.json")))
    unless Integer(manifest["format_version"].to_s.split(".").first, exception: false) == 1
      raise Error, "unsupported archive format version #{manifest['format_version'].inspect}"
    end

    progress(:verify, entries: seen.size)
    manifest
  end

  # Hashes from the manifest. The format fixes what the manifest holds, not
  # every key name, so look for the usual spellings.
  def dump_sha256(manifest)
    manifest.dig("dump", "sha256") || manifest["dump_sha256"] ||
      manifest.dig("files", "dump.jsonl", "sha256") || manifest.dig("entries", "dump.jsonl", "sha256")
  end

  def manifest_blobs(manifest)
    list = manifest["blobs"]
    list = list.map { |k, v| v.merge("key" => k) } if list.is_a?(Hash)
    Array(list)
  end

  def manifest_counts(manifest)
    tables = manifest["tables"] || {}
    tables = tables.to_h { |t| [t["name"], t] } if tables.is_a?(Array)
    tables.transform_values { |v| v.is_a?(Hash) ? (v["rows"] || v["count"]) : v }.compact
  end

  def verify(tmp, manifest)
    expected = dump_sha256(manifest)
    raise Error, "manifest has no SHA-256 of dump.jsonl" unless expected
    raise Error, "dump.jsonl does not match its SHA-256" unless Digest::SHA256.file(File.join(tmp, "dump.jsonl")).hexdigest == expected

    manifest_blobs(manifest).each do |blob|
      file = File.join(tmp, "blobs", blob["key"].to_s)
      raise Error, "blob #{blob['key']} is missing from the archive" unless File.file?(file)

      sha = blob["sha256"]
      raise Error, "blob #{blob['key']} does not match its SHA-256" if sha && Digest::SHA256.file(file).hexdigest != sha
    end
  end

  def model_for(table)
    @models ||= {}
    @models[table] ||= begin
      klass = Class.new(ActiveRecord::Base) do
        self.table_name = table
        self.inheritance_column = nil # a "type" column is data here, not STI
      end
      Models.const_set("T#{@models.size}_#{table.gsub(/\W/, '_').camelize}", klass)
    end
  end

  # Delete the tenant's rows, children before parents. Returns [counts, blob keys].
  def purge(scope)
    conn = scope.conn
    counts = {}
    keys = []
    if scope.active_storage?
      ids = scope.active_storage_ids(@tenant_id)
      ids[:blobs].each_slice(500) do |slice|
        keys.concat(conn.select_values("SELECT key FROM #{scope.q(TenantScope::BLOBS)} WHERE id IN (#{slice.join(',')})"))
      end
      [[TenantScope::ATTACHMENTS, ids[:attachments]], [TenantScope::VARIANTS, ids[:variants]],
       [TenantScope::BLOBS, ids[:blobs]]].each do |table, list|
        counts[table] = list.each_slice(500).sum { |slice| model_for(table).where(id: slice).delete_all }
      end
    end
    scope.join_tables.each do |table, (column, parent)|
      counts[table] = conn.delete("DELETE FROM #{scope.q(table)} WHERE #{conn.quote_column_name(column)} IN " \
                                  "(SELECT id FROM #{scope.q(parent)} WHERE #{scope.tenant_where(@tenant_id)})")
    end
    scope.tenant_tables.reverse_each do |table|
      counts[table] = model_for(table).where(@tenant_column => @tenant_id).delete_all
      progress(:purge_progress, table: table, processed: counts[table])
    end
    [counts, keys]
  end

  # Stream dump.jsonl, insert_all! per table in batches. Returns [counts, blob keys].
  def insert_rows(scope, tmp)
    counts = Hash.new(0)
    keys = []
    batch = []
    table = nil
    flush = lambda do
      next if batch.empty?

      model_for(table).insert_all!(batch)
      counts[table] += batch.size
      batch = []
    end
    File.foreach(File.join(tmp, "dump.jsonl")) do |line|
      entry = JSON.parse(line)
      name = entry["table"]
      row = entry["row"]
      raise Error, "dump.jsonl names unknown table #{name.inspect}" unless scope.columns.key?(name)

      row.each do |k, v|
        next unless v.is_a?(Hash) && v.key?("$base64")

        # Binary::Data is quoted as x'..' whatever the column's declared type.
        row[k] = ActiveModel::Type::Binary::Data.new(Base64.strict_decode64(v["$base64"]))
      end
      if name == scope.tenants_table
        raise Error, "archive is of tenant #{row['id']}, not #{@tenant_id}" unless row["id"] == @tenant_id
        # The tenants row is created when missing and never overwritten.
        next if scope.conn.select_value(scope.sql("SELECT 1 FROM #{scope.q(name)} WHERE id = ?", @tenant_id))
      elsif row.key?(@tenant_column) && row[@tenant_column] != @tenant_id
        raise Error, "#{name} row of tenant #{row[@tenant_column].inspect} in an archive for tenant #{@tenant_id}"
      end
      keys << row["key"] if name == TenantScope::BLOBS
      if name != table || batch.size >= BATCH
        flush.call
        progress(:restore_progress, table: table, processed: counts[table]) if table && name != table
        table = name
      end
      batch << row
    end
    flush.call
    progress(:restore_progress, table: table, processed: counts[table]) if table
    @blob_rows = model_for(TenantScope::BLOBS).where(key: keys).pluck(:key, :byte_size, :checksum)
                                              .to_h { |k, *rest| [k, rest] } if scope.active_storage?
    [counts, keys]
  end

  def check_counts(manifest, restored)
    manifest_counts(manifest).each do |table, expected|
      got = restored[table] || 0
      # The tenants row is skipped when it exists already.
      next if got == expected || (got.zero? && expected == 1 && table == @tenant_column.delete_suffix("_id").pluralize)

      raise Error, "#{table}: archive manifest says #{expected} rows, dump.jsonl has #{got}"
    end
  end

  # Verify against the blob row (size, MD5) and move into the Disk layout.
  # Returns the path written, or nil when an identical file is already there.
  def write_blob(tmp, key)
    source = File.join(tmp, "blobs", key)
    size, checksum = @blob_rows.fetch(key)
    raise Error, "file of blob #{key} is missing from the archive" unless File.file?(source)
    unless File.size(source) == size && Digest::MD5.file(source).base64digest == checksum
      raise Error, "file of blob #{key} does not match its byte_size/checksum"
    end

    target = disk_path(key)
    return nil if File.file?(target) && File.size(target) == size && Digest::MD5.file(target).base64digest == checksum

    FileUtils.mkdir_p(File.dirname(target))
    FileUtils.cp(source, "#{target}.restoring")
    File.rename("#{target}.restoring", target)
    target
  end
end

if $PROGRAM_NAME == __FILE__
  options = { tenant_column: "tenant_id", purge: true }
  OptionParser.new do |o|
    o.on("--database PATH") { |v| options[:database] = v }
    o.on("--archive PATH") { |v| options[:archive] = v }
    o.on("--tenant-id ID", Integer) { |v| options[:tenant_id] = v }
    o.on("--storage-root DIR") { |v| options[:storage_root] = v }
    o.on("--tenant-column NAME") { |v| options[:tenant_column] = v }
    o.on("--[no-]purge") { |v| options[:purge] = v }
    o.on("--quiet") { options[:log] = nil }
  end.parse!
  # For the benchmark harness: this process's RSS before the job and its peak.
  vm_kb = ->(field) { File.read("/proc/self/status")[/^#{field}:\s+(\d+)/, 1].to_i }
  rss_start = vm_kb.call("VmRSS")
  result = RubyRestore.new(**options).run
  puts "RESULT #{JSON.generate(result.merge('rss_start_kb' => rss_start, 'hwm_kb' => vm_kb.call('VmHWM')))}"
end
