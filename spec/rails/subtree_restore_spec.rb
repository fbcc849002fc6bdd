# frozen_string_literal: true

require_relative "rails_helper"

# A partial restore in the dummy app: a project destroyed through
# ActiveRecord (dependent: :destroy, files purged) comes back alone, with
# its tasks, subtasks, checklist items, tags, comments, documents and
# files, while the work done since the backup stays.
RSpec.describe "Subtree restore (only: { table => [keys] }) in a Rails app" do
  before { reset_app! }

  let!(:acme) { seed_tenant("Acme", seed: 1) }
  let!(:globex) { seed_tenant("Globex", seed: 2) }

  # Through the app's job, as an operator would (its options leave the
  # jobs' own progress table out).
  def backup(tenant)
    job = BackgroundJob.create!(tenant: tenant, job_type: "backup", state: "queued")
    BackupTenantJob.perform_later(tenant: tenant, user: tenant.users.first, background_job: job)
    expect(job.reload.state).to eq("done"), job.progress.inspect
    job.progress.fetch("result").fetch("path")
  end

  def options
    TenantKit::Rails::App.options(skip_tables: ["background_jobs"])
  end

  # The app's work after the backup, outside the project restored below.
  def later_work(tenant, other_project)
    Tag.create!(tenant: tenant, name: "added later")
    task = Task.create!(tenant: tenant, project: other_project, title: "added later")
    Comment.create!(tenant: tenant, commentable: task, body: "added later")
    tenant.users.first.update!(name: "renamed later")
  end

  it "brings back a destroyed project and everything under it, through RestoreTenantJob" do
    project, other = acme.projects.order(:id).to_a
    archive = backup(acme)
    later_work(acme, other)
    expected = tenant_view(acme)
    expected_globex = tenant_view(globex)
    files = stored_files.sort

    project.destroy!
    expect(Task.where(project_id: project.id)).to be_empty
    expect(stored_files.size).to be < files.size

    dry = TenantKit.restore(**options, archive: archive, tenant_id: acme.id,
                                                              only: { Project => [project.id] }, dry_run: true)
    expect(dry.conflict_count).to eq(0), dry.conflicts.inspect
    expect(dry.selection).to include(mode: :subtree, tables: ["projects"], roots: [project.id])
    expect(dry.planned["projects"]).to include(insert: 1)
    expect(dry.planned["tasks"]).to include(insert: 4) # the milestone and three tasks
    expect(dry.planned).not_to include("users", "settings")

    RestoreTenantJob.perform_later(tenant: acme.id, archive_path: archive, only: { "Project" => [project.id] })
    job = BackgroundJob.where(job_type: "restore").last
    expect(job.state).to eq("done"), job.progress.inspect
    expect(job.progress.dig("result", "selection", "mode")).to eq("subtree")

    expect(tenant_view(acme)).to eq(expected)
    expect(tenant_view(globex)).to eq(expected_globex)
    expect(stored_files.sort).to eq(files)
    restored = Project.find(project.id)
    expect(restored.tasks.flat_map { |t| t.files.map { |f| f.download.bytesize } }).to all(be > 0)
    document = restored.documents.first
    expect(Digest::MD5.base64digest(document.file.download)).to eq(document.file.blob.checksum)
  end

  it "leaves a table out with except: and refuses a selection whose reference would dangle" do
    archive = backup(acme)
    tag = acme.tags.order(:id).first
    tag.update!(name: "renamed later")
    user = acme.users.order(:id).first
    user.update!(name: "renamed later")

    TenantKit.restore(**options, archive: archive, tenant_id: acme.id, except: [User])
    expect(user.reload.name).to eq("renamed later")
    expect(tag.reload.name).not_to eq("renamed later")

    project = acme.projects.order(:id).first
    Project.where(id: project.id).delete_all # tasks still point at it
    before = database_fingerprint
    expect do
      TenantKit.restore(**options, archive: archive, tenant_id: acme.id, only: [Task])
    end.to raise_error(TenantKit::ConflictError, /project_id refers to projects #{project.id}, which is neither selected nor present/)
    expect(database_fingerprint).to eq(before)
  end
end
