# frozen_string_literal: true

# Shared contexts of the specs that work on files:
#
#   include_context "tmpdir"  # each example in a fresh temporary directory
#                             # (@dir, removed afterwards) with the sample
#                             # app's paths `db`, `storage`, `out` (created
#                             # on first use) and `create_sample_app`
#   include_context "cli"     # the same, plus the `tenant_kit` executable:
#                             # `exe`, `run_cli(*args, env: {})`

require "fileutils"
require "open3"
require "tmpdir"
require_relative "sample_app"

RSpec.shared_context "tmpdir" do
  around do |example|
    Dir.mktmpdir("tenant_kit_spec") do |dir|
      @dir = dir
      example.run
    end
  end

  let(:db) { File.join(@dir, "app.sqlite3") }
  let(:storage) { File.join(@dir, "storage") }
  let(:out) { File.join(@dir, "out").tap { |d| FileUtils.mkdir_p(d) } }

  # The sample app (spec/support/sample_app.rb) at `db` and `storage`.
  def create_sample_app(**options)
    TenantKitSample.create(path: db, storage_root: storage, **options)
  end
end

RSpec.shared_context "cli" do
  include_context "tmpdir"

  let(:exe) { File.join(REPO_ROOT, "exe", "tenant_kit") }

  # The executable run as an operator would: a real process.
  # Returns [stdout, stderr, status].
  def run_cli(*args, env: {})
    Open3.capture3(env, RbConfig.ruby, exe, *args.map(&:to_s))
  end
end
