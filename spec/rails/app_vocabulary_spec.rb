# frozen_string_literal: true

require_relative "rails_helper"

# Issue 21: the gem dropped into an app with its own job table
# (AppBackgroundJob: job_klass, a planned/running/completed/failed enum,
# belongs_to :tenant) and nothing else than the README.
RSpec.describe "the Rails jobs in the app's vocabulary" do
  before { reset_app! }

  let!(:acme) { small_tenant("Acme") }
  let!(:globex) { small_tenant("Globex") }

  def small_tenant(name)
    tenant = Tenant.create!(name: name, subdomain: name.downcase)
    user = User.create!(tenant: tenant, email: "boss@#{name.downcase}.test", name: "Boss")
    Project.create!(tenant: tenant, name: "#{name} project", budget: "10.5")
    Setting.create!(tenant: tenant, target_type: "User", target_id: user.id.to_s, key: "theme", value: '"dark"')
    tenant
  end

  def jobs_of(tenant)
    AppBackgroundJob.where(tenant_id: tenant.id).order(:id)
  end

  def manifest_tables(archive)
    manifest = nil
    Zlib::GzipReader.open(archive) do |gz|
      Gem::Package::TarReader.new(gz).each { |e| manifest = JSON.parse(e.read) if e.full_name == "manifest.json" }
    end
    manifest.fetch("tables").map { |t| t["name"] }
  end

  def backup!(tenant)
    AppBackupJob.perform_now(tenant: tenant, user: tenant.users.first)
    jobs_of(tenant).last.progress.dig("result", "path")
  end

  it "writes the app's own state values and job class, and a backup ends completed" do
    archive = backup!(acme)
    job = jobs_of(acme).last
    expect(job).to have_attributes(state: "completed", job_klass: "AppBackupJob")
    expect(job.progress).to include("state" => "done", "percent" => 100.0)
    expect(File).to exist(archive)
  end

  it "leaves the job table out of backups and a purge restore keeps every job row" do
    archive = backup!(acme)
    expect(manifest_tables(archive)).to include("projects")
    expect(manifest_tables(archive)).not_to include("app_background_jobs")
    later = AppBackgroundJob.create!(tenant: acme, job_klass: "SomeJob", state: :planned)
    Project.where(tenant_id: acme.id).delete_all

    AppRestoreJob.perform_now(tenant: acme, archive_path: archive, purge: true)

    expect(Project.where(tenant_id: acme.id).count).to eq(1)
    states = jobs_of(acme).pluck(:job_klass, :state)
    expect(states).to eq([%w[AppBackupJob completed], ["SomeJob", "planned"], %w[AppRestoreJob completed]])
    expect(later.reload.state).to eq("planned")
    expect(AppBackgroundJob.where(state: :running)).to be_empty
  end

  it "restores a deleted tenant: the job row is written although its tenant row is not there yet" do
    archive = backup!(acme)
    id = acme.id
    AppRestoreJob.perform_now(tenant: id, archive_path: archive, purge: true, restore: false)
    Tenant.where(id: id).delete_all # what the purge leaves: the tenant row itself
    expect(Project.where(tenant_id: id)).to be_empty

    AppRestoreJob.perform_now(tenant: id, archive_path: archive)

    expect(Tenant.find(id).name).to eq("Acme")
    expect(AppBackgroundJob.where(tenant_id: id).last).to have_attributes(state: "completed", job_klass: "AppRestoreJob")
  end

  describe "a failure leaves a trace and is not retried" do
    it "tenant: nil ends failed, naming the argument, with the failure mail" do
      expect { AppBackupJob.perform_now(tenant: nil) }.not_to raise_error
      job = AppBackgroundJob.last
      expect(job.state).to eq("failed")
      expect(job.progress).to include("state" => "failed", "error" => "tenant: expected a tenant record or id, got nil")
      expect(ActionMailer::Base.deliveries.map(&:subject)).to eq(["Backup of tenant  failed"])
    end

    it "a bad archive_path is named as the job's argument" do
      expect { AppRestoreJob.perform_now(tenant: acme, archive_path: "") }.not_to raise_error
      job = jobs_of(acme).last
      expect(job.state).to eq("failed")
      expect(job.progress["error"]).to eq("archive_path: must not be empty")
      expect(ActionMailer::Base.deliveries.map(&:subject)).to eq(["Restore of Acme failed"])
    end

    it "an argument ActiveJob refuses (unknown keyword) is recorded and mailed too" do
      expect { AppRestoreJob.perform_now(tenant: acme, archive: "x.tar.gz") }.not_to raise_error
      job = AppBackgroundJob.last
      expect(job.state).to eq("failed")
      expect(job.progress["error"]).to eq("unknown keyword: :archive")
      expect(ActionMailer::Base.deliveries.map(&:subject)).to eq(["Restore of Acme failed"])
    end

    it "raise_errors: true re-raises after recording" do
      klass = Class.new(AppBackupJob) do
        def self.name = "StrictBackupJob"
        tenant_kit raise_errors: true
      end
      expect { klass.perform_now(tenant: nil) }.to raise_error(ArgumentError, /\Atenant: expected/)
      expect(AppBackgroundJob.last.state).to eq("failed")
    end
  end

  it "logs email_enqueued after the mail" do
    backup!(acme)
    steps = jobs_of(acme).last.progress["log"].map { |e| e["step"] }
    expect(steps.last(2)).to eq(%w[done email_enqueued])
  end

  it "names a state the app's enum lacks" do
    klass = Class.new(AppBackupJob) do
      def self.name = "OddBackupJob"
      tenant_kit states: { done: "finished_ok" }
    end
    expect { klass.perform_now(tenant: acme) }.not_to raise_error
    expect(AppBackgroundJob.count).to eq(0)
    expect(ActionMailer::Base.deliveries.map(&:subject)).to eq(["Backup of Acme failed"])
  end

  it "enqueued inside a transaction, runs once it commits (the row it was given exists, no busy database)" do
    ActiveRecord::Base.transaction do
      job = AppBackgroundJob.create!(tenant: acme, job_klass: "AppBackupJob", state: :planned)
      AppBackupJob.perform_later(tenant: acme, background_job: job)
      expect(job.reload.state).to eq("planned")
    end
    expect(jobs_of(acme).pluck(:state)).to eq(["completed"])
  end

  it "a job enqueued in a transaction that rolls back never runs" do
    ActiveRecord::Base.transaction do
      AppBackupJob.perform_later(tenant: acme)
      raise ActiveRecord::Rollback
    end
    expect(AppBackgroundJob.count).to eq(0)
  end
end
