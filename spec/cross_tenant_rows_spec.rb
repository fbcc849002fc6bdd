# frozen_string_literal: true

require_relative "spec_helper"
require_relative "support/tmpdir"
require "sqlite3"

# A join row between two tenants' rows is no one tenant's: the backup
# leaves it out and says so in its result.
RSpec.describe "TenantKit.backup and rows two tenants reach" do
  include_context "tmpdir"

  before do
    SQLite3::Database.new(db).execute_batch(<<~SQL)
      CREATE TABLE tenants (id integer PRIMARY KEY);
      CREATE TABLE tasks (id integer PRIMARY KEY, tenant_id integer NOT NULL REFERENCES tenants);
      CREATE TABLE tags (id integer PRIMARY KEY, tenant_id integer NOT NULL REFERENCES tenants);
      CREATE TABLE tags_tasks (tag_id integer REFERENCES tags, task_id integer REFERENCES tasks);
      INSERT INTO tenants VALUES (1), (2);
      INSERT INTO tasks VALUES (1, 1), (2, 2);
      INSERT INTO tags VALUES (1, 1), (2, 2);
      INSERT INTO tags_tasks VALUES (1, 1), (2, 2), (2, 1);
    SQL
  end

  it "leaves the row out of both archives and counts it per table" do
    [1, 2].each do |tenant|
      result = TenantKit.backup(database: db, tenant_id: tenant, output_dir: @dir)
      expect(result.tables["tags_tasks"]).to eq(1)
      expect(result.left_out_cross_tenant).to eq("tags_tasks" => 1)
    end
  end
end
