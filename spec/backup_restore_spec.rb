# frozen_string_literal: true

require_relative "spec_helper"
require_relative "support/tmpdir"
require "zlib"
require "rubygems/package"
require "set"
require "timeout"

# TenantKit.backup / restore / verify / prune through the Ruby interface, on
# a real SQLite file and a real Disk-service storage tree, checked against
# the sample app's independent oracle (spec/support/sample_app.rb).
RSpec.describe "TenantKit backup and restore" do
  include_context "tmpdir"

  def create_app(**opts)
    create_sample_app(tenants: 3, rows_per_tenant: 2_000, blob_bytes: 64 * 1024, seed: 7, extra_types: true, **opts)
  end

  def backup(tenant_id = 1, &block)
    TenantKit.backup(database: db, tenant_id: tenant_id, output_dir: out, storage_root: storage, &block)
  end

  def archive_entries(path)
    entries = {}
    Zlib::GzipReader.open(path) do |gz|
      Gem::Package::TarReader.new(gz) { |tar| tar.each { |e| entries[e.full_name] = e.read || "" } }
    end
    entries
  end

  def write_archive(path, entries)
    File.open(path, "wb") do |f|
      gz = Zlib::GzipWriter.new(f)
      Gem::Package::TarWriter.new(gz) do |tar|
        entries.each { |name, data| tar.add_file_simple(name, 0o600, data.bytesize) { |io| io.write(data) } }
      end
      gz.close
    end
  end

  def everything_digest
    (1..3).to_h { |t| [t, TenantKitSample.tenant_digest(db, t)] }
  end

  describe ".backup" do
    before { create_app }

    it "writes every row and file of the tenant, and nothing else" do
      result = backup(2)
      expect(result).to be_a(TenantKit::BackupResult)
      expect(File.basename(result.path)).to match(/\Atenant_2_\d{14}\.tar\.gz\z/)
      expect(File.stat(result.path).mode & 0o777).to eq(0o600)
      expect(result.to_h.keys).to include(:path, :tables, :blobs, :bytes, :sha256, :errors)
      expect(result.sha256).to eq(Digest::SHA256.file(result.path).hexdigest)
      expect(result.bytes).to eq(File.size(result.path))
      expect(result.errors).to eq([])

      expected = TenantKitSample.tenant_counts(db, 2).reject { |_, n| n.zero? }
      expect(result.tables.reject { |_, n| n.zero? }).to eq(expected)

      entries = archive_entries(result.path)
      rows = entries.fetch("dump.jsonl").lines.map { |l| JSON.parse(l) }
      rows.each do |line|
        tenant = line["row"]["tenant_id"]
        expect(tenant).to eq(2), "row of another tenant: #{line}" if line["row"].key?("tenant_id") && line["table"] != "tenants"
      end
      TenantKitSample.blob_files(db, storage, 2).each do |blob|
        expect(entries.fetch("blobs/#{blob[:key]}").b).to eq(File.binread(blob[:path]))
      end
      expect(result.blobs).to eq(TenantKitSample.blob_files(db, storage, 2).size)
    end

    it "yields progress events as Hashes with a Symbol step and a UTC time" do
      events = []
      backup { |e| events << e }
      steps = events.map { |e| e[:step] }
      expect(steps).to include(:start, :scan_tables, :dump_progress, :archive_created, :done)
      expect(steps.first).to eq(:start)
      expect(steps.last).to eq(:done)
      events.each { |e| expect(e[:at]).to match(/\A\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\z/) }
      dump = events.select { |e| e[:step] == :dump_progress }
      expect(dump).to all(include(:table, :processed, :total))
      tasks = dump.select { |e| e[:table] == "tasks" }
      expect(tasks.last[:processed]).to eq(tasks.last[:total])
      expect(tasks.map { |e| e[:processed] }).to eq(tasks.map { |e| e[:processed] }.sort)
    end

    it "stops on an exception in the block, re-raises it and leaves no archive" do
      error = Class.new(StandardError)
      %i[scan_tables dump_progress archive_created done].each do |step|
        expect { backup { |e| raise error, "stop" if e[:step] == step } }.to raise_error(error, "stop")
        expect(Dir.children(out)).to eq([]), "left behind after raise at #{step}"
      end
    end

    it "stops on break and returns the break value" do
      value = backup { |e| break :stopped if e[:step] == :dump_progress }
      expect(value).to eq(:stopped)
      expect(Dir.children(out)).to eq([])
    end

    it "raises ArgumentError for bad arguments and writes nothing" do
      expect { TenantKit.backup(database: File.join(@dir, "nope.db"), tenant_id: 1, output_dir: out) }
        .to raise_error(ArgumentError, /does not exist/)
      expect { TenantKit.backup(database: db, tenant_id: 404, output_dir: out) }
        .to raise_error(ArgumentError, /no rows/)
      expect { TenantKit.backup(database: db, tenant_id: 1, output_dir: out, tenant_column: "account_id") }
        .to raise_error(ArgumentError, /account_id/)
      expect { TenantKit.backup(database: db, tenant_id: 1, output_dir: File.join(@dir, "missing")) }
        .to raise_error(ArgumentError, /output_dir/)
      expect { TenantKit.backup(database: db, tenant_id: 1, output_dir: out, storage_root: File.join(@dir, "x")) }
        .to raise_error(ArgumentError, /storage_root/)
      expect { TenantKit.backup(database: db, tenant_id: 1.5, output_dir: out) }.to raise_error(ArgumentError, /tenant_id/)
      [2**63, -2**63 - 1].each do |id|
        expect { TenantKit.backup(database: db, tenant_id: id, output_dir: out) }
          .to raise_error(ArgumentError, /tenant_id: #{id} does not fit/)
      end
      not_a_database = File.join(@dir, "not_a_database.sqlite3")
      File.binwrite(not_a_database, "x" * 4096)
      expect { TenantKit.backup(database: not_a_database, tenant_id: 1, output_dir: out) }
        .to raise_error(TenantKit::DatabaseError, /#{Regexp.escape(not_a_database)} is not a usable SQLite database/)
      expect { TenantKit.backup(database: 42, tenant_id: 1, output_dir: out) }.to raise_error(ArgumentError, /database/)
      [nil, "abc", Float::INFINITY, Float::NAN, -1, 1e7].each do |timeout|
        expect { TenantKit.backup(database: db, tenant_id: 1, output_dir: out, busy_timeout: timeout) }
          .to raise_error(ArgumentError, /busy_timeout/), "busy_timeout: #{timeout.inspect}"
      end
      expect { TenantKit::Settings.new(database: db, defaults: {}, busy_timeout_ms: 2**31) }
        .to raise_error(ArgumentError, /busy_timeout_ms/)
      expect(Dir.children(out)).to eq([])
    end

    it "takes a tenant id from a Rails param (a String) as the tenant it names" do
      result = TenantKit.backup(database: db, tenant_id: "1", output_dir: out, storage_root: storage)
      expect(result.rows).to eq(backup(1).rows)
      expect(TenantKit.verify(archive: result.path).tenant_id).to eq(1)
      before_digest = everything_digest
      restored = TenantKit.restore(database: db, archive: result.path, tenant_id: "1", purge: true,
                                   storage_root: storage)
      expect(restored.conflicts).to eq([])
      expect(everything_digest).to eq(before_digest)
    end

    it "records a blob whose file is missing and still completes" do
      missing = TenantKitSample.blob_files(db, storage, 1).first
      File.delete(missing[:path])
      result = backup(1)
      expect(result.errors).to include(a_hash_including(kind: "missing_blob_file", key: missing[:key]))
      expect(TenantKit.verify(archive: result.path).errors.size).to eq(1)
    end
  end

  describe ".restore" do
    before { create_app }

    it "purges and restores the tenant exactly, other tenants untouched" do
      before_digest = everything_digest
      files_before = TenantKitSample.blob_files(db, storage, 2).map { |b| [b[:key], File.binread(b[:path])] }
      archive = backup(2).path
      # After the backup: one task edited, one deleted (its time entries too).
      conn = SQLite3::Database.new(db)
      first, last = conn.get_first_row("SELECT min(id), max(id) FROM tasks WHERE tenant_id = 2")
      conn.execute("UPDATE tasks SET title = 'edited after the backup' WHERE id = ?", [first])
      conn.execute("DELETE FROM time_entries WHERE task_id = ?", [last])
      conn.execute("DELETE FROM tasks WHERE id = ?", [last])
      conn.close
      events = []
      result = TenantKit.restore(database: db, archive: archive, tenant_id: 2, storage_root: storage, purge: true) { |e| events << e }
      expect(result).to be_a(TenantKit::RestoreResult)
      expect(result.dry_run?).to be(false)
      tasks = before_digest[2]["tasks"][:rows]
      # Rows unchanged since the backup are kept as they are, not purged.
      expect(result.planned["tasks"]).to include(unchanged: tasks - 2, update: 1, insert: 1, purge: 0)
      expect(result.purged["tasks"]).to be_nil
      expect(result.restored["tasks"]).to eq(tasks)
      expect(result.lock_ms).to be <= result.duration_ms
      expect(everything_digest).to eq(before_digest)
      expect(TenantKitSample.blob_files(db, storage, 2).map { |b| [b[:key], File.binread(b[:path])] }).to eq(files_before)
      steps = events.map { |e| e[:step] }
      expect(steps).to include(:start, :verify, :plan, :purge_progress, :restore_progress, :commit, :done)
    end

    it "changes no byte in a dry run and reports the plan and conflicts" do
      archive = backup(1).path
      conn = SQLite3::Database.new(db)
      conn.execute("UPDATE tasks SET title = 'edited after the backup' WHERE id = (SELECT min(id) FROM tasks WHERE tenant_id = 1)")
      conn.close
      db_bytes = File.binread(db)
      result = TenantKit.restore(database: db, archive: archive, tenant_id: 1, storage_root: storage, dry_run: true, purge: true)
      expect(result.dry_run?).to be(true)
      expect(result.planned["tasks"]).to include(purge: 0, insert: 0, update: 1, unchanged: be_positive)
      expect(result.conflicts).to eq([])
      expect(File.binread(db)).to eq(db_bytes)

      conflict = TenantKit.restore(database: db, archive: archive, tenant_id: 3, remap: true, storage_root: storage, dry_run: true)
      expect(conflict.conflicts?).to be(true)
      expect(conflict.conflicts.first).to include(:table, :key, :reason)
      expect(File.binread(db)).to eq(db_bytes)
    end

    it "raises ConflictError instead of touching another tenant, and changes nothing" do
      archive = backup(1).path
      before_digest = everything_digest
      expect do
        TenantKit.restore(database: db, archive: archive, tenant_id: 3, remap: true, storage_root: storage)
      end.to raise_error(TenantKit::ConflictError, /another tenant/)
      expect(everything_digest).to eq(before_digest)
    end

    it "refuses an archive of another tenant without remap" do
      archive = backup(1).path
      expect { TenantKit.restore(database: db, archive: archive, tenant_id: 2) }
        .to raise_error(ArgumentError, /remap: true/)
    end

    it "rolls back when the block raises, at any step" do
      archive = backup(1).path
      before_digest = everything_digest
      %i[plan purge_progress restore_progress commit].each do |step|
        expect do
          TenantKit.restore(database: db, archive: archive, tenant_id: 1, storage_root: storage, purge: true) do |e|
            raise Interrupt, "stop" if e[:step] == step
          end
        end.to raise_error(Interrupt)
        expect(everything_digest).to eq(before_digest), "changed after raise at #{step}"
      end
    end

    it "after the commit, lets the block's error through without reporting a failure" do
      archive = backup(1).path
      SQLite3::Database.new(db).tap { |c| c.execute("UPDATE projects SET name = 'changed' WHERE tenant_id = 1") }.close
      steps = []
      expect do
        TenantKit.restore(database: db, archive: archive, tenant_id: 1, storage_root: storage, purge: true) do |e|
          steps << e[:step]
          raise Interrupt, "stop" if e[:step] == :done
        end
      end.to raise_error(Interrupt)
      expect(steps.last).to eq(:done) # no :failed: the restore is committed
      conn = SQLite3::Database.new(db)
      expect(conn.get_first_value("SELECT count(*) FROM projects WHERE name = 'changed'")).to eq(0)
      conn.close
    end

    it "refuses an archive with files when storage_root is missing" do
      archive = backup(1).path
      before_digest = everything_digest
      expect { TenantKit.restore(database: db, archive: archive, tenant_id: 1, purge: true) }
        .to raise_error(ArgumentError, /storage_root/)
      expect(everything_digest).to eq(before_digest)
    end

    it "raises TenantKit errors for broken or hostile archives, in dry run too" do
      good = backup(1).path
      entries = archive_entries(good)
      before_digest = everything_digest
      garbage = File.join(@dir, "garbage.tar.gz")
      File.binwrite(garbage, "not an archive at all")
      evil = File.join(@dir, "evil.tar.gz")
      write_archive(evil, entries.merge("../../etc/evil" => "x"))
      tampered = File.join(@dir, "tampered.tar.gz")
      dump = entries["dump.jsonl"].sub('"tenant_id":1', '"tenant_id":2')
      write_archive(tampered, entries.merge("dump.jsonl" => dump))
      [true, false].each do |dry_run|
        [[garbage, TenantKit::ArchiveError], [evil, TenantKit::ArchiveError], [tampered, TenantKit::IntegrityError]].each do |path, klass|
          expect { TenantKit.restore(database: db, archive: path, tenant_id: 1, storage_root: storage, dry_run: dry_run) }
            .to raise_error(klass)
        end
      end
      expect(everything_digest).to eq(before_digest)
    end
  end

  describe ".verify" do
    before { create_app }

    it "checks every hash and names the entry that is wrong" do
      good = backup(1)
      result = TenantKit.verify(archive: good.path)
      expect(result.ok?).to be(true)
      expect(result.rows).to eq(good.rows)
      entries = archive_entries(good.path)
      key, bytes = entries.find { |name, _| name.start_with?("blobs/") }
      bad = File.join(@dir, "bad.tar.gz")
      write_archive(bad, entries.merge(key => bytes.reverse))
      expect { TenantKit.verify(archive: bad) }.to raise_error(TenantKit::IntegrityError, /#{Regexp.escape(key)}/)
      expect { TenantKit.verify(archive: File.join(@dir, "none.tar.gz")) }.to raise_error(ArgumentError)
    end
  end

  describe ".prune" do
    it "deletes old archives by their name only" do
      names = %w[tenant_1_20260101000000.tar.gz tenant_1_20260201000000.tar.gz tenant_1_20260301000000.tar.gz
                 tenant_2_20260101000000.tar.gz notes.txt tenant_1_20260101000000.tar.gz.bak]
      names.each { |n| File.write(File.join(out, n), "x") }
      File.symlink(File.join(out, "notes.txt"), File.join(out, "tenant_3_20200101000000.tar.gz"))
      deleted = TenantKit.prune(output_dir: out, keep_last: 1)
      expect(deleted.map { |p| File.basename(p) }).to contain_exactly(
        "tenant_1_20260101000000.tar.gz", "tenant_1_20260201000000.tar.gz"
      )
      expect(Dir.children(out)).to include("notes.txt", "tenant_1_20260101000000.tar.gz.bak",
                                           "tenant_2_20260101000000.tar.gz", "tenant_3_20200101000000.tar.gz")
      deleted = TenantKit.prune(output_dir: out, older_than: Time.utc(2026, 2, 1))
      expect(deleted.map { |p| File.basename(p) }).to eq(["tenant_2_20260101000000.tar.gz"])
      expect { TenantKit.prune(output_dir: out) }.to raise_error(ArgumentError)
      # A DateTime is a point in time like a Time; a negative age is a mistake, not "everything".
      deleted = TenantKit.prune(output_dir: out, older_than: DateTime.new(2026, 3, 1, 0, 0, 1), dry_run: true)
      expect(deleted.map { |p| File.basename(p) }).to eq(["tenant_1_20260301000000.tar.gz"])
      expect { TenantKit.prune(output_dir: out, older_than: -5) }.to raise_error(ArgumentError, /negative/)
      expect { TenantKit.prune(output_dir: out, older_than: Date.new(2026, 3, 1)) }.to raise_error(ArgumentError, /Date/)
    end
  end

  describe "a locked database" do
    # Another connection holds the lock; the job waits busy_timeout for it.
    # SQLite's own busy wait would sleep through all of it: a job timeout
    # (Timeout.timeout, Thread#kill) must end the wait, not outlast it.
    before { create_app }

    def monotonic
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end

    def locked
      locker = SQLite3::Database.new(db)
      locker.execute("BEGIN EXCLUSIVE")
      yield
    ensure
      locker&.execute("ROLLBACK")
      locker&.close
    end

    it "stops waiting for the lock on Timeout.timeout and Thread#kill, leaving nothing behind" do
      archive = backup(1).path
      before_digest = everything_digest
      locked do
        started = monotonic
        expect do
          Timeout.timeout(0.3) { TenantKit.backup(database: db, tenant_id: 1, output_dir: out, busy_timeout: 30) }
        end.to raise_error(Timeout::Error)
        expect(monotonic - started).to be < 2

        started = monotonic
        worker = Thread.new do
          TenantKit.restore(database: db, archive: archive, tenant_id: 1, purge: true, storage_root: storage,
                            busy_timeout: 30)
        end
        sleep 0.3
        expect(worker).to be_alive # waiting for the lock
        worker.kill
        expect(worker.join(5)).not_to be_nil
        expect(monotonic - started).to be < 2
      end
      expect(Dir.children(out)).to eq([File.basename(archive)])
      expect(everything_digest).to eq(before_digest)
    end

    it "still waits busy_timeout, then raises DatabaseError" do
      locked do
        started = monotonic
        expect { TenantKit.backup(database: db, tenant_id: 1, output_dir: out, busy_timeout: 0.5) }
          .to raise_error(TenantKit::DatabaseError, /locked|busy/)
        expect(monotonic - started).to be_between(0.45, 3)
      end
      expect(Dir.children(out)).to eq([])
    end
  end

  describe "consistency" do
    it "never archives a child without its parent while the app keeps writing" do
      create_app
      writer = fork do
        conn = SQLite3::Database.new(db)
        conn.busy_timeout = 10_000
        id = 900_000
        deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 20
        until Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
          id += 1
          conn.transaction do
            conn.execute("INSERT INTO projects(id, tenant_id, name, archived, created_at, updated_at) VALUES (?, 1, 'p', 0, 'x', 'x')", [id])
            conn.execute("INSERT INTO tasks(id, tenant_id, project_id, title, created_at, updated_at) VALUES (?, 1, ?, 't', 'x', 'x')", [id, id])
          end
          # A busy app, not a tight loop: a writer that never lets go would
          # starve every reader in rollback-journal mode, tenant_kit or not.
          sleep 0.002
        end
      rescue SQLite3::BusyException
        retry
      end
      begin
        sleep 0.2
        3.times do
          result = backup(1)
          rows = archive_entries(result.path)["dump.jsonl"].lines.map { |l| JSON.parse(l) }
          projects = rows.select { |r| r["table"] == "projects" }.map { |r| r["row"]["id"] }.to_set
          orphans = rows.select { |r| r["table"] == "tasks" && !projects.include?(r["row"]["project_id"]) }
          expect(orphans).to eq([])
          snapshot = TenantKit.backup(database: db, tenant_id: 1, output_dir: out) { |e| @snapshot = e if e[:step] == :snapshot }
          expect(@snapshot).to include(:held_ms, :journal_mode)
          File.delete(snapshot.path)
        end
      ensure
        Process.kill(:KILL, writer)
        Process.wait(writer)
      end
    end
  end
end
