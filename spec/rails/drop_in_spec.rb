# frozen_string_literal: true

require_relative "rails_helper"
require "generators/tenant_kit/mailer/mailer_generator"

# Issue 21, beyond the jobs: the mailer generator and the boot check of
# mail actions, settings that never freeze on read, retention, the job
# table migration that renames nothing.
RSpec.describe "the Rails drop-in" do
  before { reset_app! }

  describe "tenant_kit:mailer" do
    let(:generated) { File.join(ENV.fetch("TENANT_KIT_DUMMY_TMP"), "mailer_gen") }

    before do
      FileUtils.rm_rf(generated)
      TenantKit::Generators::MailerGenerator.start(["--quiet", "--class-name", "GeneratedTenantMailer",
                                                    "--parent", "ActionMailer::Base"], destination_root: generated)
      Object.send(:remove_const, :GeneratedTenantMailer) if defined?(GeneratedTenantMailer)
      load File.join(generated, "app/mailers/generated_tenant_mailer.rb")
      GeneratedTenantMailer.default from: "noreply@example.test"
      GeneratedTenantMailer.prepend_view_path(File.join(generated, "app/views"))
    end

    it "writes the four actions with text and HTML views, the dry run's plan and conflicts in the mail" do
      expect(TenantKit::Rails::MailerCheck.missing([Class.new(AppBackupJob) { tenant_kit mailer: "GeneratedTenantMailer" }]))
        .to eq({})
      tenant = Tenant.create!(name: "Acme")
      mail = GeneratedTenantMailer.with(tenant: tenant, archive_path: "/b/a.tar.gz", result: { dry_run: true },
                                        dry_run: true, planned: { projects: { insert: 2, update: 1, purge: 0 } },
                                        conflicts: [{ table: "tags", key: "7", reason: "unique name taken" }],
                                        conflict_count: 1).restore_completed
      expect(mail.subject).to eq("Dry run of Acme completed")
      expect(mail.parts.map(&:mime_type)).to eq(%w[text/plain text/html])
      text = mail.text_part.body.to_s
      expect(text).to include("projects: 2 to insert, 1 to update, 0 to purge")
      expect(text).to include("1 conflict(s): a restore would be refused.", "tags 7: unique name taken")
      expect(mail.html_part.body.to_s).to include("<td>projects</td><td>2</td><td>1</td><td>0</td>")
      failed = GeneratedTenantMailer.with(tenant: tenant, error: "boom", error_class: "TenantKit::ArchiveError").backup_failed
      expect(failed.subject).to eq("Backup of Acme failed")
      expect(failed.text_part.body.to_s).to include("TenantKit::ArchiveError: boom")
    end
  end

  it "names at boot the mail actions a configured mailer lacks" do
    stub_const("HalfMailer", Class.new(ActionMailer::Base) { def backup_created; end })
    job = Class.new(AppBackupJob) { tenant_kit mailer: "HalfMailer" }
    expect(TenantKit::Rails::MailerCheck.missing([job])).to eq("HalfMailer" => ["backup_failed"])
    log = StringIO.new
    allow(TenantKit::Rails::MailerCheck).to receive(:loaded_jobs).and_return([job])
    expect { TenantKit::Rails::MailerCheck.warn_missing(Logger.new(log)) }.to output(/HalfMailer has no backup_failed/).to_stderr
    expect(log.string).to include("[tenant_kit] HalfMailer has no backup_failed: those mails are not sent")
  end

  it "reading settings writes nothing, so a later tenant-level change reaches every instance" do
    acme = Tenant.create!(name: "Acme")
    alice = User.create!(tenant: acme, email: "a@acme.test", name: "a")
    expect { Setting.user_settings(alice) }.not_to(change { Setting.count })
    Setting.create!(tenant: acme, target_type: nil, target_id: nil, key: "theme", value: '"sepia"')
    expect(Setting.user_settings(alice)[:theme]).to eq("sepia")
  end

  it "PruneJob keeps the newest archives per tenant" do
    klass = Class.new(ActiveJob::Base) do
      include TenantKit::Rails::PruneJob
      tenant_kit_prune keep_last: 2, output_dir: -> { ENV.fetch("TENANT_KIT_DUMMY_BACKUPS") }
    end
    names = (1..4).map { |d| "tenant_1_2026010#{d}000000.tar.gz" } + ["notes.txt"]
    names.each { |n| File.write(File.join(backups_dir, n), "x") }
    klass.perform_now
    expect(Dir.children(backups_dir).sort).to eq(%w[notes.txt tenant_1_20260103000000.tar.gz tenant_1_20260104000000.tar.gz])
  end

  it "tenant_kit:job_progress adds what an existing job table lacks and renames nothing" do
    connection.create_table(:legacy_jobs, force: true) do |t|
      t.string :job_klass
      t.integer :state
    end
    dir = File.join(ENV.fetch("TENANT_KIT_DUMMY_TMP"), "legacy_gen")
    FileUtils.rm_rf(dir)
    TenantKit::Generators::JobProgressGenerator.start(["--quiet", "--table", "legacy_jobs"], destination_root: dir)
    Object.send(:remove_const, :AddTenantKitJobProgress) if defined?(AddTenantKitJobProgress)
    load Dir[File.join(dir, "db/migrate/*.rb")].fetch(0)
    AddTenantKitJobProgress.migrate(:up)
    expect(connection.columns(:legacy_jobs).map { |c| [c.name, c.type] })
      .to eq([["id", :integer], ["job_klass", :string], ["state", :integer], ["job_progress", :text]])
  ensure
    connection.drop_table(:legacy_jobs, if_exists: true)
  end
end
