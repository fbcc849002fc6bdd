# frozen_string_literal: true

require_relative "spec_helper"
require "tmpdir"
require "sqlite3"
require "fileutils"

# Encrypted archives through the Ruby interface: keywords, result fields,
# TenantKit::DecryptionError, and no secret in any message or inspect.
RSpec.describe "TenantKit encrypted archives" do
  PASSPHRASE = "spec passphrase 8815"

  around do |example|
    Dir.mktmpdir("tenant_kit_encryption") do |dir|
      @dir = dir
      example.run
    end
  end

  let(:db) { File.join(@dir, "app.sqlite3") }
  let(:out) { File.join(@dir, "out").tap { |d| FileUtils.mkdir_p(d) } }

  before do
    SQLite3::Database.new(db) do |conn|
      conn.execute_batch(<<~SQL)
        CREATE TABLE tenants(id INTEGER PRIMARY KEY, name TEXT);
        CREATE TABLE notes(id INTEGER PRIMARY KEY, tenant_id INTEGER REFERENCES tenants(id), body TEXT);
        INSERT INTO tenants VALUES (1, 'one'), (2, 'two');
        INSERT INTO notes VALUES (1, 1, 'first'), (2, 1, 'second'), (3, 2, 'other');
      SQL
    end
  end

  # (Database.new with a block returns the database, not the block's value.)
  def rows
    conn = SQLite3::Database.new(db)
    conn.execute("SELECT * FROM notes ORDER BY id")
  ensure
    conn&.close
  end

  it "generates keys, backs up to recipients and restores with an identity" do
    key = TenantKit.generate_key
    recovery = TenantKit.generate_key
    expect(key[:identity]).to start_with("AGE-SECRET-KEY-1")
    expect(key[:recipient]).to start_with("age1")

    result = TenantKit.backup(database: db, tenant_id: 1, output_dir: out,
                              recipients: [key[:recipient], recovery[:recipient]])
    expect(result.path).to end_with(".tar.gz.age")
    expect(result.encrypted).to be(true)
    expect(result.recipients).to eq([key[:recipient], recovery[:recipient]])
    expect(File.binread(result.path, 22)).to eq("age-encryption.org/v1\n")
    expect(result.inspect).not_to include(key[:identity])

    before = rows
    SQLite3::Database.new(db) { |c| c.execute("UPDATE notes SET body = 'changed' WHERE tenant_id = 1") }
    restored = TenantKit.restore(database: db, archive: result.path, tenant_id: 1, purge: true,
                                 identities: [recovery[:identity]])
    expect(restored.encrypted).to be(true)
    expect(rows).to eq(before)
    expect(TenantKit.verify(archive: result.path, identities: key[:identity]).encrypted).to be(true)
  end

  it "raises ArgumentError without a key and DecryptionError for one that does not fit" do
    result = TenantKit.backup(database: db, tenant_id: 1, output_dir: out, passphrase: PASSPHRASE)
    before = rows
    expect { TenantKit.restore(database: db, archive: result.path, tenant_id: 1) }
      .to raise_error(ArgumentError, /a key is needed/)
    expect { TenantKit.restore(database: db, archive: result.path, tenant_id: 1, passphrase: "wrong one") }
      .to raise_error(TenantKit::DecryptionError, /passphrase is wrong/) { |e| expect(e.message).not_to include("wrong one") }
    expect(TenantKit::DecryptionError.ancestors).to include(TenantKit::Error)
    expect(rows).to eq(before)
    expect(TenantKit.verify(archive: result.path, passphrase: PASSPHRASE).ok?).to be(true)
  end

  it "raises IntegrityError for a flipped byte and never shows secrets in argument errors" do
    key = TenantKit.generate_key
    result = TenantKit.backup(database: db, tenant_id: 1, output_dir: out, recipients: [key[:recipient]])
    bytes = File.binread(result.path)
    bytes.setbyte(bytes.bytesize - 3, bytes.getbyte(bytes.bytesize - 3) ^ 1)
    File.binwrite(result.path, bytes)
    expect { TenantKit.verify(archive: result.path, identities: [key[:identity]]) }
      .to raise_error(TenantKit::IntegrityError, /does not authenticate/)

    expect { TenantKit.backup(database: db, tenant_id: 1, output_dir: out, recipients: [key[:identity]]) }
      .to raise_error(ArgumentError) { |e| expect(e.message).not_to include(key[:identity]) }
    expect { TenantKit.backup(database: db, tenant_id: 1, output_dir: out, passphrase: "") }
      .to raise_error(ArgumentError, /must not be empty/)
    expect { TenantKit.restore(database: db, archive: result.path, tenant_id: 1, identities: ["AGE-SECRET-KEY-1NOPE"]) }
      .to raise_error(ArgumentError) { |e| expect(e.message).not_to include("NOPE") }
  end

  it "prunes encrypted archives like plain ones" do
    key = TenantKit.generate_key
    old = TenantKit.backup(database: db, tenant_id: 1, output_dir: out, recipients: [key[:recipient]])
    sleep 1.1
    TenantKit.backup(database: db, tenant_id: 1, output_dir: out)
    expect(TenantKit.prune(output_dir: out, keep_last: 1)).to eq([old.path])
  end
end
