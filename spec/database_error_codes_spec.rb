# frozen_string_literal: true

require_relative "spec_helper"
require_relative "support/tmpdir"

# TenantKit::DatabaseError carries SQLite's result code, so a caller tells a
# busy database (retry later) from a damaged file without reading the
# message. Real locks and real damaged files.
RSpec.describe TenantKit::DatabaseError do
  include_context "tmpdir"

  before do
    create_sample_app(tenants: 2, rows_per_tenant: 50, blob_bytes: 1024, seed: 3)
  end

  def backup_error(**options)
    TenantKit.backup(database: db, tenant_id: 1, output_dir: out, **options)
    raise "the backup succeeded"
  rescue TenantKit::DatabaseError => e
    e
  end

  it "is busy when another connection holds an EXCLUSIVE transaction" do
    blocker = SQLite3::Database.new(db)
    blocker.execute("BEGIN EXCLUSIVE")
    error = backup_error(busy_timeout: 0.05)
    expect([error.code, error.extended_code]).to eq([5, 5])
    expect(error.busy?).to be(true)
    expect(error.corrupt?).to be(false)
  ensure
    blocker&.execute("ROLLBACK")
    blocker&.close
  end

  it "is corrupt for a file that is not a database, and for damaged pages" do
    page_size = SQLite3::Database.new(db).then { |c| c.get_first_value("PRAGMA page_size").tap { c.close } }
    damaged = File.binread(db)
    damaged[page_size..] = "\xA5".b * (damaged.bytesize - page_size)
    File.binwrite(db, damaged)
    error = backup_error
    expect(error.code).to eq(11)
    expect([error.corrupt?, error.busy?]).to eq([true, false])

    File.binwrite(db, "x" * 4096)
    error = backup_error
    expect([error.code, error.extended_code]).to eq([26, 26])
    expect([error.corrupt?, error.busy?]).to eq([true, false])
  end

  it "has no code when SQLite did not report the error" do
    error = TenantKit::DatabaseError.new("made up")
    expect([error.code, error.extended_code, error.busy?, error.corrupt?]).to eq([nil, nil, false, false])
  end
end
