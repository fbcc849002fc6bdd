# frozen_string_literal: true

require_relative "spec_helper"
require_relative "support/tmpdir"
require "sqlite3"

# Shared reference rows from Ruby: users joined to accounts through
# account_users travel in the archive (result.shared), a restore into a new
# database inserts them, and tables: rules :shared / :owned reach the core.
RSpec.describe "shared reference rows" do
  include_context "tmpdir"

  let(:schema) do
    <<~SQL
      CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
      CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
      CREATE TABLE account_users (id INTEGER PRIMARY KEY, account_id INTEGER NOT NULL REFERENCES accounts(id),
        user_id INTEGER NOT NULL REFERENCES users(id));
    SQL
  end

  def database(name, rows: true)
    path = File.join(@dir, name)
    SQLite3::Database.new(path) do |conn|
      conn.execute_batch(schema)
      if rows
        conn.execute_batch(<<~SQL)
          INSERT INTO accounts VALUES (1, 'One'), (2, 'Two');
          INSERT INTO users VALUES (1, 'Ann'), (2, 'Bob'), (3, 'Cy');
          INSERT INTO account_users VALUES (1, 1, 1), (2, 1, 2), (3, 2, 2), (4, 2, 3);
        SQL
      end
    end
    path
  end

  def users(path)
    conn = SQLite3::Database.new(path)
    conn.execute("SELECT id, name FROM users ORDER BY id")
  ensure
    conn&.close
  end

  it "carries the users an account refers to and inserts them into a new database" do
    source = database("app.sqlite3")
    backup = TenantKit.backup(database: source, tenant_id: 1, output_dir: out, tenant_column: "account_id")
    expect(backup.shared).to eq("users" => 2)
    expect(backup.tables).not_to have_key("users")

    fresh = database("fresh.sqlite3", rows: false)
    result = TenantKit.restore(database: fresh, archive: backup.path, tenant_id: 1, tenant_column: "account_id")
    expect(result.shared).to eq("users" => { inserted: 2, present: 0, differing: 0 })
    expect(users(fresh)).to eq([[1, "Ann"], [2, "Bob"]])
  end

  it "takes :shared and :owned table rules, and refuses others" do
    source = database("app.sqlite3")
    expect do
      TenantKit.backup(database: source, tenant_id: 1, output_dir: out, tenant_column: "account_id",
                       tables: { "users" => :owned })
    end.to raise_error(ArgumentError, /"users" is ruled owned, but it has no "account_id" column/)
    expect do
      TenantKit.backup(database: source, tenant_id: 1, output_dir: out, tenant_column: "account_id",
                       tables: { "account_users" => :shared })
    end.to raise_error(ArgumentError, /"account_users" has the tenant column "account_id"/)
    expect do
      TenantKit.backup(database: source, tenant_id: 1, output_dir: out, tables: { "users" => :mine })
    end.to raise_error(ArgumentError, "tables: users: expected one of skip, shared, owned, got :mine")
  end
end
