# frozen_string_literal: true

# The sample app generator (spec/support/sample_app.rb) and the Ruby/AR
# baselines of the benchmarks (bench/baseline/): other specs, script/demo and
# bench/ rely on both, so they are tested on their own here. The baselines
# run in child processes (they load ActiveRecord and connect globally).

require "tmpdir"
require "open3"
require "json"
require "zlib"
require "rubygems/package"
require_relative "support/sample_app"

RSpec.describe TenantKitSample do
  def generate(dir, **options)
    TenantKitSample.create(path: File.join(dir, "app.sqlite3"), storage_root: File.join(dir, "storage"),
                           tenants: 3, rows_per_tenant: 1_000, blob_bytes: 96 * 1024, seed: 3, **options)
  end

  def values(db, sql, *binds)
    TenantKitSample.with_db(db) { |c| c.execute(sql, binds) }
  end

  before(:all) do
    @dir = Dir.mktmpdir("sample_app_spec")
    @summary = generate(@dir, extra_types: true)
    @db = @summary[:path]
    @storage = @summary[:storage_root]
  end

  after(:all) { FileUtils.rm_rf(@dir) }

  it "fills rows_per_tenant tenant rows per tenant, one tenants row each, as the oracle counts them" do
    (1..3).each do |t|
      s = @summary[:tenants][t]
      counts = TenantKitSample.tenant_counts(@db, t)
      expect(s[:tables].except("tenants", "type_samples").values.sum).to eq(1_000)
      expect(counts.slice(*s[:tables].keys)).to eq(s[:tables])
      expect(counts).to include("tenants" => 1, "tags_tasks" => s[:tags_tasks],
                                "active_storage_attachments" => s[:attachments],
                                "active_storage_blobs" => s[:blobs],
                                "active_storage_variant_records" => s[:variant_records])
      expect(counts.values).to all(be_positive)
    end
    expect(values(@db, "SELECT count(*) FROM tenants")).to eq([[3]])
  end

  it "interleaves the tenants' rows" do
    first = values(@db, "SELECT tenant_id FROM tasks ORDER BY id LIMIT 6").flatten
    expect(first).to eq([1, 2, 3, 1, 2, 3])
  end

  it "is deterministic for a seed" do
    Dir.mktmpdir do |dir|
      again = generate(File.join(dir, "a"), extra_types: true)
      expect(TenantKitSample.tenant_digest(again[:path], 2)).to eq(TenantKitSample.tenant_digest(@db, 2))
      other = generate(File.join(dir, "b"), seed: 4)
      expect(TenantKitSample.tenant_digest(other[:path], 2)["tasks"]).not_to eq(TenantKitSample.tenant_digest(@db, 2)["tasks"])
    end
  end

  it "holds every SQLite storage class and the values that trip up JSON" do
    types = values(@db, "SELECT DISTINCT typeof(anything) FROM type_samples").flatten
    expect(types).to contain_exactly("integer", "real", "text", "blob", "null")
    expect(values(@db, "SELECT DISTINCT typeof(data) FROM type_samples").flatten).to contain_exactly("blob", "null")
    expect(values(@db, "SELECT count(*) FROM tasks WHERE typeof(estimate) = 'real' AND estimate = 2.0")[0][0]).to be_positive
    expect(values(@db, "SELECT count(*) FROM tasks WHERE position = 9223372036854775807")[0][0]).to be_positive
    expect(values(@db, "SELECT count(*) FROM tasks WHERE position = 9007199254740993")[0][0]).to be_positive
    expect(values(@db, "SELECT count(*) FROM tasks WHERE notes = '007' AND typeof(notes) = 'text'")[0][0]).to be_positive
    expect(values(@db, "SELECT count(*) FROM tasks WHERE notes IS NULL")[0][0]).to be_positive
    expect(values(@db, "SELECT count(*) FROM comments WHERE body LIKE '%日本語%'")[0][0]).to be_positive
    expect(values(@db, "SELECT DISTINCT typeof(budget) FROM projects").flatten).to contain_exactly("integer", "real", "null")
    nul_blob = values(@db, "SELECT data FROM type_samples WHERE label = 'blob with NULs' LIMIT 1")[0][0]
    expect(nul_blob.bytes).to include(0)
  end

  it "joins tags and tasks of the same tenant only, and comments on tasks and projects of the same tenant" do
    cross = values(@db, "SELECT count(*) FROM tags_tasks tt JOIN tags ON tags.id = tt.tag_id " \
                        "JOIN tasks ON tasks.id = tt.task_id WHERE tags.tenant_id != tasks.tenant_id")
    expect(cross).to eq([[0]])
    expect(values(@db, "SELECT DISTINCT commentable_type FROM comments ORDER BY 1").flatten).to eq(%w[Project Task])
    %w[Task Project].each do |type|
      table = TenantKitSample.tableize(type)
      bad = values(@db, "SELECT count(*) FROM comments c LEFT JOIN #{table} r ON r.id = c.commentable_id " \
                        "WHERE c.commentable_type = ? AND (r.id IS NULL OR r.tenant_id != c.tenant_id)", type)
      expect(bad).to eq([[0]])
    end
    expect(values(@db, "SELECT count(*) FROM tasks c JOIN tasks p ON p.id = c.parent_id " \
                       "WHERE p.tenant_id != c.tenant_id")).to eq([[0]])
  end

  it "has settings at tenant, class and instance level with JSON values" do
    levels = values(@db, "SELECT DISTINCT CASE WHEN target_type IS NULL THEN 'tenant' " \
                         "WHEN target_id IS NULL THEN 'class' ELSE 'instance' END FROM settings WHERE tenant_id = 1").flatten
    expect(levels).to contain_exactly("tenant", "class", "instance")
    values(@db, "SELECT value FROM settings").flatten.each { |v| expect { JSON.parse(v) }.not_to raise_error }
    expect(values(@db, "SELECT count(*) FROM (SELECT 1 FROM settings GROUP BY tenant_id, target_type, target_id, key " \
                       "HAVING count(*) > 1)")).to eq([[0]])
  end

  it "stores each blob's file in the Disk layout with the right size and MD5 checksum" do
    (1..3).each do |t|
      files = TenantKitSample.blob_files(@db, @storage, t)
      expect(files.size).to eq(@summary[:tenants][t][:blobs])
      expect(files).to all(include(exists: true, valid: true))
      expect(files.map { |f| f[:key] }).to all(match(/\A[0-9a-z]{28}\z/))
      expect(files.sum { |f| f[:byte_size] }).to eq(@summary[:tenants][t][:blob_bytes])
    end
    key = values(@db, "SELECT key FROM active_storage_blobs LIMIT 1")[0][0]
    expect(File.file?(File.join(@storage, key[0, 2], key[2, 2], key))).to be(true)
    expect(values(@db, "SELECT DISTINCT record_type FROM active_storage_attachments ORDER BY 1").flatten)
      .to eq(["ActiveStorage::VariantRecord", "Project", "Task", "User"])
  end

  it "leaves nobody's rows out of every tenant: NULL-tenant jobs and an orphan blob" do
    expect(values(@db, "SELECT count(*) FROM background_jobs WHERE tenant_id IS NULL")).to eq([[2]])
    tenant_blobs = (1..3).sum { |t| TenantKitSample.tenant_counts(@db, t)["active_storage_blobs"] }
    expect(values(@db, "SELECT count(*) FROM active_storage_blobs")[0][0]).to eq(tenant_blobs + 1)
  end

  it "makes tenants of different sizes, in WAL mode on request" do
    Dir.mktmpdir do |dir|
      s = TenantKitSample.create(path: File.join(dir, "w.sqlite3"), storage_root: File.join(dir, "st"), tenants: 2,
                                 rows_per_tenant: [300, 100], blob_bytes: [0, 20_000], journal_mode: "wal")
      expect(s[:tenants][1][:tables].except("tenants").values.sum).to eq(300)
      expect(s[:tenants][2][:tables].except("tenants").values.sum).to eq(100)
      expect(s[:tenants][1][:blobs]).to eq(0)
      expect(values(s[:path], "PRAGMA journal_mode")).to eq([["wal"]])
    end
  end

  it "refuses to overwrite a file and too small tenants" do
    expect { generate(@dir) }.to raise_error(ArgumentError, /exists/)
    Dir.mktmpdir do |dir|
      expect { generate(dir, rows_per_tenant: 10) }.to raise_error(ArgumentError, /at least/)
    end
  end

  it "generates 3 x 30,000 rows in a few seconds" do
    Dir.mktmpdir do |dir|
      s = TenantKitSample.create(path: File.join(dir, "f.sqlite3"), storage_root: File.join(dir, "st"),
                                 tenants: 3, rows_per_tenant: 30_000, blob_bytes: 0)
      expect(s[:seconds]).to be < 20 # about 2 s on one free core; generous for shared CI machines
    end
  end
end

RSpec.describe "Ruby/ActiveRecord baselines of bench/" do
  root = File.expand_path("..", __dir__)

  def run_baseline(root, script, *args)
    out, err, status = Open3.capture3("ruby", File.join(root, "bench/baseline", script), *args, "--quiet")
    raise "#{script} failed: #{err}" unless status.success?

    JSON.parse(out.lines.last.delete_prefix("RESULT "))
  end

  before(:all) do
    @dir = Dir.mktmpdir("baseline_spec")
    @summary = TenantKitSample.create(path: File.join(@dir, "app.sqlite3"), storage_root: File.join(@dir, "storage"),
                                      tenants: 3, rows_per_tenant: 800, blob_bytes: 64 * 1024, seed: 5, extra_types: true)
    @db = @summary[:path]
    @storage = @summary[:storage_root]
    FileUtils.mkdir_p(File.join(@dir, "out"))
    @before = (1..3).to_h { |t| [t, TenantKitSample.tenant_digest(@db, t)] }
    @backup = run_baseline(root, "ruby_backup.rb", "--database", @db, "--tenant-id", "1",
                           "--output-dir", File.join(@dir, "out"), "--storage-root", @storage)
  end

  after(:all) { FileUtils.rm_rf(@dir) }

  it "ruby_backup.rb writes a format-1 archive with exactly the tenant's rows and files" do
    expect(@backup["tables"]).to eq(TenantKitSample.tenant_counts(@db, 1))
    path = @backup["path"]
    expect(File.basename(path)).to match(/\Atenant_1_\d{14}\.tar\.gz\z/)
    expect(File.stat(path).mode & 0o777).to eq(0o600)
    entries = {}
    Zlib::GzipReader.open(path) { |gz| Gem::Package::TarReader.new(gz).each { |e| entries[e.full_name] = e.read.to_s } }
    expect(entries.keys.first(2)).to eq(%w[manifest.json dump.jsonl])
    manifest = JSON.parse(entries["manifest.json"])
    expect(manifest).to include("format" => "tenant_kit", "format_version" => "1.0")
    expect(Digest::SHA256.hexdigest(entries["dump.jsonl"])).to eq(manifest.dig("dump", "sha256"))
    lines = entries["dump.jsonl"].lines.map { |l| JSON.parse(l) }
    expect(lines.group_by { |l| l["table"] }.transform_values(&:size)).to eq(@backup["tables"])
    expect(lines.first["table"]).to eq("tenants")
    blob_entries = entries.keys.grep(%r{\Ablobs/})
    expect(blob_entries.size).to eq(@summary[:tenants][1][:blobs])
    manifest["blobs"].each do |b|
      data = entries.fetch("blobs/#{b['key']}")
      expect(Digest::MD5.base64digest(data)).to eq(b["checksum"])
      expect(Digest::SHA256.hexdigest(data)).to eq(b["sha256"])
    end
    expect(lines.find { |l| l["table"] == "type_samples" && l["row"]["label"] == "whole real" }["row"]["anything"]).to eq(2.0)
    expect(entries["dump.jsonl"]).to include('"anything":2.0')
  end

  it "ruby_restore.rb purges and restores the tenant exactly, leaving the others alone" do
    Dir.mktmpdir do |dir|
      db = File.join(dir, "restore.sqlite3")
      storage = File.join(dir, "storage")
      FileUtils.cp(@db, db)
      FileUtils.cp_r(@storage, storage)
      # Damage tenant 1 first: changed and extra rows must go, missing ones come back.
      SQLite3::Database.new(db) do |c|
        c.execute("UPDATE tasks SET title = 'changed' WHERE tenant_id = 1")
        c.execute("DELETE FROM comments WHERE tenant_id = 1 AND id % 2 = 0")
        c.execute("INSERT INTO tags (tenant_id, name, created_at, updated_at) VALUES (1, 'extra', '2026-01-01', '2026-01-01')")
      end
      result = run_baseline(root, "ruby_restore.rb", "--database", db, "--archive", @backup["path"],
                            "--tenant-id", "1", "--storage-root", storage, "--purge")
      expect(result["restored"].values.sum).to eq(@backup["tables"].values.sum - 1) # the tenants row existed
      expect(result["lock_seconds"]).to be <= result["seconds"]
      (1..3).each { |t| expect(TenantKitSample.tenant_digest(db, t)).to eq(@before[t]) }
      expect(TenantKitSample.blob_files(db, storage, 1)).to all(include(valid: true))
    end
  end
end
