# frozen_string_literal: true

require_relative "spec_helper"
require_relative "support/tmpdir"
require "sqlite3"
require "fileutils"

# Encrypted archives through the Ruby interface: keywords, result fields,
# TenantKit::DecryptionError, and no secret in any message or inspect.
RSpec.describe "TenantKit encrypted archives" do
  PASSPHRASE = "spec passphrase 8815"

  include_context "tmpdir"

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

  it "opens with identity_file:, restores a plain archive given a key and says it was not encrypted" do
    key = TenantKit.generate_key
    sealed = TenantKit.backup(database: db, tenant_id: 1, output_dir: out, recipients: [key[:recipient]])
    key_file = File.join(@dir, "key.txt")
    File.write(key_file, "# created: now\n# public key: #{key[:recipient]}\n#{key[:identity]}\n")
    verified = TenantKit.verify(archive: sealed.path, identity_file: key_file)
    expect([verified.ok?, verified.encrypted]).to eq([true, true])

    plain = TenantKit.backup(database: db, tenant_id: 1, output_dir: out)
    expect([plain.path.end_with?(".tar.gz"), plain.encrypted]).to eq([true, false])
    restored = TenantKit.restore(database: db, archive: plain.path, tenant_id: 1, purge: true,
                                 identities: [key[:identity]])
    expect(restored.encrypted).to be(false)
  end

  it "raises IntegrityError for a truncated ciphertext and changes nothing" do
    key = TenantKit.generate_key
    result = TenantKit.backup(database: db, tenant_id: 1, output_dir: out, recipients: [key[:recipient]])
    bytes = File.binread(result.path)
    File.binwrite(result.path, bytes.byteslice(0, bytes.bytesize - 20))
    before = rows
    SQLite3::Database.new(db).tap { |c| c.execute("UPDATE notes SET body = 'changed' WHERE id = 1") }.close
    changed = rows
    expect { TenantKit.restore(database: db, archive: result.path, tenant_id: 1, purge: true, identities: [key[:identity]]) }
      .to raise_error(TenantKit::IntegrityError, /changed or cut short/)
    expect(rows).to eq(changed)
    expect(rows).not_to eq(before)
  end

  it "shows no secret in events, results, error messages or inspect" do
    key = TenantKit.generate_key
    seen = []
    backup = TenantKit.backup(database: db, tenant_id: 1, output_dir: out, passphrase: PASSPHRASE) { |e| seen << e.inspect }
    seen << backup.inspect << backup.to_h.to_s
    restored = TenantKit.restore(database: db, archive: backup.path, tenant_id: 1, purge: true,
                                 passphrase: PASSPHRASE) { |e| seen << e.inspect }
    seen << restored.inspect
    seen << TenantKit.verify(archive: backup.path, passphrase: PASSPHRASE) { |e| seen << e.inspect }.inspect
    [
      -> { TenantKit.restore(database: db, archive: backup.path, tenant_id: 1, identities: [key[:identity]]) },
      -> { TenantKit.restore(database: db, archive: backup.path, tenant_id: 1, passphrase: "#{PASSPHRASE}x") },
      -> { TenantKit.backup(database: db, tenant_id: 1, output_dir: out, recipients: [key[:identity]]) },
      -> { TenantKit.backup(database: db, tenant_id: 1, output_dir: out, recipients: [key[:recipient]], passphrase: PASSPHRASE) }
    ].each do |call|
      call.call
      raise "expected an error"
    rescue TenantKit::Error, ArgumentError => e
      seen << "#{e.class}: #{e.message} #{e.inspect} #{e.full_message}"
    end
    expect(seen.size).to be > 10
    seen.each do |text|
      expect(text).not_to include(PASSPHRASE)
      expect(text).not_to include(key[:identity])
    end
  end
end
