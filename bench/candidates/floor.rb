#!/usr/bin/env ruby
# frozen_string_literal: true

# The floor of a restore case (issue 19): the same rows moved by plain SQL,
# foreign keys off, the same indexes, one transaction; what SQLite itself
# needs for the tenant's rows. The rows are the sample app's oracle's
# (TenantKitSample.tenant_queries), independent of tenant_kit.
#
#   ruby bench/candidates/floor.rb delete --database DB --tenant-id 1
#     tenant 1's rows deleted from DB (the tenants row stays, as a purge
#     leaves it): the rows' ids are selected first, then deleted table by
#     table; both are timed.
#   ruby bench/candidates/floor.rb insert --database DB --source PRISTINE --tenant-id 1 [--tenant-row]
#     tenant 1's rows copied into DB with `INSERT … SELECT` from PRISTINE
#     (attached); --tenant-row copies the tenants row too (a new database).
#
# Last stdout line: `RESULT {"seconds":…,"rows":…}` (the transaction alone).

require "json"
require "optparse"
require "sqlite3"
require_relative "../../spec/support/sample_app"

def clock
  Process.clock_gettime(Process::CLOCK_MONOTONIC)
end

def q(name)
  %("#{name.gsub('"', '""')}")
end

def delete_floor(db, tenant_id)
  conn = SQLite3::Database.new(db)
  conn.execute("PRAGMA foreign_keys = OFF")
  queries = TenantKitSample.tenant_queries(conn, tenant_id, select: "rowid AS r").except("tenants")
  started = clock
  rows = 0
  conn.transaction(:immediate) do
    # Membership first: the derived tables' rows are found through parents
    # that are deleted too.
    queries.each_with_index do |(_, (sql, binds)), i|
      conn.execute("CREATE TEMP TABLE floor_#{i} AS #{sql}", binds)
    end
    queries.each_with_index do |(table, _), i|
      conn.execute("DELETE FROM main.#{q(table)} WHERE rowid IN (SELECT r FROM temp.floor_#{i})")
      rows += conn.changes
    end
  end
  [clock - started, rows]
ensure
  conn&.close
end

def insert_floor(db, source, tenant_id, tenant_row)
  # The pristine copy is `main`, so the oracle's unqualified table names
  # read it; the rows go into the attached target. Nothing writes `main`.
  conn = SQLite3::Database.new(source)
  conn.execute("PRAGMA foreign_keys = OFF")
  conn.execute("ATTACH ? AS dst", [db])
  queries = TenantKitSample.tenant_queries(conn, tenant_id)
  queries = queries.except("tenants") unless tenant_row
  started = clock
  rows = 0
  conn.transaction(:immediate) do
    queries.each do |table, (sql, binds)|
      conn.execute("INSERT INTO dst.#{q(table)} #{sql}", binds)
      rows += conn.changes
    end
  end
  [clock - started, rows]
ensure
  conn&.close
end

mode = ARGV.shift
options = { tenant_id: 1 }
OptionParser.new do |o|
  o.on("--database PATH") { |v| options[:database] = v }
  o.on("--source PATH") { |v| options[:source] = v }
  o.on("--tenant-id ID", Integer) { |v| options[:tenant_id] = v }
  o.on("--tenant-row") { options[:tenant_row] = true }
end.parse!
seconds, rows =
  case mode
  when "delete" then delete_floor(options.fetch(:database), options[:tenant_id])
  when "insert" then insert_floor(options.fetch(:database), options.fetch(:source), options[:tenant_id], options[:tenant_row])
  else abort "usage: #{$PROGRAM_NAME} delete|insert OPTIONS"
  end
puts "RESULT #{JSON.generate('seconds' => seconds.round(4), 'rows' => rows, 'lock' => { 'lock_seconds' => seconds.round(4) })}"
