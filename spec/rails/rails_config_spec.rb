# frozen_string_literal: true

require_relative "rails_helper"

# TenantKit::Rails.config: the app's scope rules read from its models, one
# frozen TenantKit::Config for backup, restore and explain.
RSpec.describe "TenantKit::Rails.config" do
  before { reset_app!(journal_mode: "delete") }

  let(:config) { TenantKit::Rails.config(skip_tables: ["background_jobs"]) }

  it "is a frozen Config built from the reflections" do
    expect(config).to be_a(TenantKit::Config).and be_frozen
    expect(config.tenant_column).to eq("tenant_id")
    expect(config.tenant_table).to eq("tenants")
    expect(config.relations).to include(
      { "table" => "checklist_items", "column" => "todo_id", "references" => "tasks", "primary_key" => "id" },
      { "table" => "cards", "column" => "label_id", "references" => "labels", "primary_key" => "id" }
    )
    expect(config.polymorphic).to include("Milestone" => "tasks", "Document" => "project_documents")
    expect(config.tables).to eq("background_jobs" => "skip")
  end

  it "explains the app's database with the reflections confirming what naming would guess" do
    acme = seed_tenant("Acme", seed: 1)
    report = TenantKit.explain(database: database_path, config: config)
    checklist = report.tables.find { |t| t[:name] == "checklist_items" }
    expect(checklist).to include(class: "derived", reason: "via checklist_items.todo_id -> tasks")
    todo = report.references.find { |r| r[:table] == "checklist_items" && r[:columns] == ["todo_id"] }
    expect(todo).to include(references: "tasks", source: "hint")
    # Labels are shared between tenants: the cards' labels travel as shared reference rows.
    expect(report.tables).to include(
      { name: "labels", class: "shared",
        reason: "no tenant_id column, referred to by cards.label_id: the rows referred to travel as shared reference rows" }
    )
    # Without the reflections, naming guesses tasks.project_id; with them it is confirmed.
    expect(TenantKit.explain(database: database_path).guesses).to include(table: "tasks", column: "project_id",
                                                                         references: "projects")
    expect(report.guesses).not_to include(table: "tasks", column: "project_id", references: "projects")

    result = TenantKit.backup(database: database_path, tenant_id: acme.id, output_dir: backups_dir,
                              storage_root: storage_root, config: config)
    expect(result.tables.keys).to include("checklist_items", "tags_tasks")
    expect(result.tables).not_to have_key("background_jobs")
  end
  it "lets the jobs take a config: in backup_options, the progress table still left out" do
    acme = seed_tenant("Acme", seed: 1)
    saved = BackupTenantJob.tenant_kit_settings
    BackupTenantJob.tenant_kit(backup_options: { config: TenantKit::Rails.config(skip_tables: ["tags_tasks"]) })
    job = BackgroundJob.create!(tenant: acme, job_type: "backup", state: "queued")
    BackupTenantJob.perform_now(tenant: acme, background_job: job)
    expect(job.reload.state).to eq("done"), job.progress.inspect
    tables = job.progress.dig("result", "tables")
    expect(tables).to include("checklist_items" => 6)
    expect(tables.keys).not_to include("tags_tasks", "background_jobs")
  ensure
    BackupTenantJob.tenant_kit_settings = saved
  end
end
