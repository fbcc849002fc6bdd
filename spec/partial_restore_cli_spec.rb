# frozen_string_literal: true

require_relative "spec_helper"
require_relative "support/tmpdir"
require "json"
require "sqlite3"

# `tenant_kit restore --only / --except` and TenantKit.restore(only:, except:)
# on the sample app: a subtree (one project), and every table but one.
RSpec.describe "partial restore from Ruby and the command line" do
  include_context "cli"

  before do
    create_sample_app(tenants: 2, rows_per_tenant: 300, blob_bytes: 1024, seed: 5)
  end

  def sql(statement)
    SQLite3::Database.new(db).execute(statement)
  end

  it "restores one project's subtree with --only table=key, leaving later work alone" do
    archive = TenantKit.backup(database: db, tenant_id: 1, output_dir: out, storage_root: storage).path
    project = sql("SELECT id FROM projects WHERE tenant_id = 1 ORDER BY id LIMIT 1")[0][0]
    tasks = sql("SELECT count(*) FROM tasks WHERE project_id = #{project}")[0][0]
    expect(tasks).to be_positive
    sql("UPDATE tasks SET title = 'edited' WHERE project_id = #{project}")
    sql("UPDATE users SET name = 'renamed later' WHERE tenant_id = 1")

    stdout, stderr, status = run_cli("restore", "--database", db, "--archive", archive,
                                            "--tenant-id", "1", "--storage-root", storage,
                                            "--only", "projects=#{project}", "--dry-run", "--json")
    expect(status.exitstatus).to eq(0), stderr
    result = JSON.parse(stdout.lines.last).fetch("result")
    expect(result.fetch("selection")).to include("mode" => "subtree", "tables" => ["projects"], "roots" => [project])
    expect(result.dig("planned", "tasks", "update")).to eq(tasks)
    expect(result.fetch("planned")).not_to include("users")

    result = TenantKit.restore(database: db, archive: archive, tenant_id: 1, storage_root: storage,
                               only: { projects: [project] })
    expect(result.written["tasks"]).to eq(tasks)
    expect(sql("SELECT count(*) FROM tasks WHERE title = 'edited'")[0][0]).to eq(0)
    expect(sql("SELECT DISTINCT name FROM users WHERE tenant_id = 1")).to eq([["renamed later"]])
  end

  it "restores every table but those of --except, and checks the selection's arguments" do
    archive = TenantKit.backup(database: db, tenant_id: 1, output_dir: out, storage_root: storage).path
    sql("UPDATE users SET name = 'renamed later' WHERE tenant_id = 1")
    sql("UPDATE tags SET name = 'renamed later' WHERE tenant_id = 1")
    _, stderr, status = run_cli("restore", "--database", db, "--archive", archive,
                                       "--tenant-id", "1", "--storage-root", storage, "--except", "users")
    expect(status.exitstatus).to eq(0), stderr
    expect(sql("SELECT DISTINCT name FROM users WHERE tenant_id = 1")).to eq([["renamed later"]])
    expect(sql("SELECT count(*) FROM tags WHERE name = 'renamed later'")[0][0]).to eq(0)

    options = { database: db, archive: archive, tenant_id: 1, storage_root: storage }
    expect { TenantKit.restore(**options, only: "tags") }
      .to raise_error(ArgumentError, /only: expected an Array of tables or a Hash of table => \[keys\]/)
    expect { TenantKit.restore(**options, only: { projects: [1.5] }) }
      .to raise_error(ArgumentError, /only: projects: a key is an Integer, a String or an Array of those/)
    expect { TenantKit.restore(**options, only: ["tags"], except: ["users"]) }
      .to raise_error(ArgumentError, /only: and except: cannot be combined/)
  end
end
