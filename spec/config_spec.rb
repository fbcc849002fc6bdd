# frozen_string_literal: true

require_relative "spec_helper"
require_relative "support/tmpdir"

# TenantKit::Config: the scope rules checked once, shared by backup,
# restore, verify and explain; and TenantKit.explain's report.
RSpec.describe TenantKit::Config do
  include_context "tmpdir"

  def create_app
    create_sample_app(tenants: 2, rows_per_tenant: 100, blob_bytes: 2 * 1024, seed: 5)
  end

  describe "validation at construction" do
    it "names an unknown option and lists the known ones" do
      expect { described_class.new(tenant_colum: "account_id") }.to raise_error(
        ArgumentError,
        "TenantKit::Config: unknown option :tenant_colum (expected tenant_column:, tenant_table:, relations:, " \
        "polymorphic:, tables:, skip_tables:)"
      )
    end

    it "names a wrong key of a relation hint by its position, never internal JSON" do
      hints = [{ table: "tasks", column: "project_id", references: "projects" },
               { table: "tasks", column: "user_id", referneces: "users" }]
      expect { described_class.new(relations: hints) }.to raise_error(
        ArgumentError, 'relations[1]: unknown key "referneces" (expected table:, column:, references:, primary_key:)'
      )
      expect { described_class.new(relations: [{ table: "tasks", column: "user_id" }]) }.to raise_error(
        ArgumentError, "relations[0]: references: is required (nil: the column is no reference)"
      )
      expect { described_class.new(relations: [{ table: "tasks", column: [], references: "users" }]) }
        .to raise_error(ArgumentError, "relations[0].column: must not be empty")
      expect { described_class.new(relations: "tasks.user_id") }
        .to raise_error(ArgumentError, /\Arelations: expected an Array of hints/)
    end

    it "names bad table rules and polymorphic maps" do
      expect { described_class.new(tables: { "audits" => :shred }) }
        .to raise_error(ArgumentError, "tables: audits: expected one of skip, shared, owned, got :shred")
      expect { described_class.new(polymorphic: { "User" => 7 }) }
        .to raise_error(ArgumentError, 'polymorphic["User"]: expected a column or table name, got 7')
      expect { described_class.new(tenant_column: "") }.to raise_error(ArgumentError, "tenant_column: must not be empty")
    end

    it "is frozen through and through, comparable and inspectable" do
      config = described_class.new(tenant_column: :account_id, polymorphic: { "Admin::User" => :users },
                                   relations: [{ table: :tasks, column: %i[a b], references: :x, primary_key: %w[c d] }],
                                   skip_tables: ["audits"])
      expect(config).to be_frozen
      expect(config.relations.first).to be_frozen
      expect(config.relations.first["column"]).to be_frozen
      expect { config.polymorphic["X"] = "y" }.to raise_error(FrozenError)
      expect(config.tables).to eq("audits" => "skip")
      expect(config.relations).to eq([{ "table" => "tasks", "column" => %w[a b], "references" => "x",
                                        "primary_key" => %w[c d] }])
      expect(config).to eq(described_class.new(**config.to_h))
      expect(config.with(tenant_column: "org_id").tenant_column).to eq("org_id")
      expect(config.inspect).to eq(
        '#<TenantKit::Config tenant_column="account_id" relations=[{"table"=>"tasks", "column"=>["a", "b"], ' \
        '"references"=>"x", "primary_key"=>["c", "d"]}] polymorphic={"Admin::User"=>"users"} tables={"audits"=>"skip"}>'
      )
    end
  end

  describe "config: in backup, restore, verify and explain" do
    it "backs up and restores with config: as with the same loose options" do
      create_app
      config = described_class.new(skip_tables: ["background_jobs"])
      with_config = TenantKit.backup(database: db, tenant_id: 1, output_dir: out, storage_root: storage, config: config)
      expect(with_config.tables).not_to have_key("background_jobs")
      loose = TenantKit.backup(database: db, tenant_id: 2, output_dir: out, storage_root: storage,
                               skip_tables: ["background_jobs"])
      expect(loose.tables.keys).to eq(with_config.tables.keys)

      result = TenantKit.restore(database: db, archive: with_config.path, tenant_id: 1, storage_root: storage,
                                 dry_run: true, config: config)
      expect(result.planned).not_to have_key("background_jobs")
      expect(TenantKit.verify(archive: with_config.path, config: config)).to be_ok
    end

    it "refuses config: together with a loose scope option, naming it" do
      config = described_class.new
      expect do
        TenantKit.backup(database: db, tenant_id: 1, output_dir: out, config: config, tenant_column: "account_id")
      end.to raise_error(ArgumentError, /\Aconfig: given together with tenant_column:;/)
      expect { TenantKit.explain(database: db, config: { tenant_column: "x" }) }
        .to raise_error(ArgumentError, 'config: expected a TenantKit::Config, got {:tenant_column=>"x"}')
      expect { TenantKit.explain(database: db, tenant_colum: "x") }
        .to raise_error(ArgumentError, "unknown keyword: :tenant_colum")
    end

    it "verify with a config of another tenant column is an ArchiveError" do
      create_app
      archive = TenantKit.backup(database: db, tenant_id: 1, output_dir: out, storage_root: storage).path
      expect { TenantKit.verify(archive: archive, config: described_class.new(tenant_column: "account_id")) }
        .to raise_error(TenantKit::ArchiveError,
                        /an archive of tenant column "tenant_id", the config's is "account_id"/)
    end
  end

  describe "TenantKit.explain" do
    it "reports classes, references with their source and the unconfirmed guesses" do
      create_app
      report = TenantKit.explain(database: db, skip_tables: ["background_jobs"])
      expect(report.tenant_table).to eq("tenants")
      expect(report.tables_of(:tenants)).to eq(["tenants"])
      expect(report.tables_of(:owned)).to include("tasks", "comments")
      expect(report.tables_of(:derived)).to include("tags_tasks", "active_storage_attachments")
      skipped = report.tables.find { |t| t[:name] == "background_jobs" }
      expect(skipped).to eq(name: "background_jobs", class: "skipped", reason: "skipped by the caller (tables:)")
      guess = { table: "tasks", column: "project_id", references: "projects" }
      expect(report.guesses).to include(guess)
      followed = report.references.find { |r| r[:table] == "tasks" && r[:columns] == ["project_id"] }
      expect(followed).to include(references: "projects", source: "naming", polymorphic: nil)

      config = described_class.new(skip_tables: ["background_jobs"],
                                   relations: [{ table: "tasks", column: "project_id", references: "projects" }])
      confirmed = TenantKit.explain(database: db, config: config)
      expect(confirmed.guesses).not_to include(guess)
      expect(confirmed.references.find { |r| r[:table] == "tasks" && r[:columns] == ["project_id"] })
        .to include(source: "hint")
      expect(JSON.parse(confirmed.to_json)).to include("tenant_column" => "tenant_id", "guesses" => Array)
    end
  end
end
