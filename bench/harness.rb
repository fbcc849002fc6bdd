# frozen_string_literal: true

# The benchmark harness behind bench/run (see bench/README.md).
#
# 1. Generates the benchmark data once (cached under bench/data/, which is
#    git-ignored; regenerated when the generator, the schema or the sizes
#    change): "main", 3 tenants x ROWS tenant rows, and "3x", the same with
#    tenant 1 three times larger.
# 2. Runs every candidate in its own child process under GNU time (peak RSS
#    of that process alone, `%M`), RUNS times, interleaved and rotated so no
#    candidate always runs first; reports medians.
#       backup:  (a) TenantKit.backup of tenant 1
#                (b) bench/baseline/ruby_backup.rb, the same job in Ruby/AR
#                (c) sqlite3 -json of the tenant's rows | gzip -6
#                (d) TenantKit.backup of tenant 1 of the 3x database
#       restore: (e) TenantKit.restore, purge + restore of tenant 1 from (a)'s archive
#                (f) bench/baseline/ruby_restore.rb, the same in Ruby/AR
#                (g)/(h) the same into the tenant deleted first, and the
#                cases of issue 19 (RESTORE_CASES): the child-key variant
#                (bench/variants.rb), purge only, a new empty database, the
#                3x tenant, and the floors (bench/candidates/floor.rb).
#    Restores start from a fresh copy of their start database and storage.
# 3. Checks each run cheaply: the backup's per-table counts equal the
#    oracle's (spec/support/sample_app.rb); after a restore the tenant's
#    per-table counts equal the original (none after a purge only), tenant 2
#    is untouched, and the tenant's blob files exist with the right size and
#    MD5.
# 4. Prints tables with the targets of issues 3, 4 and 19 and writes them to
#    bench/results.md.

require "json"
require "optparse"
require "fileutils"
require "digest"
require "open3"
require "time"
require "etc"
require_relative "../spec/support/sample_app"
require_relative "variants"
require_relative "restore_report"

module Bench
  ROOT = File.expand_path("..", __dir__)
  MIB = 1024.0

  # Targets from issue 3 (backup) and issues 4 and 19 (restore; see
  # restore_report.rb).
  BACKUP_SPEEDUP_VS_RUBY = 15.0
  BACKUP_RSS_LIMIT_MIB = 64
  RESTORE_RSS_LIMIT_MIB = 128
  FLAT_RSS_GROWTH = 1.25 # "flat": the 3x tenant's peak at most 25% above the 1x peak

  CANDIDATES = {
    "tk_backup" => "(a) TenantKit.backup",
    "ruby_backup" => "(b) Ruby/AR backup baseline",
    "sqlite_gzip" => "(c) sqlite3 -json \\| gzip -6",
    "tk_backup_3x" => "(d) TenantKit.backup, 3x tenant",
    "tk_restore" => "(e) TenantKit.restore, purge + restore",
    "ruby_restore" => "(f) Ruby/AR restore baseline",
    "tk_restore_all" => "(g) TenantKit.restore, tenant deleted first",
    "ruby_restore_all" => "(h) Ruby/AR restore, tenant deleted first",
    "tk_restore_all_fk" => "(i) TenantKit.restore, tenant deleted first, unindexed child keys",
    "tk_purge_fk" => "(j) TenantKit.restore, purge only, unindexed child keys",
    "tk_restore_new" => "(k) TenantKit.restore into a new empty database",
    "tk_restore_all_3x" => "(l) TenantKit.restore, 3x tenant deleted first",
    "floor_delete" => "floor: the same rows deleted",
    "floor_insert" => "floor: INSERT … SELECT, tenant deleted first",
    "floor_insert_new" => "floor: INSERT … SELECT, new empty database",
    "tk_backup_age" => "(m) TenantKit.backup, age-encrypted to a recipient",
    "tk_restore_age" => "(n) TenantKit.restore of (m)'s archive, purge + restore",
  }.freeze
  BACKUPS = %w[tk_backup ruby_backup sqlite_gzip tk_backup_3x tk_backup_age].freeze
  # Each restore case: its data set (:main, :fk the child-key variant, :big
  # the 3x data), the database it starts from (:pristine, :deleted = tenant
  # 1's rows purged beforehand, untimed; :empty = the schema alone), what
  # runs, and what the result must be (:restored: rows and blob files;
  # :rows: rows only, for a floor, which writes no files; :purged: none of
  # the tenant's rows but its tenants row).
  RESTORE_CASES = {
    "tk_restore" => { data: :main, start: :pristine, run: [:tk, "--purge"] },
    "ruby_restore" => { data: :main, start: :pristine, run: [:ruby, "--purge"] },
    "tk_restore_all" => { data: :main, start: :deleted, run: [:tk, "--purge"] },
    "ruby_restore_all" => { data: :main, start: :deleted, run: [:ruby, "--purge"] },
    "tk_restore_all_fk" => { data: :fk, start: :deleted, run: [:tk, "--purge"] },
    "tk_purge_fk" => { data: :fk, start: :pristine, run: [:tk, "--purge", "--no-restore"], expect: :purged },
    "tk_restore_new" => { data: :main, start: :empty, run: [:tk] },
    "tk_restore_all_3x" => { data: :big, start: :deleted, run: [:tk, "--purge"] },
    "floor_delete" => { data: :fk, start: :pristine, run: [:floor, "delete"], expect: :purged },
    "floor_insert" => { data: :main, start: :deleted, run: [:floor, "insert"], expect: :rows },
    "floor_insert_new" => { data: :main, start: :empty, run: [:floor, "insert", "--tenant-row"], expect: :rows },
    # (m)'s encrypted archive, decrypted with the identity in a key file.
    "tk_restore_age" => { data: :main, start: :pristine, run: [:tk, "--purge"], encrypted: true },
  }.freeze
  RESTORES = RESTORE_CASES.keys.freeze

  class Harness
    include RestoreReport

    def initialize(argv)
      @opts = { runs: 3, rows: 360_000, blob_bytes: 2 * 1024 * 1024, data: File.join(ROOT, "bench/data"),
                results: File.join(ROOT, "bench/results.md"), only: CANDIDATES.keys }
      OptionParser.new do |o|
        o.banner = "usage: bench/run [options]"
        o.on("--runs N", Integer, "timed runs per candidate (default 3)") { |v| @opts[:runs] = v }
        o.on("--rows N", Integer, "tenant rows per tenant (default 360000)") { |v| @opts[:rows] = v }
        o.on("--blob-bytes N", Integer, "bytes of files per tenant (default 2 MiB)") { |v| @opts[:blob_bytes] = v }
        o.on("--only LIST", Array, "candidates: #{CANDIDATES.keys.join(',')}") { |v| @opts[:only] = v }
        o.on("--data DIR", "data cache (default bench/data)") { |v| @opts[:data] = File.expand_path(v) }
        o.on("--results FILE", "markdown output (default bench/results.md)") do |v|
          @opts[:results] = File.expand_path(v)
          @opts[:results_given] = true
        end
        o.on("--quick", "smoke test: 36000 rows, 1 run, results to bench/data/results-quick.md") do
          @opts[:rows] = 36_000
          @opts[:runs] = 1
          @opts[:quick] = true
        end
      end.parse!(argv)
      unknown = @opts[:only] - CANDIDATES.keys
      abort "unknown candidates: #{unknown.join(', ')}" unless unknown.empty?
      @opts[:results] = File.join(@opts[:data], "results-quick.md") if @opts[:quick] && !@opts[:results_given]
      @work = File.join(@opts[:data], "work")
      @runs = Hash.new { |h, k| h[k] = [] }
      @archives = {}
    end

    def run
      check_tools
      @load_start = File.read("/proc/loadavg").split.first(3).join(" ")
      @main = dataset("main", [@opts[:rows]] * 3, [@opts[:blob_bytes]] * 3)
      if selected?("tk_backup_3x") || selected?("tk_restore_all_3x")
        @big = dataset("3x", [@opts[:rows] * 3, @opts[:rows], @opts[:rows]],
                       [@opts[:blob_bytes] * 3, @opts[:blob_bytes], @opts[:blob_bytes]])
      end
      @fk = child_key_dataset if RESTORES.any? { |c| selected?(c) && RESTORE_CASES[c][:data] == :fk }
      FileUtils.rm_rf(@work)
      FileUtils.mkdir_p(@work)
      log "expected rows of tenant 1 (oracle): #{@main[:expected].values.sum} in #{@main[:expected].size} tables"
      warm_page_cache
      write_sqlite_queries

      backups = BACKUPS.select { |c| selected?(c) }
      @opts[:runs].times do |round|
        backups.rotate(round).each { |c| measure(c, round) }
      end
      restores = RESTORES.select { |c| selected?(c) }
      unless restores.empty?
        choose_archive
        @opts[:runs].times do |round|
          restores.rotate(round).each { |c| measure(c, round) }
        end
      end
      @load_end = File.read("/proc/loadavg").split.first(3).join(" ")
      # The restore copies are as large as the database; the archives stay for a look.
      FileUtils.rm_rf(Dir[File.join(@work, "restore*")])
      report
    end

    private

    def selected?(candidate)
      @opts[:only].include?(candidate)
    end

    def log(message)
      $stderr.puts "[bench #{Time.now.strftime('%H:%M:%S')}] #{message}"
    end

    def check_tools
      out, status = Open3.capture2e("/usr/bin/time", "--version")
      abort "GNU time (/usr/bin/time) is needed: apt-get install time" unless status.success? && out.include?("GNU")
      abort "sqlite3 CLI is needed: apt-get install sqlite3" if selected?("sqlite_gzip") && !system("sqlite3 -version > /dev/null")
    end

    # --- data ----------------------------------------------------------------

    # The generated database of `name`, from cache when its fingerprint
    # (generator source, schema, sizes) matches.
    def dataset(name, rows, blob_bytes)
      params = { tenants: rows.size, rows_per_tenant: rows, blob_bytes: blob_bytes, seed: 1, journal_mode: "delete" }
      fingerprint = Digest::SHA256.hexdigest(
        [File.read(File.join(ROOT, "spec/support/sample_app.rb")), File.read(TenantKitSample::SCHEMA_PATH),
         JSON.generate(params)].join("\0"),
      )[0, 16]
      dir = File.join(@opts[:data], "#{name}-#{rows.first}")
      info_path = File.join(dir, "dataset.json")
      info = File.exist?(info_path) && JSON.parse(File.read(info_path))
      if info && info["fingerprint"] == fingerprint
        log "using cached #{name} data in #{dir} (generated in #{info.dig('summary', 'seconds')} s)"
      else
        info = generate(dir, params, fingerprint)
      end
      db = File.join(dir, "app.sqlite3")
      storage = File.join(dir, "storage")
      {
        name: name, dir: dir, db: db, storage: storage, summary: info["summary"], params: params,
        expected: TenantKitSample.tenant_counts(db, 1), expected_t2: TenantKitSample.tenant_counts(db, 2),
        db_bytes: File.size(db),
      }
    end

    # "main" with the foreign keys of Variants::CHILD_KEYS declared (same
    # rows, same indexes, same storage); cached next to it.
    def child_key_dataset
      fingerprint = Digest::SHA256.hexdigest(
        [File.read(File.join(@main[:dir], "dataset.json")), File.read(File.join(ROOT, "bench/variants.rb"))].join("\0"),
      )[0, 16]
      dir = File.join(@opts[:data], "fk-#{@opts[:rows]}")
      db = File.join(dir, "app.sqlite3")
      stamp = File.join(dir, "fingerprint")
      if File.exist?(stamp) && File.read(stamp) == fingerprint
        log "using cached child-key variant in #{dir}"
      else
        log "building the child-key variant of main (once; cached afterwards)..."
        FileUtils.rm_rf(dir)
        FileUtils.mkdir_p(dir)
        started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
        Variants.build_child_key_variant(@main[:db], db)
        File.write(stamp, fingerprint)
        log format("built in %.1f s", Process.clock_gettime(Process::CLOCK_MONOTONIC) - started)
      end
      @main.merge(name: "fk", dir: dir, db: db, db_bytes: File.size(db))
    end

    def generate(dir, params, fingerprint)
      log "generating #{File.basename(dir)}: #{params[:tenants]} tenants x #{params[:rows_per_tenant].join('/')} rows " \
          "(once; cached afterwards)..."
      partial = "#{dir}.partial"
      FileUtils.rm_rf([dir, partial])
      FileUtils.mkdir_p(partial)
      args = params.merge(path: File.join(partial, "app.sqlite3"), storage_root: File.join(partial, "storage"))
      script = 'require "json"; a = JSON.parse(ARGV[0], symbolize_names: true); ' \
               'puts JSON.generate(TenantKitSample.create(**a))'
      cmd = ["ruby", *yjit_flag, "-I", File.join(ROOT, "spec/support"), "-r", "sample_app", "-e", script, JSON.generate(args)]
      out, err, status = Open3.capture3(*cmd)
      abort "data generation failed:\n#{err}" unless status.success?
      summary = JSON.parse(out.lines.last)
      summary["path"] = File.join(dir, "app.sqlite3")
      summary["storage_root"] = File.join(dir, "storage")
      File.write(File.join(partial, "dataset.json"),
                 JSON.pretty_generate("fingerprint" => fingerprint, "params" => params, "summary" => summary))
      File.rename(partial, dir)
      log "generated in #{summary['seconds']} s: #{(File.size(File.join(dir, 'app.sqlite3')) / MIB / MIB).round} MiB database"
      JSON.parse(File.read(File.join(dir, "dataset.json")))
    end

    def yjit_flag
      @yjit_flag ||= system("ruby", "--yjit", "-e", "exit(RubyVM::YJIT.enabled? ? 0 : 1)", err: File::NULL) ? ["--yjit"] : []
    end

    # Read the databases once so that no candidate pays for a cold cache alone.
    def warm_page_cache
      [@main, @big, @fk].compact.each do |d|
        File.open(d[:db], "rb") { |f| nil while f.read(1 << 20) }
      end
    end

    # The oracle's SELECTs of tenant 1's rows, for sqlite3 -json.
    def write_sqlite_queries
      @queries = File.join(@work, "tenant_1_queries.sql")
      sql = TenantKitSample.tenant_queries(@main[:db], 1).map do |_table, (query, binds)|
        binds.reduce(query) { |q, v| q.sub("?", v.is_a?(String) ? "'#{v.gsub("'", "''")}'" : Integer(v).to_s) } + ";"
      end
      File.write(@queries, sql.join("\n") + "\n")
    end

    # --- runs -------------------------------------------------------------

    def measure(candidate, round)
      run = case candidate
            when "tk_backup" then backup_run(candidate, @main, tenant_kit_cmd("backup"))
            when "tk_backup_3x" then backup_run(candidate, @big, tenant_kit_cmd("backup"))
            when "ruby_backup" then backup_run(candidate, @main, ruby_cmd("ruby_backup.rb", "--quiet"))
            when "sqlite_gzip" then sqlite_run
            when "tk_backup_age" then backup_run(candidate, @main, tenant_kit_cmd("backup", "--recipient", age_key[:recipient]))
            else restore_run(candidate, RESTORE_CASES.fetch(candidate))
            end
      @runs[candidate] << run
      status = run[:ok] ? "ok" : "FAILED: #{run[:error]}"
      log format("%-13s run %d: %7.2f s (process %6.2f s), peak RSS %6.1f MiB  %s",
                 candidate, round + 1, run[:seconds] || Float::NAN, run[:wall], (run[:peak_kb] || 0) / MIB, status)
    end

    # One age key pair for the encrypted candidates, its identity in a key file.
    def age_key
      @age_key ||= JSON.parse(
        Open3.capture2("ruby", "-I", File.join(ROOT, "lib"), "-rtenant_kit", "-e",
                       "print TenantKit::Native.generate_key").first, symbolize_names: true
      )
    end

    def age_key_file
      File.join(@work, "age_key.txt").tap do |path|
        File.write(path, "#{age_key[:identity]}\n", perm: 0o600) unless File.exist?(path)
      end
    end

    # (i)'s archive, made untimed when (i) did not run first.
    def encrypted_archive
      backup_run("tk_backup_age", @main, tenant_kit_cmd("backup", "--recipient", age_key[:recipient])) unless @archives["tk_backup_age"]
      @archives["tk_backup_age"] or abort "no encrypted archive to restore from"
    end

    def tenant_kit_cmd(mode, *extra)
      ["ruby", File.join(ROOT, "bench/candidates/tenant_kit_job.rb"), mode, *extra]
    end

    def ruby_cmd(script, *extra)
      ["ruby", File.join(ROOT, "bench/baseline", script), *extra]
    end

    def floor_cmd(*extra)
      ["ruby", File.join(ROOT, "bench/candidates/floor.rb"), *extra]
    end

    # Run argv under GNU time; returns wall time, peak RSS and the child's
    # `RESULT {json}` line.
    def run_child(argv)
      time_file = File.join(@work, "time.out")
      started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      out, err, status = Open3.capture3("/usr/bin/time", "-f", "%e %M", "-o", time_file, *argv, chdir: ROOT)
      wall = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
      peak_kb = File.read(time_file).lines.last.split.last.to_i
      line = out.lines.reverse.find { |l| l.start_with?("RESULT ") }
      result = line && JSON.parse(line.delete_prefix("RESULT "))
      error = status.success? ? nil : (err.lines.grep_v(/^\s+from /).last(3).join.strip[0, 400].then { |e| e.empty? ? "exit #{status.exitstatus}" : e })
      { ok: status.success? && !result.nil?, wall: wall, peak_kb: peak_kb, child: result, error: error }
    end

    def fresh_dir(name)
      dir = File.join(@work, name)
      FileUtils.rm_rf(dir)
      FileUtils.mkdir_p(dir)
      dir
    end

    def backup_run(candidate, data, cmd)
      out = fresh_dir("out_#{candidate}")
      run = run_child(cmd + ["--database", data[:db], "--tenant-id", "1", "--output-dir", out, "--storage-root", data[:storage]])
      child = run[:child] || {}
      result = child["result"] || child # TenantKit candidates wrap the result
      run[:seconds] = child["seconds"]
      run[:rss_start_kb] = child["rss_start_kb"]
      run[:events] = child["events"]
      run[:lock] = child["lock"]
      run[:bytes] = result["bytes"]
      return run unless run[:ok]

      problems = count_problems(normalize_counts(result["tables"]), data[:expected])
      problems << "errors: #{result['errors'].inspect[0, 200]}" unless Array(result["errors"]).empty?
      path = result["path"].to_s
      problems << "no archive at #{path.inspect}" unless File.file?(path)
      problems << format("archive mode %o, not 600", File.stat(path).mode & 0o777) if File.file?(path) && (File.stat(path).mode & 0o777) != 0o600
      problems << "files left in the output dir: #{(Dir.children(out) - [File.basename(path)]).join(', ')}" unless (Dir.children(out) - [File.basename(path)]).empty?
      fail_run(run, problems)
      if run[:ok] && [@main, @big].include?(data) && !@archives[candidate]
        @archives[candidate] = File.join(@work, "archive_#{candidate}.tar.gz")
        FileUtils.cp(path, @archives[candidate])
      end
      FileUtils.rm_rf(out)
      run
    end

    def sqlite_run
      out = fresh_dir("out_sqlite_gzip")
      t1 = File.join(@work, "time_sqlite.out")
      t2 = File.join(@work, "time_gzip.out")
      target = File.join(out, "tenant_1.json.gz")
      script = %(/usr/bin/time -f %M -o "$1" sqlite3 -json -readonly "$3" < "$4" | /usr/bin/time -f %M -o "$2" gzip -6 > "$5")
      started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      _, err, status = Open3.capture3("bash", "-o", "pipefail", "-c", script, "bash", t1, t2, @main[:db], @queries, target)
      wall = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
      # The two processes run at the same time: their sum bounds the pipeline's peak.
      peak = [t1, t2].sum { |f| File.read(f).lines.last.to_i }
      run = { ok: status.success?, wall: wall, seconds: wall, peak_kb: peak, bytes: File.size?(target),
              error: status.success? ? nil : err.strip[0, 400] }
      FileUtils.rm_rf(out)
      run
    end

    # The archive the restores of "main" (and of its child-key variant)
    # read: TenantKit's own from (a) when there is one, else the Ruby
    # baseline's (same format); made untimed if needed. The 3x restores read
    # (d)'s, made the same way.
    def choose_archive
      if RESTORES.any? { |c| selected?(c) && RESTORE_CASES[c][:data] != :big }
        unless @archives["tk_backup"] || @archives["ruby_backup"]
          log "no archive yet: one untimed TenantKit.backup for the restores"
          backup_run("tk_backup", @main, tenant_kit_cmd("backup"))
          unless @archives["tk_backup"]
            log "TenantKit.backup failed: using the Ruby baseline's archive instead"
            backup_run("ruby_backup", @main, ruby_cmd("ruby_backup.rb", "--quiet"))
          end
        end
        @restore_archive = @archives["tk_backup"] || @archives["ruby_backup"]
        @restore_archive_from = @archives["tk_backup"] ? "TenantKit.backup (a)" : "the Ruby baseline (b)"
        abort "no archive to restore from" unless @restore_archive
        log "restores read #{@restore_archive} (from #{@restore_archive_from})"
      end
      return unless selected?("tk_restore_all_3x") && !@archives["tk_backup_3x"]

      log "no 3x archive yet: one untimed TenantKit.backup of the 3x tenant"
      backup_run("tk_backup_3x", @big, tenant_kit_cmd("backup"))
      abort "no 3x archive to restore from" unless @archives["tk_backup_3x"]
    end

    def data_set(name)
      { main: @main, fk: @fk, big: @big }.fetch(name)
    end

    def archive_for(data)
      data.equal?(@big) ? @archives["tk_backup_3x"] : @restore_archive
    end

    # The database and storage a case starts from, made once per data set
    # and start and copied for every run: the pristine data; the same with
    # tenant 1 purged by TenantKit (purge only, untimed); or the schema alone
    # with an empty storage tree.
    def start_state(data, start)
      return [data[:db], data[:storage]] if start == :pristine

      @starts ||= {}
      @starts[[data[:name], start]] ||= begin
        db = File.join(@work, "start_#{data[:name]}_#{start}.sqlite3")
        storage = File.join(@work, "start_#{data[:name]}_#{start}_storage")
        FileUtils.rm_rf([db, storage])
        if start == :empty
          Variants.build_empty(data[:db], db)
          FileUtils.mkdir_p(storage)
        else
          FileUtils.cp(data[:db], db)
          FileUtils.cp_r(data[:storage], storage)
          purge = run_child(tenant_kit_cmd("restore", "--purge", "--no-restore") +
                            ["--database", db, "--archive", archive_for(data), "--tenant-id", "1", "--storage-root", storage])
          abort "purging tenant 1 of #{data[:name]} for the deleted-first cases failed: #{purge[:error]}" unless purge[:ok]
        end
        [db, storage]
      end
    end

    def case_cmd(kind, *args)
      case kind
      when :tk then tenant_kit_cmd("restore", *args)
      when :ruby then ruby_cmd("ruby_restore.rb", *args, "--quiet")
      when :floor then floor_cmd(*args)
      end
    end

    def restore_run(candidate, spec)
      data = data_set(spec[:data])
      from_db, from_storage = start_state(data, spec[:start])
      db = File.join(@work, "restore.sqlite3")
      storage = File.join(@work, "restore_storage")
      # Reset: a fresh copy of the start database and storage tree.
      FileUtils.rm_rf([db, "#{db}-journal", "#{db}-wal", "#{db}-shm", storage])
      FileUtils.cp(from_db, db)
      FileUtils.cp_r(from_storage, storage)
      kind, *args = spec[:run]
      target = ["--database", db, "--tenant-id", "1"]
      archive = spec[:encrypted] ? encrypted_archive : archive_for(data)
      target += kind == :floor ? ["--source", data[:db]] : ["--archive", archive, "--storage-root", storage]
      target += ["--identity-file", age_key_file] if spec[:encrypted]
      run = run_child(case_cmd(kind, *args) + target)
      child = run[:child] || {}
      run[:seconds] = child["seconds"]
      run[:rss_start_kb] = child["rss_start_kb"]
      run[:read_seconds] = child["read_seconds"]
      run[:events] = child["events"]
      run[:lock] = child["lock"] || {}
      run[:lock] = run[:lock].merge("lock_seconds" => child["lock_seconds"]) if child["lock_seconds"]
      return run unless run[:ok]

      fail_run(run, restore_problems(data, spec, db, storage))
      run
    end

    # What is wrong with tenants 1 and 2 after a restore case.
    def restore_problems(data, spec, db, storage)
      expected = data[:expected]
      expected = expected.to_h { |t, n| [t, t == "tenants" ? n : 0] } if spec[:expect] == :purged
      problems = count_problems(TenantKitSample.tenant_counts(db, 1), expected)
      other = TenantKitSample.tenant_counts(db, 2)
      untouched = spec[:start] == :empty ? other.values.all?(&:zero?) : other == data[:expected_t2]
      problems << "tenant 2 changed" unless untouched
      return problems if %i[purged rows].include?(spec[:expect])

      bad_files = TenantKitSample.blob_files(db, storage, 1).reject { |f| f[:valid] }
      problems << "#{bad_files.size} blob files missing or wrong (#{bad_files.first[:key]})" unless bad_files.empty?
      problems
    end

    # TenantKit may give `{ "users" => 12 }` or `{ "users" => { "rows" => 12 } }`.
    def normalize_counts(tables)
      (tables || {}).to_h { |t, v| [t.to_s, v.is_a?(Hash) ? (v["rows"] || v["count"] || v["written"]) : v] }
    end

    def count_problems(got, expected)
      keys = (got.keys | expected.keys).select { |t| got[t].to_i.positive? || expected[t].to_i.positive? }
      keys.filter_map do |t|
        "#{t}: #{got[t].to_i} rows, expected #{expected[t].to_i}" unless got[t].to_i == expected[t].to_i
      end
    end

    def fail_run(run, problems)
      return if problems.empty?

      run[:ok] = false
      run[:error] = "check failed: #{problems.first(4).join('; ')}#{problems.size > 4 ? ' ...' : ''}"
    end

    # --- report -------------------------------------------------------------

    def median(values)
      v = values.compact.sort
      return nil if v.empty?

      v.size.odd? ? v[v.size / 2] : (v[v.size / 2 - 1] + v[v.size / 2]) / 2.0
    end

    # { seconds:, min:, max:, wall:, peak_kb:, ... } over the successful runs.
    def stats(candidate)
      runs = @runs[candidate]
      good = runs.select { |r| r[:ok] }
      return { failed: runs.size, error: runs.map { |r| r[:error] }.compact.first } if good.empty?

      {
        runs: good.size, failed: runs.size - good.size, error: runs.map { |r| r[:error] }.compact.first,
        seconds: median(good.map { |r| r[:seconds] }), min: good.map { |r| r[:seconds] }.min,
        max: good.map { |r| r[:seconds] }.max, wall: median(good.map { |r| r[:wall] }),
        peak_kb: good.map { |r| r[:peak_kb] }.max, rss_start_kb: median(good.map { |r| r[:rss_start_kb] }),
        bytes: median(good.map { |r| r[:bytes] }), lock: good.map { |r| r[:lock] }.compact.first,
        lock_seconds: median(good.map { |r| lock_seconds(r[:lock]) }), events: good.first[:events],
        read_seconds: median(good.map { |r| r[:read_seconds] }),
      }
    end

    # Seconds from the first lock-like field; the unit comes from its name.
    def lock_seconds(lock)
      return nil if lock.nil? || lock.empty?

      key, value = lock.find { |k, _| k.match?(/lock/i) } || lock.find { |k, _| k.match?(/snapshot|held|hold/i) } || lock.first
      case key
      when /_?ms\b|millis/i then value / 1000.0
      when /_?us\b|micros/i then value / 1e6
      when /_?ns\b|nanos/i then value / 1e9
      else value.to_f
      end
    end

    def fmt_s(value)
      value ? format("%.2f s", value) : "–"
    end

    def fmt_mib(kb)
      kb ? format("%.1f MiB", kb / MIB) : "–"
    end

    def ratio(slow, fast)
      slow && fast && fast.positive? ? slow / fast : nil
    end

    def fmt_ratio(value)
      value ? format("%.1f×", value) : "–"
    end

    def verdict(ok)
      ok.nil? ? "n/a" : (ok ? "PASS" : "FAIL")
    end

    def notes(candidate, s)
      notes = []
      notes << "#{s[:failed]} of #{@opts[:runs]} runs failed: #{s[:error]}" if s[:failed].to_i.positive?
      notes << "#{(s[:bytes] / MIB / MIB).round(1)} MiB output" if s[:bytes]
      notes << "write lock #{fmt_s(s[:lock_seconds])}" if s[:lock_seconds] && candidate.match?(/restore|purge/)
      notes << "read snapshot (writers held off) #{fmt_s(s[:lock_seconds])}" if s[:lock_seconds] && candidate.include?("backup")
      notes << "#{s[:events].values.sum} progress events" if s[:events]
      notes << "RSS = sqlite3 + gzip" if candidate == "sqlite_gzip"
      notes.join("; ")
    end

    def table(header, rows)
      widths = header.each_index.map { |i| ([header[i]] + rows.map { |r| r[i].to_s }).map(&:length).max }
      line = ->(cells) { "| " + cells.each_with_index.map { |c, i| c.to_s.ljust(widths[i]) }.join(" | ") + " |" }
      [line[header], "|" + widths.map { |w| "-" * (w + 2) }.join("|") + "|", *rows.map(&line)].join("\n")
    end

    def report
      s = CANDIDATES.keys.select { |c| selected?(c) }.to_h { |c| [c, stats(c)] }
      m = @main[:summary]["tenants"]["1"]
      rows = s.map do |c, st|
        [CANDIDATES[c], fmt_s(st[:seconds]), st[:min] ? "#{format('%.2f', st[:min])}–#{format('%.2f', st[:max])}" : "–",
         fmt_s(st[:wall]), fmt_mib(st[:peak_kb]), fmt_mib(st[:rss_start_kb]), notes(c, st)]
      end
      results = table(["candidate", "time (median)", "min–max", "process", "peak RSS", "RSS before call", "notes"], rows)

      tk = s["tk_backup"] || {}
      rb = s["ruby_backup"] || {}
      sq = s["sqlite_gzip"] || {}
      big = s["tk_backup_3x"] || {}
      tr = s["tk_restore"] || {}
      rr = s["ruby_restore"] || {}
      vs_ruby = ratio(rb[:seconds], tk[:seconds])
      vs_sqlite = ratio(sq[:seconds], tk[:seconds])
      flat = tk[:peak_kb] && big[:peak_kb] ? big[:peak_kb] < BACKUP_RSS_LIMIT_MIB * MIB && big[:peak_kb] <= tk[:peak_kb] * FLAT_RSS_GROWTH : nil
      target_rows = [
        ["backup ≥ #{BACKUP_SPEEDUP_VS_RUBY.to_i}× faster than the Ruby/AR baseline", fmt_ratio(vs_ruby),
         verdict(vs_ruby && vs_ruby >= BACKUP_SPEEDUP_VS_RUBY)],
        ["backup not slower than sqlite3 -json \\| gzip -6", "#{fmt_ratio(vs_sqlite)} (#{fmt_s(tk[:seconds])} vs #{fmt_s(sq[:seconds])})",
         verdict(vs_sqlite && vs_sqlite >= 1.0)],
        ["backup peak RSS < #{BACKUP_RSS_LIMIT_MIB} MiB", fmt_mib(tk[:peak_kb]),
         verdict(tk[:peak_kb] && tk[:peak_kb] < BACKUP_RSS_LIMIT_MIB * MIB)],
        ["backup RSS flat at 3× tenant size (< #{BACKUP_RSS_LIMIT_MIB} MiB, ≤ #{FLAT_RSS_GROWTH}× of 1×)",
         "#{fmt_mib(big[:peak_kb])} vs #{fmt_mib(tk[:peak_kb])}; time #{fmt_s(big[:seconds])} vs #{fmt_s(tk[:seconds])}",
         verdict(flat)],
        *restore_target_rows(s),
        ["restore write-lock time (reported next to the total)",
         "#{fmt_s(tr[:lock_seconds])} of #{fmt_s(tr[:seconds])} (Ruby: #{fmt_s(rr[:lock_seconds])} of #{fmt_s(rr[:seconds])})",
         tr[:seconds] ? (tr[:lock_seconds] ? "reported" : "NOT REPORTED") : "n/a"],
      ]
      targets = table(%w[target measured status], target_rows)

      md = <<~MD
        ## Benchmark results

        #{Time.now.utc.strftime('%Y-%m-%d %H:%M UTC')}, `bench/run#{@opts[:quick] ? ' --quick' : ''}`, #{@opts[:runs]} timed run(s) per candidate, interleaved; medians.

        #{environment}

        Data: 3 tenants × #{@opts[:rows]} tenant rows (seed 1, journal_mode delete), #{(@main[:db_bytes] / MIB / MIB).round} MiB database.
        Tenant 1: #{@main[:expected].values.sum} rows in #{@main[:expected].count { |_, v| v.positive? }} tables (#{m['tags_tasks']} `tags_tasks` join rows, #{m['attachments']} attachments, #{m['variant_records']} variant records), #{m['blobs']} blob files of #{(m['blob_bytes'] / MIB / MIB).round(1)} MiB.#{@big ? "\n3× data: tenant 1 has #{@big[:expected].values.sum} rows and #{(@big[:summary]['tenants']['1']['blob_bytes'] / MIB / MIB).round(1)} MiB of files (#{(@big[:db_bytes] / MIB / MIB).round} MiB database)." : ''}
        Restores: purge + restore of tenant 1 into a fresh copy of the database, from the archive of #{@restore_archive_from || 'n/a'}: (e)/(f) with the tenant as it was backed up (tenant_kit keeps rows that are already equal), (g)/(h) with the tenant's rows deleted first (every row written); (i)/(j) on the same data with foreign keys declared on child keys no index serves (#{Variants::CHILD_KEYS.flat_map { |t, ks| ks.map { |c, p| "#{t}.#{c} → #{p}" } }.join(', ')}); (k) into a database with the schema and no rows; (l) as (g) on the 3× data. Floors: the same rows deleted, or copied with `INSERT … SELECT` from the attached pristine database, by plain SQL in one transaction, foreign keys off, same indexes.

        #{results}

        Restore cases against their floor and their ActiveRecord baseline (same run; "plan read": the plan's read transaction, from the `lock` events; "write lock": the result's `lock_ms`, for a floor its transaction):

        #{restore_cases_table(s)}

        "time" is the job alone, timed inside the child process (for the Ruby
        candidates after `require`, as inside a running Rails app); "process" is
        the whole child process including Ruby's start. Peak RSS is the child's
        maximum resident set (GNU time `%M`); "RSS before call" is the same
        process just before the job started. Each run was checked: backup row
        counts against the sample app's oracle; after each restore the tenant's
        row counts, tenant 2 untouched and every blob file's size and MD5.

        #{targets}
      MD
      puts
      puts md
      FileUtils.mkdir_p(File.dirname(@opts[:results]))
      File.write(@opts[:results], md)
      log "written to #{@opts[:results]}"
      failed = s.values.sum { |st| st[:failed].to_i }
      exit(failed.zero? ? 0 : 1)
    end

    def environment
      cpu = File.read("/proc/cpuinfo")[/^model name\s*:\s*(.+)$/, 1] rescue "unknown CPU"
      sqlite = `sqlite3 -version 2>/dev/null`.split.first
      rev = `git -C #{ROOT} rev-parse --short HEAD 2>/dev/null`.strip
      dirty = `git -C #{ROOT} status --porcelain 2>/dev/null`.strip.empty? ? "" : " + uncommitted changes"
      "Machine: #{Etc.nprocessors} CPUs (#{cpu}), #{(File.read('/proc/meminfo')[/MemTotal:\s+(\d+)/, 1].to_i / MIB / MIB).round} GiB, " \
        "Linux #{Etc.uname[:release]}; ruby #{RUBY_VERSION}; SQLite #{sqlite}; tenant_kit at #{rev.empty? ? '?' : rev}#{dirty}. " \
        "Load average #{@load_start} at start, #{@load_end} at end (other work on the machine skews times)."
    end
  end
end

Bench::Harness.new(ARGV).run if $PROGRAM_NAME == __FILE__
