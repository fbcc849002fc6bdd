# frozen_string_literal: true

# Settings resolution, native against ActiveRecord, side by side in one run
# (issue 6). Run from the repo root after `script/compile`:
#
#   ruby bench/settings_bench.rb [--users 10000] [--single 20000] [--runs 3] [--keep PATH]
#
# (--keep copies the generated database, with the lookup index, to PATH for
# further experiments.) Every timed section starts after GC.start. The
# native batch is timed 3x per round (it is cheap), ActiveRecord once.
#
# Builds a real SQLite file (tests/fixtures/app_schema.sql) with one tenant
# of 10,000 users and a realistic mix of settings rows: tenant-level and
# class-level rows, full default rows for the users that went through
# `build_settings_for`, one or two customized keys for many more, and two
# other tenants of noise. Then it measures
#   1. `resolve_many` for all users against the equivalent ActiveRecord code
#      doing one lookup per user (tenant and class rows loaded once, then one
#      query per user, values JSON-decoded and merged: models and pluck);
#   2. one `resolve` call (mean over many random users), native and AR;
# with the lookup index of the README's migration, and (native only, AR
# extrapolated from a sample) on the stock table that only indexes tenant_id.
# Both sides must return equal results, or the benchmark aborts.

$LOAD_PATH.unshift File.expand_path("../lib", __dir__)
require "tenant_kit"
require "sqlite3"
require "active_record"
require "json"
require "tmpdir"
require "optparse"
require "fileutils"

options = { users: 10_000, single: 20_000, runs: 3, keep: nil }
OptionParser.new do |o|
  o.on("--users N", Integer) { |v| options[:users] = v }
  o.on("--single N", Integer, "resolve calls to average") { |v| options[:single] = v }
  o.on("--runs N", Integer, "repetitions of the batch timings (median shown)") { |v| options[:runs] = v }
  o.on("--keep PATH", "also copy the generated database (with the lookup index) to PATH") { |v| options[:keep] = v }
end.parse!

TENANT = 1
USER_DEFAULTS = {
  "theme" => "light", "locale" => "en", "per_page" => 25, "notifications" => true,
  "digest" => "weekly", "timezone" => "UTC", "sidebar" => { "collapsed" => false, "width" => 240 },
}.freeze
DEFAULTS = {
  "User" => USER_DEFAULTS,
  "Team" => { "color" => "blue", "members_max" => 10 },
  "TimeMaterial" => { "rounding" => 15, "billable" => true, "rate" => 80.5 },
}.freeze

def clock
  Process.clock_gettime(Process::CLOCK_MONOTONIC)
end

# Each timed section starts from a collected heap, so neither side pays for
# the other's garbage.
def timed
  GC.start
  started = clock
  result = yield
  [clock - started, result]
end

def median(values)
  values.sort[values.size / 2]
end

def build_database(path, users)
  db = SQLite3::Database.new(path)
  db.execute_batch(File.read(File.expand_path("../tests/fixtures/app_schema.sql", __dir__)))
  rng = Random.new(42)
  now = "2026-11-27 22:11:00.000000"
  counts = Hash.new(0)
  db.transaction do
    tenant = db.prepare("INSERT INTO tenants (id, name, created_at, updated_at) VALUES (?, ?, ?, ?)")
    user = db.prepare("INSERT INTO users (tenant_id, email, created_at, updated_at) VALUES (?, ?, ?, ?)")
    setting = db.prepare(
      "INSERT INTO settings (tenant_id, target_type, target_id, key, value, created_at, updated_at) " \
      "VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    add = lambda do |tenant_id, type, id, key, value, level|
      setting.execute(tenant_id, type, id&.to_s, key, JSON.generate(value), now, now)
      counts[level] += 1 if tenant_id == TENANT
    end
    [[TENANT, users], [2, users / 5], [3, users / 5]].each do |tenant_id, n|
      tenant.execute(tenant_id, "tenant #{tenant_id}", now, now)
      ids = Array.new(n) do |i|
        user.execute(tenant_id, "user#{i}@t#{tenant_id}.test", now, now)
        db.last_insert_row_id
      end
      # Tenant level: applies to every class.
      add.call(tenant_id, nil, nil, "locale", "de", :tenant)
      add.call(tenant_id, nil, nil, "timezone", "Europe/Berlin", :tenant)
      add.call(tenant_id, nil, nil, "fiscal_year_start", 4, :tenant)
      # Class level.
      add.call(tenant_id, "User", nil, "per_page", 50, :class)
      add.call(tenant_id, "User", nil, "digest", "daily", :class)
      add.call(tenant_id, "TimeMaterial", nil, "rounding", 30, :class)
      add.call(tenant_id, "Team", nil, "color", "green", :class)
      # Instance level.
      ids.each do |id|
        roll = rng.rand
        if roll < 0.3 # went through build_settings_for: a full set of rows
          USER_DEFAULTS.each { |key, value| add.call(tenant_id, "User", id, key, value, :instance) }
          add.call(tenant_id, "User", id, "theme", "dark", :instance) if rng.rand < 0.2 # an old duplicate
        elsif roll < 0.75 # customized one or two keys
          add.call(tenant_id, "User", id, "theme", %w[dark sepia high-contrast].sample(random: rng), :instance)
          add.call(tenant_id, "User", id, "per_page", [10, 100].sample(random: rng), :instance) if rng.rand < 0.5
          add.call(tenant_id, "User", id, "shortcuts", ["g i", "g p"], :instance) if rng.rand < 0.1 # unknown key
        end
      end
      (1..(n / 50)).each { |team| add.call(tenant_id, "Team", team, "members_max", 25, :instance) }
    end
    [tenant, user, setting].each(&:close)
  end
  db.close
  counts
end

class Setting < ActiveRecord::Base
  self.table_name = "settings"
end

# The ActiveRecord code resolve_many replaces: shared rows once, then one
# lookup per user. Lowest id wins among duplicates, like the native side;
# the few rows of a user are sorted in Ruby because `ORDER BY id` makes
# SQLite (without ANALYZE statistics) walk index_settings_on_tenant_id in
# rowid order instead of using the lookup index: a scan of the whole tenant.
def ar_resolve_all(tenant_id, ids, pluck: false)
  shared = Setting.where(tenant_id: tenant_id, target_id: nil, target_type: [nil, "User"]).to_a.sort_by(&:id)
  base = USER_DEFAULTS.dup
  [nil, "User"].each do |type|
    shared.select { |row| row.target_type == type }.reverse_each { |row| base[row.key] = JSON.parse(row.value) }
  end
  ids.each_with_object({}) do |id, out|
    settings = base.dup
    scope = Setting.where(tenant_id: tenant_id, target_type: "User", target_id: id.to_s)
    if pluck
      scope.pluck(:id, :key, :value).sort.reverse_each { |_, key, value| settings[key] = JSON.parse(value) }
    else
      scope.to_a.sort_by(&:id).reverse_each { |row| settings[row.key] = JSON.parse(row.value) }
    end
    out[id] = settings
  end
end

# Keys in the same order as the native result, for an equality check.
def normalize(settings)
  known = USER_DEFAULTS.keys
  settings.sort_by { |key, _| [known.index(key) || known.size, key] }.to_h
end

def report(title, rows)
  puts "\n#{title}"
  rows.each { |label, value| puts format("  %-58s %s", label, value) }
end

def ms(seconds)
  format("%9.2f ms", seconds * 1000)
end

def us(seconds)
  format("%9.2f µs", seconds * 1_000_000)
end

Dir.mktmpdir("tenant_kit_settings_bench") do |dir|
  path = File.join(dir, "bench.sqlite3")
  counts = build_database(path, options[:users])
  ActiveRecord::Base.establish_connection(adapter: "sqlite3", database: path)
  ActiveRecord::Base.logger = nil
  ids = SQLite3::Database.new(path).execute("SELECT id FROM users WHERE tenant_id = ? ORDER BY id", [TENANT]).flatten
  rng = Random.new(7)
  sample = Array.new(options[:single]) { ids.sample(random: rng) }

  puts "tenant_kit #{TenantKit::VERSION}, SQLite #{TenantKit.sqlite_version}, Ruby #{RUBY_VERSION}, " \
       "ActiveRecord #{ActiveRecord.version}, sqlite3 gem #{SQLite3::VERSION}"
  puts "tenant #{TENANT}: #{ids.size} users; settings rows: #{counts[:tenant]} tenant-level, " \
       "#{counts[:class]} class-level, #{counts[:instance]} instance-level " \
       "(#{SQLite3::Database.new(path).get_first_value("SELECT COUNT(*) FROM settings")} rows in all tenants)"

  # -- 1. Stock table: only index_settings_on_tenant_id. ----------------------
  settings = TenantKit::Settings.new(database: path, defaults: DEFAULTS)
  cold, = timed { settings.resolve(tenant_id: TENANT, klass: "User", id: ids.first) }
  single, = timed { sample.each { |id| settings.resolve(tenant_id: TENANT, klass: "User", id: id) } }
  many = Array.new(options[:runs] * 3) { timed { settings.resolve_many(tenant_id: TENANT, klass: "User", ids: ids) }.first }
  ar_sample = ids.first(50)
  ar_part, = timed { ar_resolve_all(TENANT, ar_sample) }
  report("Stock table (index on tenant_id only) -> native lookup: #{settings.lookup}", [
    ["native resolve, first call (loads the tenant's rows)", ms(cold)],
    ["native resolve, mean of #{sample.size} calls", us(single / sample.size)],
    ["native resolve_many, #{ids.size} users (median of #{many.size})", ms(median(many))],
    ["ActiveRecord, #{ar_sample.size} users, extrapolated to #{ids.size}", ms(ar_part / ar_sample.size * ids.size)],
  ])
  settings.close

  # -- 2. With the lookup index of the README's migration. --------------------
  ActiveRecord::Base.connection.execute(
    "CREATE INDEX index_settings_on_lookup ON settings (tenant_id, target_type, target_id, key)",
  )
  settings = TenantKit::Settings.new(database: path, defaults: DEFAULTS)
  native_result = settings.resolve_many(tenant_id: TENANT, klass: "User", ids: ids)
  ar_result = ar_resolve_all(TENANT, ids)
  mismatch = ids.find { |id| normalize(native_result.fetch(id)) != normalize(ar_result.fetch(id)) }
  abort "results differ for user #{mismatch}: #{native_result[mismatch]} vs #{ar_result[mismatch]}" if mismatch

  native_many = []
  ar_models = []
  ar_pluck = []
  options[:runs].times do
    3.times { native_many << timed { settings.resolve_many(tenant_id: TENANT, klass: "User", ids: ids) }.first }
    ar_models << timed { ar_resolve_all(TENANT, ids) }.first
    ar_pluck << timed { ar_resolve_all(TENANT, ids, pluck: true) }.first
  end
  single, = timed { sample.each { |id| settings.resolve(tenant_id: TENANT, klass: "User", id: id) } }
  explain_time, = timed { sample.first(5000).each { |id| settings.explain(tenant_id: TENANT, klass: "User", id: id) } }
  ar_single_sample = sample.first(2000)
  ar_single, = timed { ar_single_sample.each { |id| ar_resolve_all(TENANT, [id]) } }
  ar_lookup, = timed do
    ar_single_sample.each { |id| Setting.where(tenant_id: TENANT, target_type: "User", target_id: id.to_s).to_a }
  end

  native = median(native_many)
  report("With index_settings_on_lookup (tenant_id, target_type, target_id, key) -> native lookup: #{settings.lookup}", [
    ["native resolve_many, #{ids.size} users (median of #{native_many.size})", ms(native)],
    ["native resolve_many, fastest run", ms(native_many.min)],
    ["ActiveRecord, one query per user, models (median of #{ar_models.size})", ms(median(ar_models))],
    ["ActiveRecord, one query per user, pluck (median of #{ar_pluck.size})", ms(median(ar_pluck))],
    ["speed-up vs ActiveRecord models (medians)", format("%9.1fx", median(ar_models) / native)],
    ["speed-up vs ActiveRecord pluck (medians)", format("%9.1fx", median(ar_pluck) / native)],
    ["native resolve, mean of #{sample.size} calls", us(single / sample.size)],
    ["native explain, mean of 5000 calls", us(explain_time / 5000)],
    ["ActiveRecord one user, shared rows + lookup, mean of #{ar_single_sample.size}", us(ar_single / ar_single_sample.size)],
    ["ActiveRecord per-user lookup alone, mean of #{ar_single_sample.size}", us(ar_lookup / ar_single_sample.size)],
  ])
  if options[:keep]
    settings.close
    ActiveRecord::Base.remove_connection
    FileUtils.cp(path, options[:keep])
    puts "\ndatabase kept at #{options[:keep]}"
  end
  ok = [median(ar_models), median(ar_pluck)].min / native >= 50 && single / sample.size < 0.001
  puts "\ntarget (>= 50x vs ActiveRecord, resolve < 1 ms): #{ok ? "met" : "NOT met"}"
end
