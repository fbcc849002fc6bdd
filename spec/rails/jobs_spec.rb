# frozen_string_literal: true

require_relative "rails_helper"

# BackupTenantJob / RestoreTenantJob of the dummy app (one `include` each)
# end to end through ActiveJob, ActiveStorage and ActionMailer.
RSpec.describe "BackupTenantJob and RestoreTenantJob in a Rails app" do
  %w[delete wal].each do |journal_mode|
    context "in #{journal_mode} journal mode" do
      before { reset_app!(journal_mode: journal_mode) }

      let!(:acme) { seed_tenant("Acme", seed: 1) }
      let!(:globex) { seed_tenant("Globex", seed: 2) }
      let(:admin) { globex.users.first }

      def backup(tenant, user: tenant.users.first)
        job = BackgroundJob.create!(tenant: tenant, job_type: "backup", state: "queued")
        BackupTenantJob.perform_later(tenant: tenant, user: user, background_job: job)
        job.reload
        expect(job.state).to eq("done"), job.progress.inspect
        job.progress.fetch("result").fetch("path")
      end

      it "backs a tenant up, and restores it after its data was destroyed through the app" do
        before_acme = tenant_view(acme)
        before_globex = tenant_view(globex)
        acme_files = stored_files.size - attachment_count(globex)
        expect(before_acme[:projects].flat_map { |p| p["tasks"] }.map { |t| t["class"] }).to include("Milestone")

        job = BackgroundJob.create!(tenant: acme, job_type: "backup", state: "queued")
        BackupTenantJob.perform_later(tenant: acme, user: acme.users.first, background_job: job)

        progress = job.reload.progress
        expect(job.state).to eq("done")
        expect(progress).to include("operation" => "backup", "state" => "done", "step" => "done", "percent" => 100.0)
        expect(progress["log"].map { |e| e["step"] }).to include("start", "scan_tables", "dump_progress", "snapshot",
                                                                 "archive_created", "done")
        archive = progress.dig("result", "path")
        expect(File.dirname(archive)).to eq(backups_dir)
        expect(File.basename(archive)).to match(/\Atenant_#{acme.id}_\d{14}\.tar\.gz\z/)
        expect(TenantKit.verify(archive: archive)).to be_ok
        tables = progress.dig("result", "tables")
        expect(tables).to include("checklist_items" => 6, "tags_tasks" => 12, "project_documents" => 2)
        expect(progress.dig("result", "blobs")).to eq(acme_files)

        mail = deliveries.last
        expect(mail.subject).to eq("Backup of Acme created")
        expect(mail.to).to eq([acme.users.first.email])
        expect(mail.body.to_s).to include(archive)

        acme_id = acme.id
        acme.destroy!
        expect(Task.where(tenant_id: acme_id).count + Comment.where(tenant_id: acme_id).count).to eq(0)
        expect(ChecklistItem.count).to eq(6) # globex's only
        expect(stored_files.size).to eq(attachment_count(globex))

        RestoreTenantJob.perform_later(tenant: acme_id, user: admin, archive_path: archive,
                                       dry_run: false, purge: false, restore: true, remap: false)

        expect(tenant_view(acme_id)).to eq(before_acme)
        expect(tenant_view(globex)).to eq(before_globex)
        expect(stored_files.size).to eq(attachment_count(globex) + acme_files)
        mail = deliveries.last
        expect(mail.subject).to eq("Restore of Acme completed")
        expect(mail.to).to eq([admin.email])
        restore_job = BackgroundJob.where(job_type: "restore").last
        expect(restore_job.state).to eq("done")
        expect(restore_job.progress).to include("operation" => "restore", "state" => "done", "percent" => 100.0)
        expect(restore_job.progress["log"].map { |e| e["step"] }).to include("verify", "plan", "restore_progress", "commit", "done")
      end

      it "restores into another tenant with remap after the source was purged" do
        before_acme = tenant_view(acme, without: %i[tenant_id])
        before_globex = tenant_view(globex)
        archive = backup(acme)
        acme.destroy!
        initech = Tenant.create!(name: "Initech")

        RestoreTenantJob.perform_later(tenant: initech, user: admin, archive_path: archive,
                                       dry_run: false, purge: false, restore: true, remap: true)

        expect(deliveries.last.subject).to eq("Restore of Initech completed"), deliveries.last.body.to_s
        expect(Tenant.where(id: acme.id)).not_to exist
        expect(initech.reload.name).to eq("Initech") # an existing tenant row is never overwritten
        expect(tenant_view(initech, without: %i[tenant_id])).to eq(before_acme)
        expect(Task.where(tenant_id: initech.id).count).to eq(8)
        expect(tenant_view(globex)).to eq(before_globex)
      end

      it "restores into another tenant of a fresh database with the schema (remap, tenant row from the archive)" do
        before_acme = tenant_view(acme, without: %i[tenant_id])
        archive = backup(acme)
        # An id the test database does not use (examples before this one may
        # have taken small ones), so the check below that the restore did not
        # land there means something whatever order the examples run in.
        target = Tenant.maximum(:id).to_i + 1000
        fresh = File.join(ENV.fetch("TENANT_KIT_DUMMY_TMP"), "fresh_#{journal_mode}_#{rand(1 << 30)}.sqlite3")
        begin
          ActiveRecord::Base.establish_connection(adapter: "sqlite3", database: fresh, timeout: 5000)
          load_dummy_schema!
          connection.execute("PRAGMA journal_mode=#{journal_mode}")
          expect(TenantKit::Rails::App.database_path).to eq(fresh)

          RestoreTenantJob.perform_later(tenant: target, user: nil, archive_path: archive,
                                         dry_run: false, purge: false, restore: true, remap: true)

          expect(deliveries.last.subject).to eq("Restore of Acme completed"), deliveries.last.body.to_s
          expect(Tenant.pluck(:id, :name)).to eq([[target, "Acme"]])
          expect(tenant_view(target, without: %i[tenant_id])).to eq(before_acme)
          expect(Task.distinct.pluck(:tenant_id)).to eq([target])
        ensure
          ActiveRecord::Base.establish_connection(:test)
        end
        expect(TenantKit::Rails::App.database_path).to eq(database_path)
        expect(Tenant.where(id: target)).not_to exist
      end

      it "purges and restores the same tenant, keeping the restore's own progress row" do
        before = database_fingerprint
        archive = backup(acme)
        tasks_backed_up = Task.where(tenant: acme).count
        acme.projects.first.tasks.first.destroy!
        Task.create!(tenant: acme, project: acme.projects.last, title: "added after the backup")
        tasks_now = Task.where(tenant: acme).count
        expect(database_fingerprint).not_to eq(before)

        RestoreTenantJob.perform_later(tenant: acme, user: admin, archive_path: archive,
                                       dry_run: false, purge: true, restore: true, remap: false)

        expect(database_fingerprint).to eq(before)
        restore_job = BackgroundJob.where(job_type: "restore").last
        expect(restore_job).to have_attributes(tenant_id: acme.id, state: "done")
        # Kept as they are: rows unchanged since the backup. Purged: the task
        # added after it. Inserted again: the destroyed ones (with subtasks).
        expect(restore_job.progress.dig("result", "purged")).to include("tasks" => 1)
        planned = restore_job.progress.dig("result", "planned", "tasks")
        expect(planned).to include("purge" => 1, "update" => 0, "insert" => be_positive)
        expect(planned["insert"] + planned["unchanged"]).to eq(tasks_backed_up)
        expect(planned["unchanged"]).to eq(tasks_now - 1)
        expect(restore_job.progress["log"].map { |e| e["step"] }).to include("purge_progress", "commit", "done")
      end

      it "does a dry run that changes nothing and reports the plan" do
        archive = backup(acme)
        acme.projects.first.update!(name: "renamed")
        acme.tags.first.destroy!
        before = database_fingerprint

        RestoreTenantJob.perform_later(tenant: acme, user: admin, archive_path: archive,
                                       dry_run: true, purge: false, restore: true, remap: false)

        expect(database_fingerprint).to eq(before)
        mail = deliveries.last
        expect(mail.subject).to eq("Dry run of Acme completed")
        job = BackgroundJob.where(job_type: "restore").last
        expect(job.progress).to include("state" => "done")
        expect(job.progress.dig("result", "dry_run")).to be(true)
        expect(job.progress.dig("result", "planned", "projects")).to include("insert" => 0, "purge" => 0)
        expect(job.progress.dig("result", "planned", "tags")).to include("insert" => 1)
      end

      it "fails on a hostile archive: failure mail, failed progress, nothing changed" do
        archive = write_tar_gz(File.join(backups_dir, "tenant_#{acme.id}_20261127000000.tar.gz"),
                               "manifest.json" => "{}", "../escape.txt" => "gotcha")
        before = database_fingerprint

        expect do
          RestoreTenantJob.perform_later(tenant: acme, user: admin, archive_path: archive,
                                         dry_run: false, purge: true, restore: true, remap: false)
        end.not_to raise_error

        expect(database_fingerprint).to eq(before)
        expect(File).not_to exist(File.join(File.dirname(backups_dir), "escape.txt"))
        mail = deliveries.last
        expect(mail.subject).to eq("Restore of Acme failed")
        expect(mail.body.to_s).to include("TenantKit::ArchiveError")
        job = BackgroundJob.where(job_type: "restore").last
        expect(job.state).to eq("failed")
        expect(job.progress).to include("state" => "failed", "step" => "failed", "error_class" => "TenantKit::ArchiveError")
        expect(job.progress["error"]).to be_a(String).and(satisfy { |m| !m.empty? })
        expect(job.progress["log"].last(2).map { |e| e["step"] }).to eq(%w[failed email_enqueued])
      end

      it "records and mails a failed backup (a bad output_dir), then discards the job" do
        blocker = File.join(backups_dir, "not_a_directory")
        File.write(blocker, "")
        stub_const("BrokenBackupJob", Class.new(BackupTenantJob) { tenant_kit output_dir: blocker })

        # Recorded and mailed, then discarded: a retry would fail the same way.
        expect { BrokenBackupJob.perform_later(tenant: acme, user: admin) }.not_to raise_error

        job = BackgroundJob.where(job_type: "backup").last
        expect(job).to have_attributes(tenant_id: acme.id, state: "failed")
        expect(job.progress).to include("state" => "failed", "error_class" => "ArgumentError")
        expect(job.progress["error"]).to match(/not a directory/)
        expect(deliveries.last.subject).to eq("Backup of Acme failed")
        expect(Dir.children(backups_dir)).to eq(["not_a_directory"])
      end
    end
  end

  def attachment_count(tenant)
    ActiveStorage::Attachment.where(record: tenant.users).count +
      ActiveStorage::Attachment.where(record_type: "Task", record_id: Task.where(tenant_id: tenant.id).select(:id)).count +
      ActiveStorage::Attachment.where(record_type: "Document", record_id: Document.where(tenant_id: tenant.id).select(:id)).count
  end
end

RSpec.describe "TenantKit jobs inside a database transaction" do
  before { reset_app! }

  it "refuse to run when performed in one (the native side's own connection would wait for its lock)" do
    tenant = Tenant.create!(name: "Acme")
    ActiveRecord::Base.transaction do
      expect { BackupTenantJob.perform_now(tenant: tenant, user: nil) }.not_to raise_error
      expect(BackgroundJob.last.progress).to include("state" => "failed", "error_class" => "TenantKit::DatabaseError")
      expect(BackgroundJob.last.progress["error"]).to match(/inside an open database transaction/)
      raise ActiveRecord::Rollback
    end
    expect(BackgroundJob.count).to eq(0)
    expect(Dir.children(backups_dir)).to be_empty
  end
end

RSpec.describe "TenantKit job mails" do
  before { reset_app! }

  it "pass arguments by name to mailer actions that take them (positional or keyword)" do
    mailer = Class.new(ActionMailer::Base) do
      default from: "noreply@example.test"
      def self.name = "LegacyTenantMailer"

      def backup_created(user, tenant, path)
        mail(to: user.email, subject: "#{tenant.name}: #{File.basename(path)}", body: "ok")
      end

      def backup_failed(tenant:, error:, **)
        mail(to: "ops@example.test", subject: "#{tenant.name} failed: #{error}", body: "no")
      end
    end
    stub_const("LegacyTenantMailer", mailer)
    stub_const("LegacyBackupJob", Class.new(BackupTenantJob) { tenant_kit mailer: "LegacyTenantMailer" })
    tenant = Tenant.create!(name: "Acme")
    user = User.create!(tenant: tenant, email: "boss@acme.test")

    LegacyBackupJob.perform_now(tenant: tenant, user: user)
    expect(ActionMailer::Base.deliveries.last.subject).to match(/\AAcme: tenant_#{tenant.id}_\d{14}\.tar\.gz\z/)
    expect(ActionMailer::Base.deliveries.last.to).to eq(["boss@acme.test"])
    # Given the tenant's id (as a job enqueued with an id is), the mailer
    # still gets the record.
    expect { LegacyBackupJob.perform_now(tenant: tenant.id, user: user) }
      .to change { ActionMailer::Base.deliveries.size }.by(1)
    expect(ActionMailer::Base.deliveries.last.subject).to match(/\AAcme: tenant_#{tenant.id}_\d{14}\.tar\.gz\z/)

    blocker = File.join(backups_dir, "file")
    File.write(blocker, "")
    LegacyBackupJob.tenant_kit(output_dir: blocker)
    expect { LegacyBackupJob.perform_now(tenant: tenant, user: user) }.not_to raise_error
    expect(ActionMailer::Base.deliveries.last.subject).to start_with("Acme failed: output_dir")
  end
end

RSpec.describe "TenantKit job mails with deliver_later" do
  before { reset_app! }

  it "serialize their params through ActiveJob (records as GlobalIDs, results as Hashes)" do
    stub_const("LaterBackupJob", Class.new(BackupTenantJob) { tenant_kit deliver: :deliver_later })
    stub_const("LaterRestoreJob", Class.new(RestoreTenantJob) { tenant_kit deliver: :deliver_later })
    tenant = seed_tenant("Acme", seed: 3)
    user = tenant.users.first

    LaterBackupJob.perform_later(tenant: tenant, user: user)
    archive = BackgroundJob.last.progress.dig("result", "path")
    expect(ActionMailer::Base.deliveries.last.subject).to eq("Backup of Acme created")
    LaterRestoreJob.perform_later(tenant: tenant, user: user, archive_path: archive,
                                  dry_run: true, purge: false, restore: true, remap: false)
    expect(ActionMailer::Base.deliveries.last.subject).to eq("Dry run of Acme completed")
  end
end

RSpec.describe "RestoreTenantJob and another tenant's rows" do
  before { reset_app! }

  it "reports conflicts in a dry run and refuses the real restore, changing nothing" do
    acme = seed_tenant("Acme", seed: 1)
    globex = seed_tenant("Globex", seed: 2)
    BackupTenantJob.perform_now(tenant: acme, user: nil)
    archive = BackgroundJob.last.progress.dig("result", "path")
    before = database_fingerprint

    # Acme's rows still exist: restoring its ids into Globex would take them over.
    RestoreTenantJob.perform_now(tenant: globex, user: globex.users.first, archive_path: archive,
                                 dry_run: true, purge: false, restore: true, remap: true)
    dry = BackgroundJob.where(job_type: "restore").last.progress
    expect(dry.dig("result", "conflict_count")).to be_positive
    expect(deliveries.last.subject).to eq("Dry run of Globex completed")

    RestoreTenantJob.perform_now(tenant: globex, user: globex.users.first, archive_path: archive,
                                 dry_run: false, purge: false, restore: true, remap: true)
    job = BackgroundJob.where(job_type: "restore").last
    expect(job.progress).to include("state" => "failed", "error_class" => "TenantKit::ConflictError")
    expect(deliveries.last.subject).to eq("Restore of Globex failed")
    expect(database_fingerprint).to eq(before)
  end
end
