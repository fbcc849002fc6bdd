# frozen_string_literal: true

require_relative "spec_helper"
require_relative "support/tmpdir"
require "open3"
require "json"

# `tenant_kit explain`, run as an operator would: the real executable on a
# real SQLite file, with flags or a config file, as text or JSON.
RSpec.describe "tenant_kit explain" do
  include_context "cli"

  before do
    create_sample_app(tenants: 2, rows_per_tenant: 100, blob_bytes: 1024, seed: 9)
  end

  it "prints tables, references and unconfirmed guesses as text" do
    stdout, stderr, status = run_cli("explain", "--database", db, "--skip-table", "background_jobs")
    expect(status.exitstatus).to eq(0), stderr
    expect(stdout).to start_with("tenant column: tenant_id   tenants table: tenants")
    expect(stdout).to match(/^  tasks\s+owned\s+has the tenant column tenant_id$/)
    expect(stdout).to match(/^  background_jobs\s+skipped\s+skipped by the caller \(tables:\)$/)
    expect(stdout).to match(/^  tasks\.project_id -> projects\.id\s+Rails naming GUESS$/)
    expect(stdout).to match(/^  comments\.commentable_id -> tasks\.id where commentable_type = Task\s+polymorphic class, Rails naming$/)
    expect(stdout).to include("UNCONFIRMED GUESSES", "  tasks.project_id -> projects")
  end

  it "reads a YAML or JSON config file, and prints JSON with --json" do
    yaml = File.join(@dir, "tenant_kit.yml")
    File.write(yaml, <<~YAML)
      tables:
        background_jobs: skip
      relations:
        - table: tasks
          column: project_id
          references: projects
    YAML
    stdout, stderr, status = run_cli("explain", "--database", db, "--config", yaml, "--json")
    expect(status.exitstatus).to eq(0), stderr
    report = JSON.parse(stdout).fetch("result")
    expect(report["guesses"]).not_to include("table" => "tasks", "column" => "project_id", "references" => "projects")
    hinted = report["references"].find { |r| r["table"] == "tasks" && r["columns"] == ["project_id"] }
    expect(hinted["source"]).to eq("hint")
    expect(report["tables"]).to include("name" => "background_jobs", "class" => "skipped",
                                        "reason" => "skipped by the caller (tables:)")

    json = File.join(@dir, "tenant_kit.json")
    File.write(json, JSON.generate(tables: { background_jobs: "skip" }))
    stdout, = run_cli("explain", "--database", db, "--config", json, "--json")
    expect(JSON.parse(stdout).dig("result", "guesses")).to include("table" => "tasks", "column" => "project_id",
                                                                   "references" => "projects")
  end

  it "exits 2 naming the mistake in a config file" do
    bad = File.join(@dir, "bad.json")
    File.write(bad, JSON.generate(relations: [{ table: "tasks", column: "project_id", refrences: "projects" }]))
    _, stderr, status = run_cli("explain", "--database", db, "--config", bad)
    expect(status.exitstatus).to eq(2)
    expect(stderr).to eq(%(tenant_kit: --config #{bad}: relations[0]: unknown key "refrences" ) +
                         "(expected table:, column:, references:, primary_key:)\n")
    _, stderr, status = run_cli("explain")
    expect(status.exitstatus).to eq(2)
    expect(stderr).to include("explain needs --database")
  end
end
