# frozen_string_literal: true

require_relative "spec_helper"
require_relative "support/tmpdir"
require "open3"
require "json"

# Encrypted archives from the command line, run as an operator would: the
# real executable, a key made by TenantKit.generate_key, the age CLI's
# format; a passphrase only through the environment.
RSpec.describe "tenant_kit with age keys" do
  include_context "cli"

  let(:key) { TenantKit.generate_key }

  before do
    create_sample_app(tenants: 2, rows_per_tenant: 60, blob_bytes: 512, seed: 4)
    FileUtils.mkdir_p(out)
  end

  def key_file(identity)
    File.join(@dir, "key.txt").tap { |path| File.write(path, "# test key\n#{identity}\n", perm: 0o600) }
  end

  def rows
    SQLite3::Database.new(db) { |c| return c.execute("SELECT count(*), total(id) FROM tasks") }
  end

  it "backs up to a recipient and restores with the identity file; a wrong key exits 9 and changes nothing" do
    stdout, stderr, status = run_cli("backup", "--database", db, "--tenant-id", 1, "--output-dir", out,
                                     "--storage-root", storage, "--recipient", key[:recipient], "--json")
    expect(status.exitstatus).to eq(0), stderr
    result = JSON.parse(stdout.lines.last).fetch("result")
    expect(result).to include("encrypted" => true, "recipients" => [key[:recipient]])
    expect(result["path"]).to end_with(".tar.gz.age")
    expect(stdout + stderr).not_to include(key[:identity])

    before = rows
    other = TenantKit.generate_key
    _, stderr, status = run_cli("restore", "--database", db, "--archive", result["path"], "--tenant-id", 1,
                                "--storage-root", storage, "--purge", "--identity-file", key_file(other[:identity]))
    expect(status.exitstatus).to eq(9), stderr
    expect(stderr).to include("none of the given identities can decrypt it")
    expect(stderr).not_to include(other[:identity])
    expect(rows).to eq(before)

    stdout, stderr, status = run_cli("restore", "--database", db, "--archive", result["path"], "--tenant-id", 1,
                                     "--storage-root", storage, "--purge", "--identity-file", key_file(key[:identity]),
                                     "--json")
    expect(status.exitstatus).to eq(0), stderr
    expect(JSON.parse(stdout.lines.last).fetch("result")).to include("encrypted" => true)
    expect(rows).to eq(before)
  end

  it "takes a passphrase from the environment only, and verifies with it" do
    env = { "TK_SPEC_PASSPHRASE" => "correct horse battery staple" }
    stdout, stderr, status = run_cli("backup", "--database", db, "--tenant-id", 2, "--output-dir", out,
                                     "--passphrase-env", "TK_SPEC_PASSPHRASE", "--json", env: env)
    expect(status.exitstatus).to eq(0), stderr
    path = JSON.parse(stdout.lines.last).fetch("result").fetch("path")

    _, stderr, status = run_cli("verify", "--archive", path)
    expect(status.exitstatus).to eq(2), stderr
    expect(stderr).to include("key is needed")

    stdout, stderr, status = run_cli("verify", "--archive", path, "--passphrase-env", "TK_SPEC_PASSPHRASE", "--json",
                                     env: env)
    expect(status.exitstatus).to eq(0), stderr
    expect(stdout).not_to include(env["TK_SPEC_PASSPHRASE"])

    _, stderr, status = run_cli("verify", "--archive", path, "--passphrase-env", "TK_SPEC_UNSET")
    expect(status.exitstatus).to eq(2)
    expect(stderr).to include("--passphrase-env: TK_SPEC_UNSET is not set")
  end
end
