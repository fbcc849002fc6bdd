# frozen_string_literal: true

require_relative "spec_helper"
require_relative "support/tmpdir"
require "open3"
require "pty"
require "json"
require "zlib"

# The `tenant_kit` executable, run as an operator would: real processes, a
# real SQLite file and storage tree, exit statuses, a terminal for the
# progress bar, and Ctrl-C (SIGINT) in the middle of the work.
RSpec.describe "tenant_kit command line" do
  include_context "cli"

  def create_app(rows: 500)
    create_sample_app(tenants: 2, rows_per_tenant: rows, blob_bytes: 4 * 1024, seed: 3)
  end

  def backup_args(tenant = 1)
    ["backup", "--database", db, "--tenant-id", tenant, "--output-dir", out, "--storage-root", storage]
  end

  it "backs up, verifies and restores with exit status 0, reporting as JSON lines" do
    create_app
    before = TenantKitSample.tenant_digest(db, 1)
    stdout, stderr, status = run_cli(*backup_args, "--json")
    expect(status.exitstatus).to eq(0), stderr
    lines = stdout.lines.map { |l| JSON.parse(l) }
    expect(lines.map { |l| l["step"] }.compact).to include("start", "dump_progress", "archive_created", "done")
    archive = lines.last.fetch("result").fetch("path")
    expect(File).to exist(archive)

    stdout, _, status = run_cli("verify", "--archive", archive)
    expect(status.exitstatus).to eq(0)
    expect(stdout).to include("ok, tenant 1")

    system(RbConfig.ruby, "-rsqlite3", "-e", "SQLite3::Database.new(ARGV[0]).execute('DELETE FROM comments WHERE tenant_id = 1')", db) ||
      raise("could not delete")
    expect(TenantKitSample.tenant_digest(db, 1)).not_to eq(before)

    stdout, _, status = run_cli("restore", "--database", db, "--archive", archive, "--tenant-id", 1,
                                "--storage-root", storage, "--dry-run")
    expect(status.exitstatus).to eq(0)
    expect(stdout).to include("dry run: 0 conflict(s)").and match(/comments: insert [1-9]/)

    stdout, stderr, status = run_cli("restore", "--database", db, "--archive", archive, "--tenant-id", 1,
                                     "--storage-root", storage)
    expect(status.exitstatus).to eq(0), stderr
    expect(stdout).to match(/restored \d+ rows/)
    expect(TenantKitSample.tenant_digest(db, 1)).to eq(before)
  end

  it "exits with a status per error class and a message naming the problem" do
    create_app
    _, stderr, status = run_cli("backup", "--database", db)
    expect(status.exitstatus).to eq(2)
    expect(stderr).to include("backup needs --tenant-id, --output-dir")

    _, _, status = run_cli("frobnicate")
    expect(status.exitstatus).to eq(2)

    garbage = File.join(@dir, "garbage.tar.gz")
    File.binwrite(garbage, Zlib.gzip("not a tar archive" * 100))
    _, stderr, status = run_cli("verify", "--archive", garbage)
    expect(status.exitstatus).to eq(3)
    expect(stderr.lines.last).to start_with("tenant_kit: ")

    archive = JSON.parse(run_cli(*backup_args(1), "--json")[0].lines.last).fetch("result").fetch("path")
    stdout, _, status = run_cli("restore", "--database", db, "--archive", archive, "--tenant-id", 2, "--json")
    expect(status.exitstatus).to eq(2)
    expect(JSON.parse(stdout.lines.last).fetch("error").fetch("message")).to include("remap")
  end

  it "draws a progress bar on a terminal" do
    create_app
    output = +""
    PTY.spawn(RbConfig.ruby, exe, *backup_args.map(&:to_s)) do |reader, _writer, pid|
      begin
        reader.each_char { |c| output << c }
      rescue Errno::EIO
        # the child closed the terminal
      end
      Process.wait(pid)
    end
    expect($?.exitstatus).to eq(0), output
    expect(output).to include("\r[").and include("100%").and include("dump_progress")
    expect(output).to include("tenant_1_")
  end

  # Ctrl-C: Ruby raises Interrupt in the main thread and the extension's
  # unblock function cancels the native work.
  def interrupt_after(args, step)
    stdout_r, stdout_w = IO.pipe
    pid = Process.spawn(RbConfig.ruby, exe, *args.map(&:to_s), "--json", out: stdout_w, err: File::NULL)
    stdout_w.close
    seen = []
    stdout_r.each_line do |line|
      event = JSON.parse(line)
      seen << event["step"]
      if event["step"] == step
        Process.kill("INT", pid)
        break
      end
    end
    rest = stdout_r.read
    stdout_r.close
    Process.wait(pid)
    [$?, seen, rest]
  end

  it "stops a backup on Ctrl-C and leaves no archive" do
    create_app(rows: 4_000)
    status, seen, rest = interrupt_after(backup_args, "dump_progress")
    expect(seen).to include("dump_progress")
    expect(status.exitstatus).to eq(130), rest
    expect(rest).to include("interrupted")
    expect(Dir.children(out)).to be_empty
  end

  it "stops a restore on Ctrl-C and rolls it back" do
    create_app(rows: 4_000)
    archive = JSON.parse(run_cli(*backup_args(1), "--json")[0].lines.last).fetch("result").fetch("path")
    before = { 1 => TenantKitSample.tenant_digest(db, 1), 2 => TenantKitSample.tenant_digest(db, 2) }
    files_before = Dir.glob("#{storage}/**/*").sort
    status, seen, rest = interrupt_after(
      ["restore", "--database", db, "--archive", archive, "--tenant-id", 1, "--storage-root", storage, "--purge"],
      "purge_progress"
    )
    expect(seen).to include("purge_progress")
    expect(status.exitstatus).to eq(130), rest
    expect(rest).to include("interrupted")
    expect(before.keys.to_h { |t| [t, TenantKitSample.tenant_digest(db, t)] }).to eq(before)
    expect(Dir.glob("#{storage}/**/*").sort).to eq(files_before)
  end
end
