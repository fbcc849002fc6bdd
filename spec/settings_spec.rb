# frozen_string_literal: true

# TenantKit::Settings from Ruby (issue 6): the call shapes, errors, tenant
# isolation, build_settings_for exactly once from several forked processes,
# and waiting for locks held by other Ruby threads without blocking them.

spec_helper = File.expand_path("spec_helper.rb", __dir__)
if File.exist?(spec_helper)
  require spec_helper
else
  $LOAD_PATH.unshift File.expand_path("../lib", __dir__)
  require "tenant_kit"
end
require "sqlite3"
require "tmpdir"
require "json"

RSpec.describe TenantKit::Settings do
  schema = File.read(File.expand_path("../tests/fixtures/app_schema.sql", __dir__))
  defaults = {
    "User" => { "theme" => "light", "per_page" => 25, "notifications" => true },
    "Team" => { "color" => "blue" },
    "TimeMaterial" => { "rounding" => 15, "rate" => 80.5 },
  }

  around do |example|
    Dir.mktmpdir("tenant_kit_settings_spec") do |dir|
      @path = File.join(dir, "app.sqlite3")
      db = SQLite3::Database.new(@path)
      db.execute_batch(schema)
      db.close
      example.run
    ensure
      @db&.close
    end
  end

  let(:db) { @db ||= SQLite3::Database.new(@path) }
  let(:settings) { described_class.new(database: @path, defaults: defaults) }

  # Insert a settings row; `value` is the stored text (nil: SQL NULL).
  def row(tenant, type, id, key, value)
    db.execute(
      "INSERT INTO settings (tenant_id, target_type, target_id, key, value, created_at, updated_at) " \
      "VALUES (?, ?, ?, ?, ?, '2026-01-01 00:00:00', '2026-01-01 00:00:00')",
      [tenant, type, id&.to_s, key, value],
    )
    db.last_insert_row_id
  end

  def duplicates
    db.get_first_value(<<~SQL)
      SELECT COUNT(*) FROM (SELECT 1 FROM settings
        GROUP BY tenant_id, target_type, target_id, key HAVING COUNT(*) > 1)
    SQL
  end

  describe "#resolve" do
    it "returns a Hash with String keys, the strongest level winning per key" do
      row(1, nil, nil, "theme", '"tenant"')
      row(1, nil, nil, "locale", '"de"')
      row(1, "User", nil, "theme", '"class"')
      row(1, "User", nil, "per_page", "50")
      row(1, "User", 42, "theme", '"dark"')

      expect(settings.resolve(tenant_id: 1, klass: "User", id: 42))
        .to eq("theme" => "dark", "per_page" => 50, "notifications" => true, "locale" => "de")
      expect(settings.resolve(tenant_id: 1, klass: "User", id: 43))
        .to eq("theme" => "class", "per_page" => 50, "notifications" => true, "locale" => "de")
      expect(settings.resolve(tenant_id: 1, klass: "User"))
        .to eq("theme" => "class", "per_page" => 50, "notifications" => true, "locale" => "de")
      expect(settings.resolve(tenant_id: 1, klass: "Team", id: 1)).to eq("color" => "blue", "theme" => "tenant", "locale" => "de")
      expect(settings.resolve(tenant_id: 2, klass: "User", id: 42)).to eq(defaults["User"])
    end

    it "decodes every JSON type and keeps keys in the defaults' order, unknown keys after them" do
      row(1, "User", 7, "widgets", '[1, 2.5, {"a": null, "b": [true]}]')
      row(1, "User", 7, "notifications", nil)
      row(1, "User", 7, "big", "123456789012345678901234567890")
      row(1, "User", 7, "per_page", "10")
      result = settings.resolve(tenant_id: 1, klass: :user, id: "7")

      expect(result.keys).to eq(%w[theme per_page notifications big widgets])
      expect(result["widgets"]).to eq([1, 2.5, { "a" => nil, "b" => [true] }])
      expect(result["notifications"]).to be_nil
      expect(result["big"]).to eq(123_456_789_012_345_678_901_234_567_890)
      expect(result["per_page"]).to be_a(Integer)
      expect(result["theme"]).not_to be_frozen
      expect(settings.resolve(tenant_id: 1, klass: "TimeMaterial")["rate"]).to eq(80.5)
    end

    it "treats 42 and \"42\" as the same target" do
      row(1, "User", 42, "theme", '"dark"')
      expect(settings.resolve(tenant_id: 1, klass: "User", id: 42)["theme"]).to eq("dark")
      expect(settings.resolve(tenant_id: 1, klass: "User", id: "42")["theme"]).to eq("dark")
      expect(settings.resolve(tenant_id: 1, klass: "User", id: "042")["theme"]).to eq("light")
    end

    it "sees rows committed by other connections between calls" do
      expect(settings.resolve(tenant_id: 1, klass: "User", id: 1)["theme"]).to eq("light")
      row(1, "User", 1, "theme", '"dark"')
      expect(settings.resolve(tenant_id: 1, klass: "User", id: 1)["theme"]).to eq("dark")
      db.execute("UPDATE settings SET value = '\"sepia\"'")
      expect(settings.resolve(tenant_id: 1, klass: "User", id: 1)["theme"]).to eq("sepia")
    end

    it "costs well under a millisecond" do
      200.times { |i| row(1, "User", i, "theme", '"dark"') }
      settings.resolve(tenant_id: 1, klass: "User", id: 1)
      calls = 2000
      started = monotonic_now
      calls.times { |i| settings.resolve(tenant_id: 1, klass: "User", id: i % 300) }
      expect((monotonic_now - started) / calls).to be < 0.001
    end
  end

  describe "#explain" do
    it "gives value and source level of every key" do
      row(1, nil, nil, "locale", '"de"')
      row(1, "User", nil, "per_page", "50")
      row(1, "User", 42, "theme", '"dark"')
      expect(settings.explain(tenant_id: 1, klass: "User", id: 42)).to eq(
        "theme" => { value: "dark", source: :instance },
        "per_page" => { value: 50, source: :class },
        "notifications" => { value: true, source: :default },
        "locale" => { value: "de", source: :tenant },
      )
    end

    it "reports invalid rows under errors: and falls back to the next valid level" do
      bad = row(1, "User", 42, "theme", "dark")
      explained = settings.explain(tenant_id: 1, klass: "User", id: 42)
      expect(explained["theme"]).to include(value: "light", source: :default)
      expect(explained["theme"][:errors]).to contain_exactly(a_string_including("settings row #{bad}", "not valid JSON"))
      expect(explained["per_page"]).to eq(value: 25, source: :default)
    end
  end

  describe "#resolve_many" do
    it "is keyed by the ids as given and equals resolve per id" do
      row(1, nil, nil, "locale", '"de"')
      (1..60).each do |id|
        row(1, "User", id, "theme", %("user #{id}")) if (id % 3).zero?
        row(1, "User", id, "per_page", id.to_s) if (id % 4).zero?
        row(2, "User", id, "theme", '"other tenant"')
      end
      ids = (1..60).to_a + ["61", "x"]
      many = settings.resolve_many(tenant_id: 1, klass: "User", ids: ids)
      expect(many.keys).to eq(ids)
      ids.each { |id| expect(many[id]).to eq(settings.resolve(tenant_id: 1, klass: "User", id: id)), id.inspect }
      expect(many[3]["theme"]).to eq("user 3")
      expect(settings.resolve_many(tenant_id: 1, klass: "User", ids: [])).to eq({})
      big = (1..3000).to_a
      expect(settings.resolve_many(tenant_id: 1, klass: "User", ids: big).keys).to eq(big)
    end

    it "raises for an invalid value of any of the targets" do
      bad = row(1, "User", 5, "per_page", '"many"')
      expect { settings.resolve_many(tenant_id: 1, klass: "User", ids: [4, 5]) }
        .to raise_error(TenantKit::Settings::InvalidValueError, /settings row #{bad} .*User#5.*"per_page".*string but the default 25 is a number/)
    end
  end

  describe "#build_settings_for" do
    it "creates the missing rows of one level once and returns how many" do
      row(1, nil, nil, "theme", '"tenant blue"')
      before = settings.resolve(tenant_id: 1, klass: "User", id: 9)
      expect(settings.build_settings_for(tenant_id: 1, klass: "User")).to eq(3)
      expect(settings.build_settings_for(tenant_id: 1, klass: "User")).to eq(0)
      expect(settings.build_settings_for(tenant_id: 1, klass: "User", id: 9)).to eq(3)
      expect(settings.build_settings_for(tenant_id: 1, klass: "User", id: "9")).to eq(0)
      expect(settings.build_settings_for(tenant_id: 2, klass: :time_material)).to eq(2)
      expect(settings.resolve(tenant_id: 1, klass: "User", id: 9)).to eq(before)

      stored = db.execute("SELECT key, value, created_at FROM settings WHERE target_id = '9' ORDER BY id")
      expect(stored.map { |k, v, _| [k, v] }).to eq([%w[theme "tenant\ blue"], %w[per_page 25], %w[notifications true]])
      expect(stored.first[2]).to match(/\A\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}\z/)
      expect(duplicates).to eq(0)
    end

    it "creates each row exactly once when several processes call it at the same time" do
      parent_settings = settings # opened before fork: children must not share its connection
      parent_settings.resolve(tenant_id: 1, klass: "User", id: 1)
      gate_reader, gate_writer = IO.pipe
      results_reader, results_writer = IO.pipe
      targets = [["User", nil], ["Team", nil], ["TimeMaterial", nil]] +
                (1..10).map { |id| ["User", id.even? ? id : id.to_s] } + (1..3).map { |id| ["Team", id] }
      expected = 3 + 1 + 2 + (10 * 3) + (3 * 1)

      pids = Array.new(6) do |n|
        fork do
          gate_writer.close
          results_reader.close
          own = n.even? ? parent_settings : described_class.new(database: @path, defaults: defaults, busy_timeout_ms: 30_000)
          gate_reader.read # returns when the parent closes the gate: all start together
          created = targets.rotate(n * 3).sum do |klass, id|
            own.build_settings_for(tenant_id: 1, klass: klass, id: id)
          end
          results_writer.puts(created)
          exit!(0)
        rescue Exception => e # rubocop:disable Lint/RescueException
          results_writer.puts("#{e.class}: #{e.message}")
          exit!(1)
        end
      end
      gate_reader.close
      results_writer.close
      sleep 0.2
      gate_writer.close
      statuses = pids.map { |pid| Process.wait2(pid).last }
      reports = results_reader.read.lines.map(&:strip)
      results_reader.close

      expect(statuses).to all(be_success), reports.join("\n")
      expect(duplicates).to eq(0)
      expect(reports.sum(&:to_i)).to eq(expected)
      expect(db.get_first_value("SELECT COUNT(*) FROM settings")).to eq(expected)
      # The parent's object still works after its children used it.
      expect(parent_settings.build_settings_for(tenant_id: 1, klass: "User", id: 2)).to eq(0)
    end

    it "refuses a class without defaults" do
      expect { settings.build_settings_for(tenant_id: 1, klass: "Project") }
        .to raise_error(ArgumentError, /no defaults for klass "Project"/)
    end
  end

  describe "locks held by other connections" do
    it "waits without the GVL for a lock held by another Ruby thread of this process" do
      writer = SQLite3::Database.new(@path)
      settings.resolve(tenant_id: 1, klass: "User", id: 1)
      writer.execute("BEGIN EXCLUSIVE")
      writer.execute("INSERT INTO settings (tenant_id, target_type, target_id, key, value, created_at, updated_at) " \
                     "VALUES (1, 'User', '1', 'theme', '\"dark\"', '', '')")
      started = monotonic_now
      reader = Thread.new { settings.resolve(tenant_id: 1, klass: "User", id: 1) }
      builder = Thread.new { settings.build_settings_for(tenant_id: 1, klass: "Team", id: 5) }
      ticks = 0
      20.times do
        sleep 0.01
        ticks += 1 # runs only if the waiting threads left the GVL free
      end
      writer.execute("COMMIT")
      expect(reader.value["theme"]).to eq("dark")
      expect(builder.value).to eq(1)
      expect(ticks).to eq(20)
      expect(monotonic_now - started).to be < 4 # far below the 5 s busy timeout
    ensure
      writer&.close
    end

    it "raises TenantKit::DatabaseError once the busy timeout has passed" do
      quick = described_class.new(database: @path, defaults: defaults, busy_timeout_ms: 100)
      # The same timeout in seconds, as TenantKit.backup and .restore take it.
      patient = described_class.new(database: @path, defaults: defaults, busy_timeout: 0.4)
      writer = SQLite3::Database.new(@path)
      writer.execute("BEGIN EXCLUSIVE")
      expect { quick.resolve(tenant_id: 1, klass: "User", id: 1) }.to raise_error(TenantKit::DatabaseError, /locked/)
      started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      expect { patient.resolve(tenant_id: 1, klass: "User", id: 1) }.to raise_error(TenantKit::DatabaseError, /locked/)
      expect(Process.clock_gettime(Process::CLOCK_MONOTONIC) - started).to be_between(0.4, 4)
      expect { quick.build_settings_for(tenant_id: 1, klass: "User") }.to raise_error(TenantKit::DatabaseError)
      writer.execute("ROLLBACK")
      expect(quick.resolve(tenant_id: 1, klass: "User", id: 1)).to eq(defaults["User"])
    ensure
      writer&.close
    end
  end

  describe "tenant ids kept as BLOBs" do
    it "resolves the settings of a tenant whose id is 16 raw bytes (a binary String)" do
      uuid = ["0190a7c41b2c7d3e8f405162738495a6"].pack("H*")
      other = ["0190a7c41b2c7d3e8f405162738495a7"].pack("H*")
      row(SQLite3::Blob.new(uuid), nil, nil, "theme", '"dark"')
      row(SQLite3::Blob.new(other), nil, nil, "theme", '"sepia"')
      expect(settings.resolve(tenant_id: uuid, klass: "User", id: 42)["theme"]).to eq("dark")
      expect(settings.resolve(tenant_id: other, klass: "User", id: 42)["theme"]).to eq("sepia")
      expect(settings.explain(tenant_id: uuid, klass: "User")["theme"]).to eq(value: "dark", source: :tenant)
    end
  end

  describe "errors" do
    it "raises InvalidValueError (a TenantKit::Error) naming the row" do
      bad = row(1, "User", 42, "theme", "dark")
      expect { settings.resolve(tenant_id: 1, klass: "User", id: 42) }.to raise_error(TenantKit::Settings::InvalidValueError) { |e|
        expect(e).to be_a(TenantKit::IntegrityError)
        expect(e).to be_a(TenantKit::Error)
        expect(e.message).to include("settings row #{bad}", "tenant 1", "User#42", '"theme"', "not valid JSON", '"dark"')
      }
      mismatch = row(1, "User", nil, "notifications", '"yes"')
      expect { settings.resolve(tenant_id: 1, klass: "User", id: 1) }
        .to raise_error(TenantKit::Settings::InvalidValueError, /settings row #{mismatch} .*class User.*a string but the default true is a boolean/)
    end

    it "raises ArgumentError for bad arguments" do
      missing = File.join(File.dirname(@path), "missing.sqlite3")
      expect { described_class.new(database: missing) }.to raise_error(ArgumentError, /no such file: .*missing\.sqlite3/)
      expect(File.exist?(missing)).to be(false)
      expect { described_class.new(database: nil) }.to raise_error(ArgumentError, /database/)
      expect { described_class.new(database: @path, table: "prefs") }.to raise_error(ArgumentError, /no table "prefs"/)
      expect { described_class.new(database: @path, tenant_column: "account_id") }
        .to raise_error(ArgumentError, /no column "account_id"/)
      expect { described_class.new(database: @path, colour: 1) }.to raise_error(ArgumentError, /unknown option :colour/)
      expect { described_class.new(database: @path, busy_timeout: "5") }.to raise_error(ArgumentError, /busy_timeout: expected seconds/)
      expect { described_class.new(database: @path, busy_timeout: 1, busy_timeout_ms: 1000) }
        .to raise_error(ArgumentError, /not both/)
      expect { described_class.new(database: @path, defaults: { "User" => 3 }) }.to raise_error(ArgumentError, /defaults/)

      expect { settings.resolve(tenant_id: nil, klass: "User") }.to raise_error(ArgumentError, /tenant_id is required/)
      expect { settings.resolve(tenant_id: 1.5, klass: "User") }.to raise_error(ArgumentError, /tenant_id must be/)
      expect { settings.resolve(tenant_id: 1, klass: 42) }.to raise_error(ArgumentError, /klass must be/)
      expect { settings.resolve(tenant_id: 1, klass: nil) }.to raise_error(ArgumentError, /klass must be/)
      expect { settings.resolve(tenant_id: 1, klass: "User", id: Object.new) }.to raise_error(ArgumentError, /id must be/)
      expect { settings.resolve_many(tenant_id: 1, klass: "User", ids: nil) }.to raise_error(ArgumentError, /ids must be/)
      expect { settings.resolve_many(tenant_id: 1, klass: "User", ids: [1, nil]) }.to raise_error(ArgumentError, /ids must hold Integers or Strings \(got nil\)/)
    end
  end

  it "maps klass names like the app's klass_for" do
    stub_const("TimeMaterial", Class.new)
    expect(described_class.klass_for(:time_material)).to eq("TimeMaterial")
    expect(described_class.klass_for(:user)).to eq("User")
    expect(described_class.klass_for("Admin::User")).to eq("Admin::User")
    expect(described_class.klass_for(TimeMaterial)).to eq("TimeMaterial")
    expect { described_class.klass_for(3) }.to raise_error(ArgumentError)
  end

  it "uses indexed queries when the table has the lookup index, kept rows otherwise" do
    expect(settings.lookup).to eq(:snapshot)
    db.execute("CREATE INDEX index_settings_on_lookup ON settings (tenant_id, target_type, target_id, key)")
    indexed = described_class.new(database: @path, defaults: defaults)
    expect(indexed.lookup).to eq(:query)
    row(1, "User", 3, "theme", '"dark"')
    expect(indexed.resolve(tenant_id: 1, klass: "User", id: 3)).to eq(settings.resolve(tenant_id: 1, klass: "User", id: 3))
  end

  def monotonic_now
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end
end
