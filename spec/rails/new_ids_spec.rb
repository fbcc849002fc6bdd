# frozen_string_literal: true

require_relative "rails_helper"

# Copies of a tenant with fresh ids (new_ids: true), made by the app's
# RestoreTenantJob and read back through the models: every association of
# a copy leads to the copy's own rows and files, and the original is as it
# was.
RSpec.describe "RestoreTenantJob with new_ids: true in a Rails app" do
  before { reset_app!(journal_mode: "wal") }

  let!(:acme) { seed_tenant("Acme", seed: 1) }
  let!(:globex) { seed_tenant("Globex", seed: 2) }
  let(:admin) { globex.users.first }

  def backup(tenant)
    job = BackgroundJob.create!(tenant: tenant, job_type: "backup", state: "queued")
    BackupTenantJob.perform_later(tenant: tenant, user: tenant.users.first, background_job: job)
    expect(job.reload.state).to eq("done"), job.progress.inspect
    job.progress.fetch("result").fetch("path")
  end

  # Files through ActiveStorage: the bytes downloaded, checked against the
  # blob's checksum.
  def files(attached)
    Array(attached.attachments).map do |a|
      bytes = a.blob.download
      expect(Digest::MD5.base64digest(bytes)).to eq(a.blob.checksum)
      [a.name, a.blob.filename.to_s, Digest::SHA256.hexdigest(bytes)]
    end.sort
  end

  def comments(record)
    expect(record.comments.map(&:tenant_id).uniq - [record.tenant_id]).to be_empty
    record.comments.map { |c| [c.body, c.user&.email] }.sort_by(&:to_s)
  end

  # The tenant's data through its associations, without ids: what a copy
  # must have the same of. Every row reached must be the tenant's.
  def copy_view(tenant)
    tenant = Tenant.find(tenant.id)
    mine = ->(record) { record.nil? || record.tenant_id == tenant.id }
    tasks = tenant.projects.flat_map(&:tasks)
    expect(tasks.map(&:assignee) + tenant.settings.map { |s| s.target_id && User.find(s.target_id) }).to all(satisfy(&mine))
    expect(tasks.map(&:parent) + tasks.flat_map(&:subtasks) + tasks.flat_map(&:tags)).to all(satisfy(&mine))
    expect(tasks.flat_map(&:comments).map(&:user)).to all(satisfy(&mine))
    {
      users: tenant.users.map { |u| [u.email, u.name, u.assigned_tasks.map(&:title).sort, files(u.avatar)] }.sort_by(&:to_s),
      tags: tenant.tags.map { |t| [t.name, t.tasks.map(&:title).sort] }.sort,
      settings: tenant.settings.map { |s| [s.key, s.value, s.target_type, s.target_id && User.find(s.target_id).email] }.sort_by(&:to_s),
      projects: tenant.projects.map do |p|
        [p.name, p.budget.to_s, p.archived, comments(p),
         p.documents.map { |d| [d.title, files(d.file), comments(d)] }.sort_by(&:to_s),
         p.tasks.map do |t|
           [t.title, t.class.name, t.assignee&.email, t.parent&.title, t.subtasks.map(&:title).sort,
            t.tags.map(&:name).sort, t.checklist_items.map { |c| [c.body, c.done] }.sort_by(&:to_s),
            comments(t), files(t.files)]
         end.sort_by(&:to_s)]
      end.sort_by(&:to_s)
    }
  end

  # Everything of the tenant that has an id or a key, to check copies share none.
  def owned(tenant)
    tenant = Tenant.find(tenant.id)
    tasks = tenant.projects.flat_map(&:tasks)
    documents = tenant.projects.flat_map(&:documents)
    attachments = (tasks.flat_map { |t| t.files.attachments } + documents.map { |d| d.file.attachment } +
                   tenant.users.map { |u| u.avatar.attachment }).compact
    {
      "tasks" => tasks.map(&:id), "projects" => tenant.projects.map(&:id), "documents" => documents.map(&:id),
      "users" => tenant.users.map(&:id), "tags" => tenant.tags.map(&:id),
      "checklist_items" => tasks.flat_map(&:checklist_items).map(&:id),
      "attachments" => attachments.map(&:id), "blobs" => attachments.map { |a| a.blob.id },
      "keys" => attachments.map { |a| a.blob.key }
    }
  end

  it "copies a tenant into a new tenant and into an existing one: three complete, disjoint tenants" do
    archive = backup(acme)
    expected = copy_view(acme)
    before_acme = tenant_view(acme)
    before_globex = tenant_view(globex)
    tenants_before = Tenant.pluck(:id)

    RestoreTenantJob.perform_later(tenant: nil, user: admin, archive_path: archive, new_ids: true)
    expect(deliveries.last.subject).to eq("Restore of Acme completed"), deliveries.last.body.to_s
    made = Tenant.where.not(id: tenants_before).to_a
    expect(made.map(&:name)).to eq(["Acme"])
    copy = made.first

    existing = Tenant.create!(name: "Template copy")
    RestoreTenantJob.perform_later(tenant: existing, user: admin, archive_path: archive, remap: true, new_ids: true)
    expect(deliveries.last.subject).to eq("Restore of Template copy completed"), deliveries.last.body.to_s
    expect(existing.reload.name).to eq("Template copy")

    [copy, existing].each { |t| expect(copy_view(t)).to eq(expected) }
    expect(tenant_view(acme)).to eq(before_acme)
    expect(tenant_view(globex)).to eq(before_globex)

    sets = [acme, copy, existing].map { |t| owned(t) }
    sets.first.each_key do |kind|
      all = sets.flat_map { |s| s[kind] }
      expect(all.uniq.size).to eq(all.size), "#{kind} shared between copies"
      expect(sets.map { |s| s[kind].size }.uniq.size).to eq(1), kind
    end
    expect(sets.first["keys"].size).to be > 10
  end
end
