# frozen_string_literal: true

require_relative "spec_helper"
require_relative "support/tmpdir"
require "sqlite3"

# Tenant ids kept as 16-byte BLOBs (UUIDv7), as 37signals' apps keep them
# on SQLite: a binary String is such an id, a UUID in text is converted to
# it, and nothing hands raw bytes to JSON.
RSpec.describe "BLOB tenant ids" do
  include_context "tmpdir"

  # 16 bytes per id: the account and the kind of row up front, so two
  # accounts never share one.
  def uuid(account, kind, n)
    [0x01, 0x90, account, kind, 0x1b, 0x2c, 0x7d, 0x3e, 0x8f, 0x40, 0x51, 0x62, 0x73, 0x84, 0x95, n].pack("C*")
  end

  def account(n) = uuid(n, 0, 0)

  def dashed(bytes)
    bytes.unpack1("H*").unpack("a8a4a4a4a12").join("-").force_encoding(Encoding::UTF_8)
  end

  def blob(bytes) = SQLite3::Blob.new(bytes)

  def create_app
    SQLite3::Database.new(db) do |conn|
      conn.execute_batch(<<~SQL)
        CREATE TABLE accounts (id blob(16) PRIMARY KEY NOT NULL, name varchar NOT NULL);
        CREATE TABLE projects (id blob(16) PRIMARY KEY NOT NULL, account_id blob(16) NOT NULL, name varchar);
        CREATE TABLE tasks (id blob(16) PRIMARY KEY NOT NULL, account_id blob(16) NOT NULL,
          project_id blob(16) NOT NULL, title varchar);
        CREATE INDEX index_tasks_on_account_id ON tasks (account_id);
      SQL
      [1, 2].each do |a|
        conn.execute("INSERT INTO accounts VALUES (?, ?)", [blob(account(a)), "Account #{a}"])
        conn.execute("INSERT INTO projects VALUES (?, ?, 'P')", [blob(uuid(a, 1, 1)), blob(account(a))])
        (1..3).each do |n|
          conn.execute("INSERT INTO tasks VALUES (?, ?, ?, ?)",
                       [blob(uuid(a, 2, n)), blob(account(a)), blob(uuid(a, 1, 1)), "Task #{n}"])
        end
      end
    end
  end

  # The rows of one query (sqlite3 1.4's Database.new block returns the
  # database, not the block's value).
  def sql(query, *binds)
    conn = SQLite3::Database.new(db)
    conn.execute(query, binds)
  ensure
    conn&.close
  end

  # Every row, with the storage class of its BLOB columns.
  def rows
    %w[accounts projects tasks].to_h do |t|
      other = t == "accounts" ? "name" : "account_id"
      [t, sql("SELECT typeof(id), quote(id), typeof(#{other}), quote(#{other}) FROM #{t} ORDER BY id")]
    end
  end

  def backup(tenant_id, &block)
    TenantKit.backup(database: db, tenant_id: tenant_id, output_dir: out, tenant_column: "account_id", &block)
  end

  def restore(archive, tenant_id, **options, &block)
    TenantKit.restore(database: db, archive: archive, tenant_id: tenant_id, tenant_column: "account_id",
                      **options, &block)
  end

  before { create_app }

  it "backs up by a binary String or by the UUID's text, into the same archive named by its hex" do
    by_bytes = backup(account(1))
    by_text = backup(dashed(account(1)))
    # Text in a binary String (pack, binary reads) that spells the UUID.
    expect(backup(dashed(account(1)).b).dump_sha256).to eq(by_bytes.dump_sha256)
    expect(by_bytes.tables).to eq("accounts" => 1, "projects" => 1, "tasks" => 3)
    expect(by_text.dump_sha256).to eq(by_bytes.dump_sha256)
    expect(File.basename(by_bytes.path)).to match(/\Atenant_#{account(1).unpack1('H*')}_\d{14}\.tar\.gz\z/)

    verified = TenantKit.verify(archive: by_bytes.path)
    expect(verified.tenant_id).to eq(account(1))
    expect(verified.tenant_id.encoding).to eq(Encoding::BINARY)
    backup(account(2))
    archives_of_1 = Dir[File.join(out, "tenant_#{account(1).unpack1('H*')}_*.tar.gz")]
    expect(archives_of_1).to include(by_bytes.path, by_text.path)
    expect(TenantKit.prune(output_dir: out, keep_last: 0, tenant_id: dashed(account(1)), dry_run: true))
      .to match_array(archives_of_1)
  end

  it "restores into the same tenant and remaps into another one, giving binary Strings back" do
    before = rows
    archive = backup(account(1)).path
    sql("DELETE FROM tasks WHERE account_id = ?", blob(account(1)))
    sql("DELETE FROM projects WHERE account_id = ?", blob(account(1)))
    expect(rows).not_to eq(before)

    result = restore(archive, dashed(account(1)))
    expect(result.tenant_id).to eq(account(1))
    expect(result.source_tenant_id).to eq(account(1))
    expect(result.tenant_id.encoding).to eq(Encoding::BINARY)
    expect(rows).to eq(before)

    sql("DELETE FROM tasks WHERE account_id = ?", blob(account(1)))
    expect { restore(archive, account(3)) }.to raise_error(ArgumentError, /pass remap: true/)
    sql("DELETE FROM projects WHERE account_id = ?", blob(account(1)))
    remapped = restore(archive, account(3), remap: true)
    expect([remapped.source_tenant_id, remapped.tenant_id]).to eq([account(1), account(3)])
    moved = sql("SELECT typeof(account_id), count(*) FROM tasks WHERE account_id = ? GROUP BY 1", blob(account(3)))
    expect(moved).to eq([["blob", 3]])
  end

  it "reports the tenant id in events that JSON can encode" do
    events = []
    archive = backup(account(1)) { |e| events << e }.path
    restore(archive, account(1), dry_run: true) { |e| events << e }
    expect { JSON.generate(events) }.not_to raise_error
    starts = events.select { |e| e[:step] == :start && e.key?(:tenant_id) }
    expect(starts.map { |e| e[:tenant_id] }).to eq([{ "$base64": [account(1)].pack("m0") }] * 2)
  end

  it "says what the column holds when the id is no 16-byte UUID, never printing raw bytes" do
    expect { backup("not-a-uuid") }.to raise_error(
      ArgumentError,
      %r{\Aprojects\.account_id / tenant_id holds 16-byte BLOBs; give a binary String of 16 bytes or a UUID like .*; got the String "not-a-uuid"\z}
    )
    short = account(1)[0, 15]
    expect { backup(short) }.to raise_error(ArgumentError, /got 15 bytes x'#{short.unpack1('H*')}'\z/)
    expect { backup(1) }.to raise_error(ArgumentError, /holds 16-byte BLOBs.*got the Integer 1\z/)
    broken = "\xff\xfe".dup.force_encoding(Encoding::UTF_8)
    expect { backup(broken) }.to raise_error(ArgumentError, /tenant_id: a String that is not valid UTF-8 \(bytes fffe\)/)
  end

  context "in the Rails jobs" do
    before(:all) do
      require "tenant_kit/rails"
      # The model shows its BLOB key as 25-character base36, as 37signals'
      # Fizzy does; the database keeps the 16 bytes.
      base36_uuid = Class.new(ActiveRecord::Type::Binary) do
        def deserialize(value)
          value = value.to_s if value.is_a?(ActiveModel::Type::Binary::Data)
          value&.unpack1("H*")&.to_i(16)&.to_s(36)&.rjust(25, "0")
        end

        def cast(value) = value.is_a?(String) && value.size == 25 ? value : deserialize(value)

        def serialize(value)
          value && ActiveModel::Type::Binary::Data.new([value.to_i(36).to_s(16).rjust(32, "0")].pack("H*"))
        end
      end
      # Its own connection: ActiveRecord::Base's stays the Rails specs'.
      @record_base = Class.new(ActiveRecord::Base) do
        self.abstract_class = true
        def self.name = "BlobSpecRecord"
      end
      @account_class = Class.new(@record_base) do
        self.table_name = "accounts"
        def self.name = "Account"
        attribute :id, base36_uuid.new
      end
    end

    it "give TenantKit the id as the database stores it, not as the model shows it" do
      @record_base.establish_connection(adapter: "sqlite3", database: db)
      account = @account_class.find_by!(name: "Account 1")
      expect(account.id).to eq(account(1).unpack1("H*").to_i(16).to_s(36).rjust(25, "0"))
      job = Object.new.extend(TenantKit::Rails::Job)
      tenant_id = job.send(:tenant_id_of, account)
      expect(tenant_id).to eq(account(1))
      expect(tenant_id.encoding).to eq(Encoding::BINARY)
      expect(backup(tenant_id).dump_sha256).to eq(backup(account(1)).dump_sha256)
      # The base36 form the model shows is a UUID form tenant_kit takes too.
      expect(backup(account.id).dump_sha256).to eq(backup(account(1)).dump_sha256)
    ensure
      @record_base.remove_connection
    end
  end
end
