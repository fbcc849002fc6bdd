# frozen_string_literal: true

require_relative "rails_helper"
require "stringio"

# Encrypted archives through the Rails jobs: the keys come from the job
# classes' configuration (Procs, as an app reads its credentials), never
# from job arguments, and no secret reaches the queue, the progress rows
# or the log.
RSpec.describe "BackupTenantJob and RestoreTenantJob with age keys from configuration" do
  KEY = TenantKit.generate_key
  RECOVERY = TenantKit.generate_key

  before do
    reset_app!
    stub_const("EncryptedBackupJob", Class.new(BackupTenantJob) do
      tenant_kit recipients: -> { [KEY[:recipient], RECOVERY[:recipient]] }
    end)
    stub_const("EncryptedRestoreJob", Class.new(RestoreTenantJob) do
      tenant_kit identities: -> { [RECOVERY[:identity]] }
    end)
    @log = StringIO.new
    @logger = ActiveJob::Base.logger
    ActiveJob::Base.logger = ActiveSupport::Logger.new(@log)
  end

  after { ActiveJob::Base.logger = @logger }

  let!(:acme) { seed_tenant("Acme", seed: 1) }
  let!(:globex) { seed_tenant("Globex", seed: 2) }

  # Every column of every job row, the serialised job arguments and the log.
  def every_output(jobs)
    rows = connection.select_rows("SELECT * FROM background_jobs").flatten.map(&:to_s)
    rows + jobs.map { |job| job.serialize.to_json } + [@log.string]
  end

  it "backs up to the configured recipients and restores with the configured identity" do
    before_acme = tenant_view(acme)
    before_globex = tenant_view(globex)
    backup = EncryptedBackupJob.new(tenant: acme, user: acme.users.first)
    backup.perform_now
    record = BackgroundJob.where(job_type: "backup").last
    expect(record.state).to eq("done"), record.progress.inspect
    archive = record.progress.dig("result", "path")
    expect(File.basename(archive)).to match(/\Atenant_#{acme.id}_\d{14}\.tar\.gz\.age\z/)
    expect(File.binread(archive, 22)).to eq("age-encryption.org/v1\n")
    expect(record.progress["result"]).to include("encrypted" => true,
                                                 "recipients" => [KEY[:recipient], RECOVERY[:recipient]])

    acme_id = acme.id
    acme.destroy!
    restore = EncryptedRestoreJob.new(tenant: acme_id, archive_path: archive, purge: false, remap: false)
    restore.perform_now
    restored = BackgroundJob.where(job_type: "restore").last
    expect(restored.state).to eq("done"), restored.progress.inspect
    expect(restored.progress["result"]).to include("encrypted" => true)
    expect(tenant_view(acme_id)).to eq(before_acme)
    expect(tenant_view(globex)).to eq(before_globex)

    outputs = every_output([backup, restore])
    expect(outputs.join("\n")).to include(archive) # the log and rows were seen
    outputs.each do |text|
      expect(text).not_to include(KEY[:identity])
      expect(text).not_to include(RECOVERY[:identity])
    end
  end

  it "records a restore job without identities as failed, asking for a key, and changes nothing" do
    EncryptedBackupJob.perform_now(tenant: acme)
    archive = BackgroundJob.where(job_type: "backup").last.progress.dig("result", "path")
    before = database_fingerprint
    RestoreTenantJob.perform_now(tenant: acme.id, archive_path: archive, purge: true)
    failed = BackgroundJob.where(job_type: "restore").last
    expect(failed.state).to eq("failed")
    expect(failed.progress["error"].to_s + failed.progress["error_class"].to_s).to match(/a key is needed/)
    expect(database_fingerprint).to eq(before)
  end

  it "takes no key as a job argument: it would be serialised into the queue" do
    job = EncryptedRestoreJob.new(tenant: acme.id, archive_path: "x.tar.gz.age", identities: [KEY[:identity]])
    job.perform_now
    failed = BackgroundJob.where(job_type: "restore").last
    expect(failed.state).to eq("failed")
    expect(failed.progress.to_json).to include("identities")
    expect(failed.progress.to_json).not_to include(KEY[:identity])
  end

  it "PruneJob prunes encrypted archives with the plain ones" do
    klass = Class.new(ActiveJob::Base) do
      include TenantKit::Rails::PruneJob
      tenant_kit_prune keep_last: 2, output_dir: -> { ENV.fetch("TENANT_KIT_DUMMY_BACKUPS") }
    end
    names = %w[tenant_1_20260101000000.tar.gz.age tenant_1_20260102000000.tar.gz
               tenant_1_20260103000000.tar.gz.age tenant_1_20260104000000.tar.gz]
    names.each { |n| File.write(File.join(backups_dir, n), "x") }
    klass.perform_now
    expect(Dir.children(backups_dir).sort).to eq(%w[tenant_1_20260103000000.tar.gz.age tenant_1_20260104000000.tar.gz])
  end
end
