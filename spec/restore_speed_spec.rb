# frozen_string_literal: true

require "digest"
require "sqlite3"
require "timeout"

# Issue 19: a job timeout stops a restore while one of its statements runs
# (here the app's trigger makes a project's delete last for minutes), rolls
# it back and leaves the database as it was.
RSpec.describe "TenantKit.restore cancelled inside a statement" do
  include_context "tmpdir"

  before do
    SQLite3::Database.new(db) do |conn|
      conn.execute_batch(<<~SQL)
        CREATE TABLE tenants(id INTEGER PRIMARY KEY, name TEXT);
        CREATE TABLE projects(id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants, name TEXT);
        CREATE TABLE slow(x INTEGER);
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
        INSERT INTO slow SELECT i FROM n;
        CREATE TRIGGER projects_slow AFTER DELETE ON projects
        BEGIN SELECT count(*) FROM slow AS a, slow AS b, slow AS c; END;
        INSERT INTO tenants VALUES (1, 'one'), (2, 'two');
        INSERT INTO projects VALUES (1, 1, 'mine'), (2, 2, 'theirs');
      SQL
    end
  end

  it "rolls back on Timeout.timeout and leaves the database as it was" do
    archive = TenantKit.backup(database: db, tenant_id: 1, output_dir: @dir).path
    before = Digest::SHA256.file(db).hexdigest
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    expect do
      Timeout.timeout(0.5) { TenantKit.restore(database: db, archive: archive, tenant_id: 1, purge: true, restore: false) }
    end.to raise_error(Timeout::Error)
    # The statement alone would run for minutes (a billion rows); stopped
    # inside it, the restore ends within the timeout and its rollback.
    expect(Process.clock_gettime(Process::CLOCK_MONOTONIC) - started).to be < 5
    expect(Digest::SHA256.file(db).hexdigest).to eq(before)
    conn = SQLite3::Database.new(db)
    expect(conn.get_first_value("SELECT count(*) FROM projects WHERE tenant_id = 1")).to eq(1)
  ensure
    conn&.close
  end
end
