# frozen_string_literal: true

require_relative "rails_helper"

# TenantKit::Rails::App reads the dummy app; the job_progress generator.
RSpec.describe TenantKit::Rails::App do
  before { reset_app! }

  it "reads the database path from the ActiveRecord configuration" do
    expect(described_class.database_path).to eq(File.expand_path(database_path))
  end

  it "reads the storage root from the ActiveStorage Disk service" do
    expect(described_class.storage_root).to eq(storage_root)
    expect { described_class.storage_root(Object.new) }.to raise_error(ArgumentError, /Disk service/)
  end

  it "refuses an in-memory or non-SQLite database" do
    stub_const("MemoryRecord", Class.new(ActiveRecord::Base) { self.abstract_class = true })
    MemoryRecord.establish_connection(adapter: "sqlite3", database: ":memory:")
    expect { described_class.database_path(MemoryRecord) }.to raise_error(ArgumentError, /in-memory/)
  ensure
    MemoryRecord.remove_connection
  end

  describe "relations from the reflections" do
    let(:relations) { described_class.relations(described_class.models) }

    it "has belongs_to with class_name/foreign_key, has_many with foreign_key and HABTM join tables" do
      expect(relations).to include(
        { table: "tasks", column: "assignee_id", references: "users", primary_key: "id" },
        { table: "tasks", column: "parent_id", references: "tasks", primary_key: "id" },
        { table: "checklist_items", column: "todo_id", references: "tasks", primary_key: "id" },
        { table: "tags_tasks", column: "tag_id", references: "tags", primary_key: "id" },
        { table: "tags_tasks", column: "task_id", references: "tasks", primary_key: "id" },
        { table: "project_documents", column: "project_id", references: "projects", primary_key: "id" }
      )
      expect(relations.map { |r| r[:column] }).not_to include("tenant_id", "commentable_id", "record_id")
      expect(relations).to eq(relations.uniq)
    end

    it "leaves out hints whose tables or columns are missing" do
      model = Class.new(ApplicationRecord) do
        self.table_name = "tasks"
        def self.name = "GhostOwner"
        has_many :ghosts, class_name: "Task", foreign_key: :ghost_owner_id
      end
      expect(described_class.relations([model])).to be_empty
    end

    it "are accepted by tenant_kit (a backup with them works)" do
      tenant = seed_tenant("Acme", seed: 1)
      result = TenantKit.backup(**described_class.options, tenant_id: tenant.id, output_dir: backups_dir)
      expect(result.tables).to include("checklist_items" => 6, "project_documents" => 2)
      expect(result.errors).to eq([])
    end
  end

  it "maps polymorphic class names to tables: custom table names, STI and attachment owners" do
    map = described_class.polymorphic(described_class.models)
    expect(map).to include("Document" => "project_documents", "Task" => "tasks", "Milestone" => "tasks",
                           "User" => "users", "ActiveStorage::Blob" => "active_storage_blobs")
    expect(map.keys.grep(/HABTM|\AActiveRecord::/)).to be_empty
  end

  it "finds the tenant table from belongs_to :tenant" do
    expect(described_class.options).to include(tenant_table: "tenants", tenant_column: "tenant_id",
                                               database: File.expand_path(database_path), storage_root: storage_root)
  end

  it "misses a custom-table attachment owner without the polymorphic map (so the map matters)" do
    tenant = seed_tenant("Acme", seed: 1)
    options = described_class.options
    with_map = TenantKit.backup(**options, tenant_id: tenant.id, output_dir: backups_dir)
    FileUtils.rm_f(with_map.path)
    without = TenantKit.backup(**options.merge(polymorphic: {}), tenant_id: tenant.id, output_dir: backups_dir)
    expect(with_map.blobs - without.blobs).to eq(2) # the documents' files
  end
end

RSpec.describe "rails generate tenant_kit:job_progress" do
  around do |example|
    Dir.mktmpdir("tenant_kit_generator") do |dir|
      @dir = dir
      example.run
    end
  end

  def generate(*args)
    TenantKit::Generators::JobProgressGenerator.start(["--quiet", *args], destination_root: @dir)
    path = Dir[File.join(@dir, "db/migrate/*_add_tenant_kit_job_progress.rb")].fetch(0)
    [path, File.read(path)]
  end

  it "writes a migration that adds job_progress to an existing table, and removes it again" do
    path, source = generate("--table", "legacy_jobs")
    expect(File.basename(path)).to match(/\A\d{14}_add_tenant_kit_job_progress\.rb\z/)
    version = "#{ActiveRecord::VERSION::MAJOR}.#{ActiveRecord::VERSION::MINOR}" # 6.1 here, 7.2 in script/rails72
    expect(source).to include("ActiveRecord::Migration[#{version}]", "add_column :legacy_jobs, :job_progress, :text")
    connection = ActiveRecord::Base.connection
    connection.create_table(:legacy_jobs) { |t| t.string :state }
    Object.send(:remove_const, :AddTenantKitJobProgress) if defined?(AddTenantKitJobProgress)
    load path
    AddTenantKitJobProgress.migrate(:up)
    expect(connection.columns(:legacy_jobs).map(&:name)).to include("job_progress")
    AddTenantKitJobProgress.migrate(:up) # idempotent
    AddTenantKitJobProgress.migrate(:down)
    expect(connection.columns(:legacy_jobs).map(&:name)).not_to include("job_progress")
  ensure
    ActiveRecord::Base.connection.drop_table(:legacy_jobs, if_exists: true)
  end

  it "is found by `rails generate` from the gem's load path" do
    expect(Rails::Generators.find_by_namespace("tenant_kit:job_progress")).to eq(TenantKit::Generators::JobProgressGenerator)
  end

  it "creates background_jobs when the app has none (the dummy app's table comes from it)" do
    _, source = generate
    expect(source).to include("create_table :background_jobs", "t.text :job_progress", "t.integer :tenant_id")
    expect(BackgroundJob.columns_hash["job_progress"].type).to eq(:text)
  end
end
