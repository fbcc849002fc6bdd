# frozen_string_literal: true

require_relative "rails_helper"
require "sqlite3"

# TenantKit::Rails::ProgressLogger: the job_progress JSON, and its lock
# policy against the native side's transactions in both journal modes.
RSpec.describe TenantKit::Rails::ProgressLogger do
  let(:job) { BackgroundJob.create!(tenant_id: 1, job_type: "backup", state: "running") }

  def stored(record = job)
    db = SQLite3::Database.new(database_path, readonly: true)
    db.busy_timeout = 2000
    raw = db.get_first_value("SELECT job_progress FROM background_jobs WHERE id = ?", record.id)
    raw && JSON.parse(raw)
  ensure
    db&.close
  end

  # UPDATE/INSERT statements on background_jobs issued while the block runs.
  def progress_writes
    writes = []
    callback = lambda do |*, payload|
      writes << payload[:sql] if payload[:sql] =~ /\A\s*(UPDATE|INSERT INTO)\s+"background_jobs"/i
    end
    ActiveSupport::Notifications.subscribed(callback, "sql.active_record") { yield }
    writes
  end

  describe "the JSON it writes" do
    before { reset_app! }

    it "appends to a capped log, keeps the current step, counts and a summary" do
      logger = described_class.new(job, max_log: 5, interval: 0)
      8.times { |i| logger.log_progress("line #{i}", step: :note, n: i) }
      progress = stored
      expect(progress["log"].map { |e| e["summary"] }).to eq((3..7).map { |i| "line #{i}" })
      expect(progress["log"].last).to include("step" => "note", "n" => 7, "at" => a_string_matching(/\A\d{4}-\d\d-\d\dT/))
      expect(progress).to include("step" => "note", "summary" => "line 7", "state" => "running")
      expect(job.reload.progress).to eq(progress)
    end

    it "keeps 200 entries by default and keeps the log of an existing row" do
      logger = described_class.new(job, interval: 0)
      250.times { |i| logger.log_progress(step: "step#{i % 2}") }
      expect(stored["log"].size).to eq(200)
      again = described_class.new(job.reload, interval: 0)
      again.log_progress("more", step: :note)
      expect(stored["log"].size).to eq(200)
      expect(stored["log"].last["summary"]).to eq("more")
    end

    it "coalesces progress ticks of one table, and computes a percent that never goes back" do
      logger = described_class.new(job, interval: 0)
      logger.track(:backup, journal_mode: "wal") do |on_event|
        on_event.call(step: :start, at: "2026-11-28T00:00:00Z")
        on_event.call(step: :scan_tables, tables: %w[a b])
        on_event.call(step: :dump_progress, table: "a", processed: 0, total: 10)
        on_event.call(step: :dump_progress, table: "a", processed: 10, total: 10)
        expect(stored["percent"]).to be_within(0.1).of(5 + 65 * 0.5)
        on_event.call(step: :dump_progress, table: "b", processed: 5, total: 10)
        expect(stored).to include("table" => "b", "processed" => 5, "total" => 10, "summary" => "dump progress b 5/10")
        expect(stored["percent"]).to be_within(0.1).of(5 + 65 * 0.75)
        on_event.call(step: :snapshot)
        TenantKit::BackupResult.new(path: "/x.tar.gz", tables: { "a" => 10 }, errors: [])
      end
      progress = stored
      expect(progress["log"].map { |e| e["step"] }).to eq(%w[start scan_tables dump_progress dump_progress snapshot])
      expect(progress["log"][2]).to include("table" => "a", "processed" => 10)
      expect(progress).to include("state" => "done", "percent" => 100.0, "result" => include("path" => "/x.tar.gz"))
      expect(progress["finished_at"]).to be_a(String)
    end

    it "throttles writes of the same step, but always writes a new step" do
      logger = described_class.new(job, interval: 60)
      logger.log_progress(step: :dump_progress, table: "a", processed: 1, total: 3)
      logger.log_progress(step: :dump_progress, table: "a", processed: 2, total: 3)
      expect(stored).to include("step" => "dump_progress", "processed" => 1)
      logger.log_progress(step: :snapshot)
      expect(stored).to include("step" => "snapshot")
      expect(stored["log"].map { |e| [e["step"], e["processed"]] }).to eq([["dump_progress", 2], ["snapshot", nil]])
    end

    it "never fails the work it reports on" do
      tenant = Tenant.create!(name: "Acme")
      logger = described_class.new(job, column: :no_such_column, interval: 0)
      result = logger.track(:backup) do |on_event|
        TenantKit.backup(**TenantKit::Rails::App.options, tenant_id: tenant.id, output_dir: backups_dir, &on_event)
      end
      expect(File).to exist(result.path)
      expect(logger.progress).to include("state" => "done")
    end

    it "records a failure with its message and re-raises it" do
      logger = described_class.new(job, interval: 0)
      expect do
        logger.track(:restore) do |on_event|
          on_event.call(step: :start)
          raise TenantKit::ArchiveError, "entry ../x is outside the archive"
        end
      end.to raise_error(TenantKit::ArchiveError)
      expect(stored).to include("state" => "failed", "step" => "failed", "error" => "entry ../x is outside the archive",
                                "error_class" => "TenantKit::ArchiveError")
      expect(stored["log"].map { |e| e["step"] }).to eq(%w[start failed])
    end
  end

  %w[delete wal].each do |journal_mode|
    context "against the native locks in #{journal_mode} journal mode" do
      before do
        reset_app!(journal_mode: journal_mode)
        seed_tenant("Acme", seed: 1)
        seed_tenant("Globex", seed: 2)
      end

      let(:acme) { Tenant.find_by!(name: "Acme") }

      # Runs the native call inside logger.track, noting for each event the
      # lock the native side announced, the step and the step another
      # connection sees stored; and the lock at each write of the progress row.
      def run_tracked(logger, operation, options)
        lock = "none"
        seen = []
        writes = []
        count_writes = lambda do |*, payload|
          writes << lock if payload[:sql] =~ /\A\s*(UPDATE|INSERT INTO)\s+"background_jobs"/i
        end
        ActiveSupport::Notifications.subscribed(count_writes, "sql.active_record") do
          logger.track(operation) do |on_event|
            TenantKit.public_send(operation, **options) do |event|
              lock = event[:state] if event[:step] == :lock
              on_event.call(event)
              seen << [lock, event[:step], stored&.fetch("step", nil)]
            end
          end
        end
        [seen, writes]
      end

      it "logs a backup as it goes, but not during the read transaction in rollback-journal mode" do
        logger = described_class.new(job, interval: 0)
        options = TenantKit::Rails::App.options.merge(tenant_id: acme.id, output_dir: backups_dir)
        started = monotonic
        seen, writes = run_tracked(logger, :backup, options)
        expect(monotonic - started).to be < 3 # the app connection's busy timeout is 5 s

        expect(seen.select { |_, step, _| step == :lock }.map(&:first)).to eq(%w[read none])
        reading = seen.select { |l, step, _| l == "read" && step != :lock }
        expect(reading.map { |_, step, _| step }).to include(:scan_tables, :dump_progress)
        # Written as it goes where nobody waits on it: before and after the
        # read transaction, and during it in WAL mode (readers do not block
        # writers there: another connection sees the progress while the
        # backup still reads).
        live = seen.reject { |l, step, _| step == :lock || (l == "read" && journal_mode != "wal") }
        expect(live.map { |_, step, _| step }).to include(:start, :snapshot, :done)
        expect(live.map(&:last)).to eq(live.map { |_, step, _| step.to_s })
        if journal_mode == "wal"
          expect(writes).to include("read")
        else
          # Held: not even tried (it could only find the database busy).
          expect(reading.map(&:last).uniq).to eq(["start"])
          expect(writes).not_to include("read")
        end
        expect(stored).to include("state" => "done", "percent" => 100.0)
        expect(stored["log"].map { |e| e["step"] }).to include("start", "scan_tables", "dump_progress", "snapshot", "done")
      end

      it "writes a restore's progress as it goes, but never while the native side holds a lock" do
        archive = TenantKit.backup(**TenantKit::Rails::App.options, tenant_id: acme.id, output_dir: backups_dir).path
        logger = described_class.new(job, interval: 0)
        options = TenantKit::Rails::App.options.merge(tenant_id: acme.id, archive: archive, purge: true)
        started = monotonic
        seen, writes = run_tracked(logger, :restore, options)
        expect(monotonic - started).to be < 3 # the app connection's busy timeout is 5 s
        expect(seen.select { |_, step, _| step == :lock }.map(&:first)).to eq(%w[read none write none])

        # Verifying and staging hold no lock: another connection sees each step as it comes.
        unlocked = seen.take_while { |_, step, _| step != :lock }
        expect(unlocked.map { |_, step, _| step }).to include(:start, :verify)
        expect(unlocked.map(&:last)).to eq(unlocked.map { |_, step, _| step.to_s })
        # The plan's read transaction keeps writers out in rollback-journal mode only.
        planning = seen.select { |l, step, _| l == "read" && step == :plan_progress }
        expect(planning).not_to be_empty
        expect(planning.map(&:last).uniq).to eq(journal_mode == "wal" ? ["plan_progress"] : ["verify"])
        # (In rollback-journal mode a write then would only find the database busy.)
        if journal_mode == "wal"
          expect(writes).to include("read")
        else
          expect(writes).not_to include("read")
        end
        # Nothing is written while the restore writes.
        expect(writes).not_to include("write")
        expect(seen.select { |l, _, _| l == "write" }.map(&:last).uniq).to eq(["plan"])

        expect(stored).to include("operation" => "restore", "state" => "done", "percent" => 100.0)
        steps = stored["log"].map { |e| e["step"] }
        expect(steps).to include("start", "verify", "plan_progress", "plan", "purge_progress", "restore_progress",
                                 "commit", "done")
        expect(steps).not_to include("lock")
        # Ticks of one step replace each other in the log.
        expect(steps.each_cons(2).count { |a, b| a == b && %w[verify plan_progress].include?(a) }).to eq(0)
      end

      it "persists a failed restore's log after the rollback, data unchanged" do
        archive = TenantKit.backup(**TenantKit::Rails::App.options, tenant_id: acme.id, output_dir: backups_dir).path
        Task.where(tenant_id: acme.id).first.update!(title: "changed after the backup")
        logger = described_class.new(job, interval: 0)
        before = database_fingerprint
        options = TenantKit::Rails::App.options.merge(tenant_id: acme.id, archive: archive, purge: true)
        expect do
          logger.track(:restore) do |on_event|
            TenantKit.restore(**options) do |event|
              on_event.call(event)
              raise Interrupt, "stopped by the operator" if event[:step] == :restore_progress
            end
          end
        end.to raise_error(Interrupt)
        expect(database_fingerprint).to eq(before)
        expect(stored).to include("state" => "failed", "error" => "stopped by the operator", "error_class" => "Interrupt")
        expect(stored["log"].map { |e| e["step"] }).to include("purge_progress", "restore_progress", "failed")
      end

      it "never blocks forever when another connection holds the lock" do
        logger = described_class.new(job, interval: 0, flush_timeout: 0.3)
        options = TenantKit::Rails::App.options.merge(tenant_id: acme.id, output_dir: backups_dir)
        blocker = SQLite3::Database.new(database_path)
        blocker.execute("BEGIN EXCLUSIVE")
        blocker.execute("UPDATE tenants SET name = name")
        started = monotonic
        expect do
          logger.track(:backup) do |on_event|
            on_event.call(step: :start)
            TenantKit.backup(**options, busy_timeout: 0.2, &on_event)
          end
        end.to raise_error(TenantKit::DatabaseError) if journal_mode == "delete"
        if journal_mode == "wal" # readers are not blocked in WAL: the backup works, the log waits
          logger.track(:backup) do |on_event|
            TenantKit.backup(**options, &on_event)
          end
        end
        expect(monotonic - started).to be < 3
        expect(logger.progress["state"]).to eq(journal_mode == "delete" ? "failed" : "done")
        blocker.execute("ROLLBACK")
        blocker.close
        expect(logger.flush).to be(true)
        expect(stored["state"]).to eq(logger.progress["state"])
      ensure
        blocker&.close unless blocker&.closed?
      end
    end
  end
end
