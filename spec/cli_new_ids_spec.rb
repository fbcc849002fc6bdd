# frozen_string_literal: true

require_relative "spec_helper"
require_relative "support/tmpdir"
require "open3"
require "json"

# `tenant_kit restore --new-ids`: a copy of a tenant made from the command
# line, into a new tenant when no --tenant-id is given.
RSpec.describe "tenant_kit restore --new-ids" do
  include_context "cli"

  it "copies a tenant into a new tenant, writes the id map and leaves the original as it was" do
    create_sample_app(tenants: 2, rows_per_tenant: 50, blob_bytes: 1024, seed: 3)
    original = TenantKitSample.tenant_digest(db, 1)
    _, stderr, status = run_cli("backup", "--database", db, "--tenant-id", 1, "--output-dir", out,
                                "--storage-root", storage)
    expect(status.exitstatus).to eq(0), stderr
    archive = Dir[File.join(out, "*.tar.gz")].fetch(0)
    map = File.join(@dir, "ids.jsonl")

    stdout, stderr, status = run_cli("restore", "--database", db, "--archive", archive, "--storage-root", storage,
                                     "--new-ids", "--id-map", map)
    expect(status.exitstatus).to eq(0), stderr
    expect(stdout).to match(/restored \d+ rows, purged 0, \d+ new ids, tenant 3,/)
    lines = File.readlines(map).map { |l| JSON.parse(l) }
    expect(lines).not_to be_empty
    expect(lines.map(&:keys).uniq).to eq([%w[table old new]])
    expect(lines.none? { |l| l["old"] == l["new"] }).to be(true)
    expect(TenantKitSample.tenant_digest(db, 1)).to eq(original)
  end
end
