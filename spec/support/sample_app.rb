# frozen_string_literal: true

# TenantKitSample: builds the SQLite database and ActiveStorage Disk tree of
# the multi-tenant Rails app tenant_kit was made for, filled with
# deterministic pseudo-random data. Used by the specs, script/demo and bench/.
#
#   summary = TenantKitSample.create(
#     path: "tmp/app.sqlite3",       # created; must not exist yet
#     storage_root: "tmp/storage",   # ActiveStorage Disk service root (created)
#     tenants: 3,                    # tenant ids 1..tenants
#     rows_per_tenant: 10_000,       # rows in tables with tenant_id, per tenant;
#                                    # an Array gives one number per tenant
#     blob_bytes: 1 << 20,           # about this many bytes of files per tenant
#                                    # (an Array: one number per tenant)
#     seed: 1,                       # same seed, same bytes
#     journal_mode: "delete",        # or "wal"
#     extra_types: false,            # true: add table `type_samples` (BLOB and
#                                    # untyped columns, every storage class;
#                                    # 21 rows per tenant beyond rows_per_tenant)
#   )
#   summary[:tenants][1]  # => { tables: { "users" => 100, ... }, tags_tasks: ...,
#                         #      attachments: ..., blobs: ..., blob_bytes: ... }
#
# What is in it (per tenant, interleaved with the other tenants' rows the way
# a live app writes them, so a tenant's rows are spread over the whole file):
# - one `tenants` row; users, teams, projects, tasks (with a self-referencing
#   parent_id), time_entries, tags, HABTM `tags_tasks` join rows (no primary
#   key, no tenant column), polymorphic comments on tasks and projects,
#   settings at tenant, class and instance level (values are JSON text),
#   background_jobs with a job_progress JSON log;
# - ActiveStorage: files attached to tasks (has_many_attached :files), to
#   projects (:documents) and user avatars (has_one_attached :avatar) whose
#   variants are tracked (variant records with their own attached blob, as
#   Rails 6.1 does), with real files in `root/key[0..1]/key[2..3]/key`, the
#   right byte_size and checksum (base64 of the MD5 digest);
# - SQLite values of every storage class: 64-bit integers (including
#   2**53 + 1 and the int64 limits), REAL values that are whole numbers (2.0),
#   shortest-round-trip reals (0.30000000000000004), unicode text, text that
#   looks like a number ("007", "1e5"), empty strings, NULLs; with
#   `extra_types: true` also BLOBs (with embedded NULs, empty, non-UTF-8
#   bytes) and an untyped column holding each storage class.
# Traps for tenant scoping: background_jobs rows with a NULL tenant_id and an
# unattached ("orphan") blob belong to nobody.
#
# The module also has an oracle that knows, independently of tenant_kit's own
# discovery, which rows are a tenant's: `tenant_queries`, `tenant_counts`,
# `tenant_digest`, `blob_files`.

require "sqlite3"
require "digest"
require "fileutils"
require "json"

module TenantKitSample
  SCHEMA_PATH = File.expand_path("../../tests/fixtures/app_schema.sql", __dir__)

  # Share of each tenant table in rows_per_tenant; time_entries take the rest.
  TABLE_SHARES = {
    "teams" => 0.001, "users" => 0.010, "projects" => 0.010, "tags" => 0.002,
    "tasks" => 0.300, "comments" => 0.300, "settings" => 0.020,
    "background_jobs" => 0.005,
  }.freeze
  MIN_ROWS_PER_TENANT = 50
  AVERAGE_BLOB_BYTES = 16 * 1024
  KEY_ALPHABET = [*"0".."9", *"a".."z"].freeze # SecureRandom.base36

  EXTRA_TYPES_SQL = <<~SQL
    CREATE TABLE "type_samples" ("id" integer PRIMARY KEY AUTOINCREMENT NOT NULL,
      "tenant_id" integer NOT NULL, "label" varchar NOT NULL, "data" blob, "anything",
      "created_at" datetime(6) NOT NULL, "updated_at" datetime(6) NOT NULL);
    CREATE INDEX "index_type_samples_on_tenant_id" ON "type_samples" ("tenant_id");
  SQL

  # Values for `type_samples`: [label, data (BLOB column), anything (no type)].
  # Binary (ASCII-8BIT) Ruby strings are bound as BLOBs, UTF-8 ones as TEXT.
  TYPE_SAMPLES = [
    ["int64 max", nil, 9_223_372_036_854_775_807],
    ["int64 min", nil, -9_223_372_036_854_775_808],
    ["2**53 + 1", nil, 9_007_199_254_740_993],
    ["zero", nil, 0],
    ["whole real", nil, 2.0],
    ["big whole real", nil, 1.0e20],
    ["shortest real", nil, 0.1 + 0.2],
    ["tiny real", nil, 5.0e-324],
    ["huge real", nil, 1.7976931348623157e308],
    ["numeric text", nil, "42"],
    ["zero-padded text", nil, "007"],
    ["exponent text", nil, "1e5"],
    ["real text", nil, "2.0"],
    ["empty text", nil, ""],
    ["unicode text", nil, "Grüße, 東京 🚀 — ½"],
    ["quotes and escapes", nil, "line1\nline2\t\"quoted\" \\ back\\slash \u0001"],
    ["blob with NULs", "\x00\x01\x00\xFFtail\x00".b, "\x00abc\x00".b],
    ["empty blob", "".b, "".b],
    ["non-UTF-8 bytes", "\xC3\x28\xA0\xA1".b, "\xFE\xFF\x80".b],
    ["png header", "\x89PNG\r\n\x1A\n\x00\x00\x00\rIHDR".b, nil],
    ["null", nil, nil],
  ].freeze

  WORDS = %w[
    alpha beta gamma delta report review invoice draft budget plan sprint
    release deploy meeting client design copy proof estimate follow-up
    Müller Zoë café naïve Ærø São Paulo Kraków Ελλάδα Москва 東京 서울 🚀 ✓ ½
  ].freeze
  # Text that must stay text although it looks like a number or is empty.
  TRICKY_TEXT = ["42", "007", "1e5", "3.0", "-0", " 12", "", "NULL", "null",
                 "true", "{\"json\": [1, 2.0]}", "Ünïcödé ✓ 日本語 🚀",
                 "quote ' double \" back \\ tab\t newline\n end"].freeze
  # Values for REAL-affinity columns: whole numbers stay REAL (2.0).
  TRICKY_REALS = [2.0, 0.5, 1.25, 0.30000000000000004, 100.0, 1.0e15,
                  123_456.789, 1.0e-7, 0.0].freeze
  # INTEGER values beyond 32 bits and beyond the doubles' exact range.
  TRICKY_INTEGERS = [9_223_372_036_854_775_807, -9_223_372_036_854_775_808,
                     9_007_199_254_740_993, 4_294_967_296, -1, 0].freeze

  module_function

  # Build the sample database and storage tree; returns a summary Hash.
  def create(path:, storage_root:, tenants: 3, rows_per_tenant: 1_000, blob_bytes: 64 * 1024,
             seed: 1, journal_mode: "delete", extra_types: false)
    Generator.new(path: path, storage_root: storage_root, tenants: tenants,
                  rows_per_tenant: rows_per_tenant, blob_bytes: blob_bytes, seed: seed,
                  journal_mode: journal_mode, extra_types: extra_types).run
  end

  # Disk service path of a blob key.
  def disk_path(storage_root, key)
    File.join(storage_root, key[0, 2], key[2, 2], key)
  end

  # ActiveStorage's checksum: base64 of the MD5 digest of the file.
  def checksum_of(path)
    Digest::MD5.file(path).base64digest
  end

  # "Task" -> "tasks", "TimeEntry" -> "time_entries", "Admin::Note" ->
  # "admin_notes", "ActiveStorage::VariantRecord" ->
  # "active_storage_variant_records": enough of Rails' tableize for the oracle.
  def tableize(class_name)
    snake = class_name.gsub("::", "_").gsub(/([a-z\d])([A-Z])/, '\1_\2').downcase
    snake.sub(/y\z/, "ies").then { |s| s.end_with?("ies") ? s : "#{s}s" }
  end

  # The oracle: for each table, [sql, binds] selecting exactly the rows that
  # belong to `tenant_id`, written from knowledge of this app's schema (it is
  # deliberately independent of tenant_kit's discovery). `select` is the
  # column list ("*", "count(*)", ...). Tables with no rows of the tenant are
  # still listed (with a count of 0).
  def tenant_queries(db, tenant_id, select: "*", tenant_column: "tenant_id")
    with_db(db) do |conn|
      tenant_tables = tables_with_column(conn, tenant_column)
      q = ->(name) { %("#{name}") }
      queries = {}
      queries["tenants"] = ["SELECT #{select} FROM tenants WHERE id = ?", [tenant_id]]
      tenant_tables.each do |t|
        queries[t] = ["SELECT #{select} FROM #{q[t]} WHERE #{q[tenant_column]} = ?", [tenant_id]]
      end
      if table?(conn, "tags_tasks")
        queries["tags_tasks"] = ["SELECT #{select} FROM tags_tasks WHERE task_id IN " \
                                 "(SELECT id FROM tasks WHERE #{q[tenant_column]} = ?)", [tenant_id]]
      end
      if table?(conn, "active_storage_attachments")
        # Attachments of the tenant's records, mapped from record_type the
        # Rails way; then the variant records of those blobs and the
        # attachments (variant images) of the variant records.
        direct_parts = []
        direct_binds = []
        conn.execute("SELECT DISTINCT record_type FROM active_storage_attachments").flatten.each do |type|
          table = tableize(type)
          next unless tenant_tables.include?(table)

          direct_parts << "(record_type = ? AND record_id IN (SELECT id FROM #{q[table]} WHERE #{q[tenant_column]} = ?))"
          direct_binds.push(type, tenant_id)
        end
        direct = direct_parts.empty? ? "0" : direct_parts.join(" OR ")
        direct_blobs = "SELECT blob_id FROM active_storage_attachments WHERE #{direct}"
        variants = "SELECT id FROM active_storage_variant_records WHERE blob_id IN (#{direct_blobs})"
        all_attachments = "(#{direct}) OR (record_type = 'ActiveStorage::VariantRecord' AND record_id IN (#{variants}))"
        queries["active_storage_blobs"] = [
          "SELECT #{select} FROM active_storage_blobs WHERE id IN " \
          "(SELECT blob_id FROM active_storage_attachments WHERE #{all_attachments})",
          direct_binds * 2,
        ]
        queries["active_storage_attachments"] = [
          "SELECT #{select} FROM active_storage_attachments WHERE #{all_attachments}", direct_binds * 2,
        ]
        queries["active_storage_variant_records"] = [
          "SELECT #{select} FROM active_storage_variant_records WHERE id IN (#{variants})", direct_binds,
        ]
      end
      queries
    end
  end

  # Table name => number of rows of the tenant (see tenant_queries).
  def tenant_counts(db, tenant_id, tenant_column: "tenant_id")
    with_db(db) do |conn|
      tenant_queries(conn, tenant_id, select: "count(*)", tenant_column: tenant_column)
        .transform_values { |sql, binds| conn.get_first_value(sql, binds) }
    end
  end

  # Table name => { rows:, sha256: } over every value of the tenant's rows
  # with its storage class (typeof) and exact SQL literal (quote), in primary
  # key order (all columns for tables without one). Equal digests mean equal
  # values and types.
  def tenant_digest(db, tenant_id, tenant_column: "tenant_id")
    with_db(db) do |conn|
      tenant_queries(conn, tenant_id, tenant_column: tenant_column).to_h do |table, (sql, binds)|
        cols = conn.execute(%(PRAGMA table_info("#{table}"))).map { |r| r[1] }
        pk = conn.execute(%(PRAGMA table_info("#{table}"))).select { |r| r[5].to_i > 0 }.map { |r| r[1] }
        order = (pk.empty? ? cols : pk).map { |c| %("#{c}") }.join(", ")
        exprs = cols.map { |c| %(typeof("#{c}") || ':' || quote("#{c}")) }.join(", ")
        typed = sql.sub("SELECT * FROM", "SELECT #{exprs} FROM") + " ORDER BY #{order}"
        sha = Digest::SHA256.new
        rows = 0
        conn.execute(typed, binds) do |row|
          sha << row.join("\u0000") << "\n"
          rows += 1
        end
        [table, { rows: rows, sha256: sha.hexdigest }]
      end
    end
  end

  # The tenant's blobs with their file on disk: [{ key:, path:, byte_size:,
  # checksum:, exists:, valid: }] (valid: size and MD5 checksum match the row).
  def blob_files(db, storage_root, tenant_id)
    with_db(db) do |conn|
      sql, binds = tenant_queries(conn, tenant_id, select: "key, byte_size, checksum")["active_storage_blobs"]
      return [] unless sql

      conn.execute(sql + " ORDER BY key", binds).map do |key, size, checksum|
        file = disk_path(storage_root, key)
        exists = File.file?(file)
        valid = exists && File.size(file) == size && checksum_of(file) == checksum
        { key: key, path: file, byte_size: size, checksum: checksum, exists: exists, valid: valid }
      end
    end
  end

  # Open `db` (a path or an open SQLite3::Database) for the block.
  def with_db(db)
    return yield(db) if db.is_a?(SQLite3::Database)

    conn = SQLite3::Database.new(db, readonly: true)
    begin
      conn.busy_timeout = 5_000
      yield conn
    ensure
      conn.close
    end
  end

  def table?(conn, name)
    !conn.get_first_value("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", [name]).nil?
  end

  # Tables (not sqlite_*, not Rails' own) that have `column`, in file order.
  def tables_with_column(conn, column)
    conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' " \
                 "AND name NOT IN ('schema_migrations', 'ar_internal_metadata') ORDER BY rowid").flatten
        .select { |t| conn.execute(%(PRAGMA table_info("#{t}"))).any? { |r| r[1] == column } }
  end

  # Fills one database. One transaction, one prepared statement per table,
  # explicit ids (the generator keeps each tenant's ids to pick parents from).
  class Generator
    def initialize(path:, storage_root:, tenants:, rows_per_tenant:, blob_bytes:, seed:, journal_mode:, extra_types:)
      raise ArgumentError, "#{path} exists already" if File.exist?(path)
      raise ArgumentError, "journal_mode must be delete or wal" unless %w[delete wal].include?(journal_mode.to_s)

      @path = path
      @storage_root = storage_root
      @tenant_ids = (1..Integer(tenants)).to_a
      sizes = rows_per_tenant.is_a?(Array) ? rows_per_tenant : [rows_per_tenant] * @tenant_ids.size
      raise ArgumentError, "rows_per_tenant: one number per tenant" unless sizes.size == @tenant_ids.size

      @rows = @tenant_ids.zip(sizes.map { |n| Integer(n) }).to_h
      if (small = @rows.values.min) < MIN_ROWS_PER_TENANT
        raise ArgumentError, "rows_per_tenant must be at least #{MIN_ROWS_PER_TENANT} (got #{small})"
      end

      blob_sizes = blob_bytes.is_a?(Array) ? blob_bytes : [blob_bytes] * @tenant_ids.size
      raise ArgumentError, "blob_bytes: one number per tenant" unless blob_sizes.size == @tenant_ids.size

      @blob_bytes = @tenant_ids.zip(blob_sizes.map { |n| Integer(n) }).to_h
      @rng = Random.new(seed)
      @journal_mode = journal_mode.to_s
      @extra_types = extra_types
      @tenant_tables = [*TABLE_SHARES.keys, "time_entries", ("type_samples" if extra_types)].compact
      @ids = Hash.new { |h, table| h[table] = Hash.new { |hh, tenant| hh[tenant] = [] } }
      @next_id = Hash.new(0)
      @clock = Time.utc(2026, 1, 5, 8, 0, 0).to_i
      @summary = @tenant_ids.to_h do |t|
        [t, { tables: Hash.new(0), tags_tasks: 0, attachments: 0, variant_records: 0, blobs: 0, blob_bytes: 0 }]
      end
    end

    def run
      started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      FileUtils.mkdir_p(File.dirname(File.expand_path(@path)))
      FileUtils.mkdir_p(@storage_root)
      @db = SQLite3::Database.new(@path)
      # Fast bulk load: no journal while filling, the requested mode at the end.
      @db.execute("PRAGMA journal_mode = OFF")
      @db.execute("PRAGMA synchronous = OFF")
      @db.execute("PRAGMA cache_size = -65536") # 64 MiB for the index inserts
      @db.execute_batch(File.read(SCHEMA_PATH))
      @db.execute_batch(EXTRA_TYPES_SQL) if @extra_types
      @db.transaction do
        fill_tenants
        fill_teams_users_projects_tags
        fill_tasks_and_tags_tasks
        fill_time_entries
        fill_comments
        fill_settings
        fill_background_jobs
        fill_active_storage
        fill_type_samples if @extra_types
      end
      @statements&.each_value(&:close)
      @db.execute("PRAGMA journal_mode = #{@journal_mode == 'wal' ? 'WAL' : 'DELETE'}")
      @db.close
      {
        path: @path, storage_root: @storage_root, journal_mode: @journal_mode,
        seconds: (Process.clock_gettime(Process::CLOCK_MONOTONIC) - started).round(2),
        tenants: @summary.transform_values { |s| s.merge(tables: s[:tables].to_h) },
      }
    end

    private

    # --- row counts ---------------------------------------------------------

    def counts_for(tenant)
      n = @rows[tenant]
      counts = TABLE_SHARES.to_h { |table, share| [table, [(n * share).round, 1].max] }
      counts["users"] = [counts["users"], 2].max
      counts["time_entries"] = n - counts.values.sum
      raise ArgumentError, "rows_per_tenant #{n} too small" if counts["time_entries"] < 1

      counts
    end

    # Yield (tenant, i) for i in 0...count(tenant), round-robin over tenants,
    # so the tenants' rows interleave in the table as in a live app.
    def interleave(table)
      counts = @tenant_ids.to_h { |t| [t, counts_for(t)[table]] }
      counts.values.max.times do |i|
        @tenant_ids.each { |t| yield t, i if i < counts[t] }
      end
    end

    # --- values ----------------------------------------------------------------

    def tick
      @clock += 1 + @rng.rand(90)
    end

    PAD2 = (0..99).map { |n| format("%02d", n) }.freeze

    # Rails 6.1 datetime(6) text: "2026-01-05 08:00:00.123456". (Formatting
    # by hand with a cached date: Time#strftime would be a third of the run.)
    def timestamp(seconds = @clock)
      day, sec = seconds.divmod(86_400)
      if day != @day
        @day = day
        @day_prefix = Time.at(day * 86_400).utc.strftime("%Y-%m-%d ")
      end
      hour, sec = sec.divmod(3600)
      min, sec = sec.divmod(60)
      usec = @rng.rand(1_000_000).to_s.rjust(6, "0")
      "#{@day_prefix}#{PAD2[hour]}:#{PAD2[min]}:#{PAD2[sec]}.#{usec}"
    end

    # min..max random words: a byte slice of a long pre-shuffled word text
    # (one slice instead of joining a fresh Array per value).
    def words(min, max)
      unless @word_text
        list = Array.new(1 << 16) { WORDS[@rng.rand(WORDS.size)] }
        @word_text = list.join(" ")
        @word_starts = list.each_with_object([0]) { |w, acc| acc << acc.last + w.bytesize + 1 }
      end
      count = min + @rng.rand(max - min + 1)
      return +"" if count.zero?

      first = @rng.rand(@word_starts.size - count - 1)
      from = @word_starts[first]
      @word_text.byteslice(from, @word_starts[first + count] - from - 1)
    end

    def pick(array)
      array[@rng.rand(array.size)]
    end

    def maybe_nil(probability)
      @rng.rand < probability ? nil : yield
    end

    def insert(table, values)
      @statements ||= {}
      stmt = @statements[table] ||= @db.prepare(
        %(INSERT INTO "#{table}" VALUES (#{(['?'] * values.size).join(', ')}))
      )
      stmt.reset!
      stmt.bind_params(values)
      stmt.step
    end

    # Insert a row with the next id of `table` for `tenant`; returns the id.
    def add(table, tenant, values)
      id = (@next_id[table] += 1)
      insert(table, [id, *values])
      @ids[table][tenant] << id if tenant
      @summary[tenant][:tables][table] += 1 if tenant && @tenant_tables.include?(table)
      id
    end

    # --- tables ----------------------------------------------------------------

    def fill_tenants
      @tenant_ids.each do |t|
        at = timestamp(tick)
        insert("tenants", [t, "Tenant #{t} — Ä GmbH", "tenant#{t}", at, at])
        @summary[t][:tables]["tenants"] = 1
      end
      @next_id["tenants"] = @tenant_ids.max
    end

    def fill_teams_users_projects_tags
      interleave("teams") do |t, i|
        at = timestamp(tick)
        add("teams", t, [t, "Team #{i + 1} #{words(1, 2)}", at, at])
      end
      interleave("users") do |t, i|
        at = timestamp(tick)
        name = i.zero? ? nil : words(2, 3)
        role = i.zero? ? "admin" : pick(%w[member member member manager])
        add("users", t, [t, "user#{i + 1}@tenant#{t}.example", name, role, at, timestamp(@clock + 5)])
      end
      interleave("projects") do |t, i|
        at = timestamp(tick)
        # decimal(12,2) has NUMERIC affinity: 1500 stays INTEGER, 1234.5 REAL.
        budget = case i % 4
                 when 0 then nil
                 when 1 then 1_500
                 else (@rng.rand(10_000_000) / 100.0)
                 end
        add("projects", t, [t, pick(@ids["teams"][t]), "Project #{i + 1}: #{words(1, 3)}",
                            budget, i % 7 == 0 ? 1 : 0, at, at])
      end
      interleave("tags") do |t, i|
        at = timestamp(tick)
        add("tags", t, [t, i.even? ? "tag-#{i}" : "#{words(1, 1)}-#{i}", at, at])
      end
    end

    def fill_tasks_and_tags_tasks
      interleave("tasks") do |t, i|
        at = timestamp(tick)
        tasks = @ids["tasks"][t]
        parent = !tasks.empty? && @rng.rand < 0.1 ? pick(tasks) : nil
        notes = case i % 10
                when 0 then nil
                when 1 then TRICKY_TEXT[(i / 10) % TRICKY_TEXT.size]
                else words(0, 30)
                end
        estimate = case i % 5
                   when 0 then nil
                   when 1 then TRICKY_REALS[(i / 5) % TRICKY_REALS.size]
                   else (@rng.rand(400) + 1) / 4.0
                   end
        position = i % 50 == 3 ? TRICKY_INTEGERS[(i / 50) % TRICKY_INTEGERS.size] : i + 1
        due_on = i % 3 == 0 ? nil : format("2026-%02d-%02d", 1 + @rng.rand(12), 1 + @rng.rand(28))
        id = add("tasks", t, [t, pick(@ids["projects"][t]), maybe_nil(0.05) { pick(@ids["users"][t]) },
                              parent, words(2, 6), notes, estimate, position, due_on, at, timestamp(@clock + 60)])
        # HABTM: 0..3 distinct tags of the same tenant per task.
        tags = @ids["tags"][t]
        Array.new(@rng.rand(4)) { pick(tags) }.uniq.each do |tag|
          insert("tags_tasks", [tag, id])
          @summary[t][:tags_tasks] += 1
        end
      end
    end

    def fill_time_entries
      interleave("time_entries") do |t, i|
        at = timestamp(tick)
        rate = case i % 4
               when 0 then nil
               when 1 then 75.0 # a whole-number REAL
               else (@rng.rand(20_000) + 1) / 100.0
               end
        billed = [0, 1, nil][i % 3]
        add("time_entries", t, [t, pick(@ids["tasks"][t]), pick(@ids["users"][t]), 1 + @rng.rand(480),
                                rate, billed, at, at])
      end
    end

    def fill_comments
      interleave("comments") do |t, i|
        at = timestamp(tick)
        type, ids = i % 5 == 4 ? ["Project", @ids["projects"][t]] : ["Task", @ids["tasks"][t]]
        body = i % 20 == 7 ? TRICKY_TEXT[(i / 20) % TRICKY_TEXT.size] : words(5, 40)
        add("comments", t, [t, type, pick(ids), maybe_nil(0.1) { pick(@ids["users"][t]) }, body, at, at])
      end
    end

    SETTING_KEYS = {
      nil => [["theme", '"light"'], ["locale", '"de"'], ["week_start", "1"], ["billing", '{"rate": 75.0, "currency": "EUR"}']],
      "User" => [["theme", '"dark"'], ["notifications", "true"], ["digest_hour", "8"], ["signature", '"— ✓"']],
      "Team" => [["capacity", "40"], ["color", '"#ff8800"']],
      "TimeMaterial" => [["rounding", "0.25"], ["default_rate", "90.0"]],
    }.freeze

    # Tenant level (target_type NULL), class level (target_id NULL), instance
    # level (target_id = record id as text), as the app's Setting model does.
    def fill_settings
      tenant_level = SETTING_KEYS[nil]
      class_level = SETTING_KEYS.reject { |k, _| k.nil? }.flat_map { |klass, keys| keys.map { |k| [klass, *k] } }
      interleave("settings") do |t, i|
        at = timestamp(tick)
        row = if i < tenant_level.size
                [nil, nil, *tenant_level[i]]
              elsif i < tenant_level.size + class_level.size
                klass, key, value = class_level[i - tenant_level.size]
                [klass, nil, key, value]
              else
                j = i - tenant_level.size - class_level.size
                users = @ids["users"][t]
                user_keys = SETTING_KEYS["User"]
                key, value = user_keys[(j / users.size) % user_keys.size]
                ["User", users[j % users.size].to_s, key, value]
              end
        add("settings", t, [t, *row, at, at])
      end
    end

    def fill_background_jobs
      interleave("background_jobs") do |t, i|
        at = timestamp(tick)
        log = Array.new(1 + @rng.rand(4)) { |k| { "at" => at, "step" => "step_#{k}", "processed" => k * 1000 } }
        progress = JSON.generate({ "summary" => "done", "log" => log })
        add("background_jobs", t, [t, pick(%w[BackupTenantJob RestoreTenantJob ImportJob]),
                                   i.zero? ? "running" : "finished", progress, at, at])
      end
      # System jobs without a tenant: nobody's rows.
      2.times do
        at = timestamp(tick)
        add("background_jobs", nil, [nil, "CleanupJob", "finished", nil, at, at])
      end
    end

    # --- ActiveStorage --------------------------------------------------------

    def blob_key
      key = +""
      28.times { key << KEY_ALPHABET[@rng.rand(36)] }
      key
    end

    # Write the file in the Disk layout and insert the blob row.
    def add_blob(tenant, filename, content_type, data, metadata)
      key = blob_key
      file = TenantKitSample.disk_path(@storage_root, key)
      FileUtils.mkdir_p(File.dirname(file))
      File.binwrite(file, data)
      id = add("active_storage_blobs", nil,
               [key, filename, content_type, JSON.generate(metadata), "local", data.bytesize,
                Digest::MD5.base64digest(data), timestamp(tick)])
      if tenant
        @summary[tenant][:blobs] += 1
        @summary[tenant][:blob_bytes] += data.bytesize
      end
      id
    end

    def attach(tenant, name, record_type, record_id, blob_id)
      add("active_storage_attachments", nil, [name, record_type, record_id, blob_id, timestamp(@clock)])
      @summary[tenant][:attachments] += 1
    end

    def file_data(content_type, size)
      if content_type == "text/plain"
        text = +""
        text << words(5, 15) << "\n" while text.bytesize < size
        text.byteslice(0, size).scrub("?").b
      else
        @rng.bytes(size)
      end
    end

    # What the i-th file of a tenant is attached as: 70% task files, 15%
    # project documents, 15% user avatars; every kind among the first three.
    KIND_CYCLE = %i[file avatar document file file file file avatar document file
                    file file file file avatar document file file file file].freeze

    # Per tenant: ~blob_bytes of files (see KIND_CYCLE); each avatar (an
    # image) with a tracked variant.
    def fill_active_storage
      plans = @tenant_ids.to_h do |t|
        count = @blob_bytes[t].zero? ? 0 : [(@blob_bytes[t].to_f / AVERAGE_BLOB_BYTES).ceil, 1].max
        [t, count]
      end
      avatar_users = Hash.new(0)
      plans.values.max.times do |i|
        @tenant_ids.each do |t|
          next unless i < plans[t]

          size = if i == 3 then 0 # an empty file is a valid attachment
                 else AVERAGE_BLOB_BYTES / 2 + @rng.rand(AVERAGE_BLOB_BYTES)
                 end
          kind = KIND_CYCLE[i % KIND_CYCLE.size]
          if kind == :avatar && avatar_users[t] < @ids["users"][t].size
            user = @ids["users"][t][avatar_users[t]]
            avatar_users[t] += 1
            meta = { "identified" => true, "width" => 640, "height" => 480, "analyzed" => true }
            blob = add_blob(t, "avatar-#{user}.png", "image/png", file_data("image/png", size), meta)
            attach(t, "avatar", "User", user, blob)
            # Rails 6.1 variant tracking: a variant record for the original
            # blob, and the variant image attached to that record.
            variant = add("active_storage_variant_records", nil,
                          [blob, Digest::SHA1.base64digest("resize_to_limit:[64,64]#{blob}")])
            @summary[t][:variant_records] += 1
            small = add_blob(t, "avatar-#{user}.png", "image/png", file_data("image/png", size / 8),
                             { "identified" => true, "width" => 64, "height" => 48, "analyzed" => true })
            attach(t, "image", "ActiveStorage::VariantRecord", variant, small)
          elsif kind == :document
            project = pick(@ids["projects"][t])
            blob = add_blob(t, "spec-#{i}.pdf", "application/pdf", file_data("application/pdf", size),
                            { "identified" => true, "analyzed" => true })
            attach(t, "documents", "Project", project, blob)
          else
            task = pick(@ids["tasks"][t])
            type = i.even? ? "text/plain" : "application/octet-stream"
            blob = add_blob(t, "notes-#{i}#{type == 'text/plain' ? '.txt' : '.bin'}", type,
                            file_data(type, size), { "identified" => true, "analyzed" => true })
            attach(t, "files", "Task", task, blob)
          end
        end
      end
      # An unattached upload: a blob of nobody.
      add_blob(nil, "orphan.bin", "application/octet-stream", @rng.bytes(100), { "identified" => true }) if plans.values.sum.positive?
    end

    def fill_type_samples
      TYPE_SAMPLES.size.times do |i|
        @tenant_ids.each do |t|
          label, data, anything = TYPE_SAMPLES[i]
          at = timestamp(tick)
          add("type_samples", t, [t, label, data, anything, at, at])
        end
      end
    end
  end
end
