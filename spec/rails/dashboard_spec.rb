# frozen_string_literal: true

# The progress dashboard (TenantKit::Rails::Dashboard) in the dummy app,
# driven through headless Chromium (Capybara + Selenium, Debian's chromium
# and chromium-driver) against a real server, with the jobs on ActiveJob's
# :async adapter (threads) so that pages follow jobs while they run.
require_relative "rails_helper"
require "capybara/rspec"
require "selenium-webdriver"

# A backup that takes a few seconds: each progress event waits a little, so
# the browser can see the bar between 0 and 100 %.
class DashboardSlowBackupJob < BackupTenantJob
  module Slow
    private

    def tenant_kit_run(*args)
      super { |on_event| yield(->(event) { sleep 0.12; on_event.call(event) }) }
    end
  end
  prepend Slow
end

Capybara.register_driver :tenant_kit_chromium do |app|
  options = Selenium::WebDriver::Chrome::Options.new
  options.binary = ENV.fetch("CHROMIUM", "/usr/bin/chromium")
  %w[--headless --no-sandbox --disable-dev-shm-usage --disable-gpu --window-size=1280,900].each do |arg|
    options.add_argument(arg)
  end
  service = Selenium::WebDriver::Service.chrome(path: ENV.fetch("CHROMEDRIVER", "/usr/bin/chromedriver"))
  Capybara::Selenium::Driver.new(app, browser: :chrome, options: options, service: service)
end
Capybara.server = :webrick
Capybara.app = Rails.application
Capybara.default_max_wait_time = 20

RSpec.describe "TenantKit::Rails::Dashboard", type: :feature, rails: true do
  let(:dashboard) { TenantKit::Rails::Dashboard }
  # TENANT_KIT_SCREENSHOTS=doc/screenshots rspec spec/rails/dashboard_spec.rb
  # refreshes the README's screenshots; otherwise they go to the temp dir.
  let(:screenshots) do
    dir = ENV["TENANT_KIT_SCREENSHOTS"] || File.join(ENV.fetch("TENANT_KIT_DUMMY_TMP"), "screenshots")
    FileUtils.mkdir_p(dir).first
  end

  before do
    Capybara.current_driver = :tenant_kit_chromium
    reset_app!(journal_mode: "wal")
    @adapter = ApplicationJob.queue_adapter
    ApplicationJob.queue_adapter = :async
    dashboard.reset!
    dashboard.parent_controller = "ApplicationController" # as the dummy app's initializer sets it
  end

  # The server's and the async adapter's threads keep pool connections
  # open; specs that switch the journal mode next need them closed.
  after(:all) { ActiveRecord::Base.connection_pool.disconnect! }

  after do
    ApplicationJob.queue_adapter = @adapter
    dashboard.reset!
    dashboard.parent_controller = "ApplicationController"
    Capybara.reset_sessions!
    Capybara.use_default_driver
  end

  def admins_only!
    dashboard.authorize { |controller| controller.current_user&.admin? || controller.current_user&.tenant_admin? }
    dashboard.tenant_scope { |controller| controller.current_user.tenant_admin? ? controller.current_user.tenant_id : nil }
  end

  def sign_in(role, tenant_id: nil)
    visit "/test_sign_in?role=#{role}&tenant_id=#{tenant_id}"
    expect(page).to have_text("signed in as #{role}")
  end

  # [status, Content-Disposition, body length] of a GET from the browser (its session).
  def browser_get(path)
    page.evaluate_async_script(<<~JS, path)
      const done = arguments[arguments.length - 1];
      fetch(arguments[0], { credentials: "same-origin" })
        .then(r => r.arrayBuffer().then(b => done([r.status, r.headers.get("content-disposition"), b.byteLength])));
    JS
  end

  # A POST from the browser with the page's CSRF token (or none).
  def browser_post(path, token: true)
    page.evaluate_async_script(<<~JS, path, token)
      const done = arguments[arguments.length - 1];
      const meta = document.querySelector('meta[name="csrf-token"]');
      const headers = arguments[1] && meta ? { "X-CSRF-Token": meta.content } : {};
      fetch(arguments[0], { method: "POST", credentials: "same-origin", headers: headers })
        .then(r => done(r.status)).catch(e => done(String(e)));
    JS
  end

  def wait_for_state(state, timeout: 60)
    expect(page).to have_css("#tk-job[data-tk-state='#{state}']", wait: timeout)
  end

  def archive_of(tenant)
    BackupTenantJob.perform_now(tenant: tenant)
    Dir[File.join(backups_dir, "tenant_#{tenant.id}_*.tar.gz")].max_by { |f| File.mtime(f) }.then { |f| File.basename(f) }
  end

  it "is closed until authorisation is configured, and closed to users it refuses" do
    tenant = seed_tenant("Acme", seed: 1)
    archive = archive_of(tenant)
    sign_in("admin")
    visit "/admin/tenant_kit"
    expect(page).to have_text("The tenant_kit dashboard is closed: no authorisation is configured")
    expect(browser_get("/admin/tenant_kit/jobs").first).to eq(403)

    admins_only!
    sign_in("user")
    ["/admin/tenant_kit", "/admin/tenant_kit/archives", "/admin/tenant_kit/archives/#{archive}",
     "/admin/tenant_kit/archives/#{archive}/download", "/admin/tenant_kit/jobs/#{BackgroundJob.last.id}/progress"].each do |path|
      visit path
      expect(page).to have_text("You are not allowed to use the tenant_kit dashboard.")
      expect(page).not_to have_text(archive)
      expect(browser_get(path).first).to eq(403)
    end
    sign_in("admin")
    visit "/admin/tenant_kit/archives"
    expect(page).to have_text(archive)
    # CSRF: a POST without the token changes nothing.
    expect { browser_post("/admin/tenant_kit/archives/#{archive}/dry_run", token: false) }.not_to(change { BackgroundJob.count })
  end

  it "backs a tenant up from the page and follows the bar to 100 % while the job runs" do
    admins_only!
    dashboard.backup_job = "DashboardSlowBackupJob"
    tenant = seed_tenant("Acme", seed: 2)
    sign_in("admin")
    visit "/admin/tenant_kit"
    fill_in "tenant_id", with: tenant.id
    click_button "Back up now"
    expect(page).to have_css("#tk-job")
    csp = page.evaluate_async_script(<<~JS)
      const done = arguments[arguments.length - 1];
      fetch(location.href).then(r => done(r.headers.get("content-security-policy")));
    JS
    expect(csp).to include("script-src 'self'").and include("style-src 'self'") # the page works under it
    seen = []
    locks = []
    deadline = Time.now + 60
    until seen.last == 100.0 || Time.now > deadline
      value = page.evaluate_script("(document.querySelector('#tk-job progress') || {}).value")
      seen << value.to_f if value && seen.last != value.to_f
      locks << page.evaluate_script("(document.querySelector('[data-tk-field=lock]') || {}).textContent")
      if seen.size == 3
        page.save_screenshot(File.join(screenshots, "job_running.png"))
        visit current_path # a reload goes on following the job
      end
      sleep 0.1
    end
    expect(seen.last).to eq(100.0)
    expect(seen.any? { |v| v.positive? && v < 100 }).to be(true), "bar values seen: #{seen.inspect}"
    expect(seen).to eq(seen.sort)
    expect(locks).to include("read") # the backup's read transaction, while it dumps
    wait_for_state("done")
    expect(page).to have_css("#tk-counts", text: "tasks")
    expect(page).to have_css("#tk-log li", minimum: 3)
    expect(page).to have_text(/Lock\s*none/)
    page.save_screenshot(File.join(screenshots, "job.png"))

    visit "/admin/tenant_kit"
    row = find("#tk-jobs tr[data-tk-job]", match: :first)
    expect(row).to have_text("backup")
    expect(row).to have_text("done")
    expect(row.find("[data-tk-field=percent]").text).to eq("100.0")
  end

  it "dry-runs an archive (planned counts, conflicts), then restores it after a confirmation" do
    admins_only!
    acme = seed_tenant("Acme", seed: 3)
    other = seed_tenant("Other", seed: 4)
    archive = archive_of(acme)
    before = tenant_view(acme)
    # A row of Acme's archive that another tenant now holds: a conflict.
    tag = acme.tags.first
    Tag.where(id: tag.id).update_all(tenant_id: other.id)
    # Data lost since the backup.
    lost = Comment.where(tenant_id: acme.id).delete_all
    Project.where(id: acme.projects.first.id).update_all(name: "renamed")

    sign_in("admin")
    visit "/admin/tenant_kit/archives/#{archive}"
    expect(page).to have_css("#tk-needs-dry-run"), page.text
    expect(page).not_to have_css("#tk-restore-form")
    # Named tenant, no dry run: refused, nothing started.
    expect { expect(browser_post("/admin/tenant_kit/archives/#{archive}/restore?confirm_tenant=#{acme.id}")).to eq(422) }
      .not_to(change { BackgroundJob.count })

    click_button "Dry run"
    wait_for_state("done")
    expect(page).to have_css("#tk-counts th", text: "insert")
    insert_column = all("#tk-counts th").map(&:text).index("insert")
    expect(find("#tk-counts tr", text: "comments").all("td")[insert_column].text).to eq(lost.to_s)
    conflict = find("#tk-conflicts tbody tr")
    expect(conflict).to have_text("tags")
    expect(conflict).to have_text(tag.id.to_s)
    expect(conflict).to have_text("belongs to another tenant")
    page.save_screenshot(File.join(screenshots, "dry_run.png"))

    Tag.where(id: tag.id).update_all(tenant_id: acme.id)
    visit "/admin/tenant_kit/archives/#{archive}"
    click_button "Dry run"
    wait_for_state("done")
    expect(page).to have_css("#tk-no-conflicts")

    visit "/admin/tenant_kit/archives/#{archive}"
    page.save_screenshot(File.join(screenshots, "archive.png"))
    fill_in "confirm_tenant", with: other.id
    click_button "Restore tenant #{acme.id}"
    expect(page).to have_text("Type the tenant id #{acme.id} to confirm the restore.")
    expect(Comment.where(tenant_id: acme.id).count).to eq(0)

    fill_in "confirm_tenant", with: acme.id
    click_button "Restore tenant #{acme.id}"
    wait_for_state("done")
    restored_column = all("#tk-counts th").map(&:text).index("restored")
    expect(restored_column).not_to be_nil, all("#tk-counts th").map(&:text).inspect
    expect(find("#tk-counts tr", text: "comments").all("td")[restored_column].text).to eq(lost.to_s)
    expect(tenant_view(acme)).to eq(before)
    page.save_screenshot(File.join(screenshots, "restore.png"))

    visit "/admin/tenant_kit"
    rows = all("#tk-jobs tr[data-tk-job]").map { |tr| tr.all("td").map(&:text).values_at(1, 3) }
    # Job history is not tenant data: the backup's own row kept its end
    # state through the restore, and a finished job is never shown stale.
    expect(rows).to eq([["restore", "done"], ["dry run", "done"], ["dry run", "done"], ["backup", "done"]])
    dashboard.stale_after = 0.5
    sleep 0.6
    visit "/admin/tenant_kit"
    expect(all("#tk-jobs tr[data-tk-job]").last.all("td")[3].text).to eq("done")
    dashboard.stale_after = 900
    page.save_screenshot(File.join(screenshots, "index.png"))
  end

  it "restores with purge: rows made since the backup go, the restore's own page stays" do
    admins_only!
    acme = seed_tenant("Acme", seed: 8)
    archive = archive_of(acme)
    before = tenant_view(acme)
    Comment.create!(tenant: acme, commentable: acme.projects.first, body: "after the backup")

    sign_in("admin")
    visit "/admin/tenant_kit/archives/#{archive}"
    click_button "Dry run"
    wait_for_state("done")
    # A dry run without purge vouches for a restore without purge only.
    status = browser_post("/admin/tenant_kit/archives/#{archive}/restore?purge=1&confirm_tenant=#{acme.id}")
    expect(status).to eq(422)

    visit "/admin/tenant_kit/archives/#{archive}"
    check "with purge"
    click_button "Dry run"
    wait_for_state("done")
    purge_column = all("#tk-counts th").map(&:text).index("purge")
    expect(find("#tk-counts tr", text: "comments").all("td")[purge_column].text).to eq("1")
    visit "/admin/tenant_kit/archives/#{archive}"
    expect(page).to have_text("with purge")
    fill_in "confirm_tenant", with: acme.id
    click_button "Restore tenant #{acme.id}"
    wait_for_state("done")
    expect(page).to have_css("h1", text: "Restore of tenant #{acme.id}")
    expect(tenant_view(acme)).to eq(before)
    expect(Comment.where(body: "after the backup")).to be_empty
  end

  it "keeps a tenant's own admin to that tenant, also when the URL is edited" do
    admins_only!
    acme = seed_tenant("Acme", seed: 5)
    other = seed_tenant("Other", seed: 6)
    acme_archive = archive_of(acme)
    other_archive = archive_of(other)
    other_job = BackgroundJob.where(tenant_id: other.id).last

    sign_in("tenant_admin", tenant_id: acme.id)
    visit "/admin/tenant_kit"
    expect(page).to have_css("#tk-jobs tr[data-tk-job]", count: 1)
    visit "/admin/tenant_kit/archives"
    expect(page).to have_text(acme_archive)
    expect(page).not_to have_text(other_archive)
    visit "/admin/tenant_kit/archives?tenant=#{other.id}"
    expect(page).not_to have_text(other_archive)

    status, disposition, bytes = browser_get("/admin/tenant_kit/archives/#{acme_archive}/download")
    expect([status, bytes]).to eq([200, File.size(File.join(backups_dir, acme_archive))])
    expect(disposition).to start_with("attachment").and include(acme_archive)

    ["/admin/tenant_kit/archives/#{other_archive}", "/admin/tenant_kit/archives/#{other_archive}/download",
     "/admin/tenant_kit/jobs/#{other_job.id}", "/admin/tenant_kit/jobs/#{other_job.id}/progress",
     "/admin/tenant_kit/archives/..%2F#{File.basename(database_path)}/download"].each do |path|
      expect(browser_get(path).first).to eq(404), path
      visit path
      expect(page.text).to eq("Not found")
    end
    # A link in the output directory named like an archive is not one.
    link = "tenant_#{acme.id}_20991231235959.tar.gz"
    File.symlink(File.join(backups_dir, acme_archive), File.join(backups_dir, link))
    expect(browser_get("/admin/tenant_kit/archives/#{link}/download").first).to eq(404)

    visit "/admin/tenant_kit"
    expect(browser_post("/admin/tenant_kit/archives/#{other_archive}/dry_run")).to eq(404)
    expect(browser_post("/admin/tenant_kit/backups?tenant_id=#{other.id}")).to eq(404)
    expect(BackgroundJob.where(tenant_id: other.id).count).to eq(1)
  end

  it "verifies archives and shows a failed job's error and its class" do
    admins_only!
    acme = seed_tenant("Acme", seed: 7)
    archive = archive_of(acme)
    bytes = File.binread(File.join(backups_dir, archive))
    broken = "tenant_#{acme.id}_20991231235959.tar.gz"
    File.binwrite(File.join(backups_dir, broken), bytes[0, bytes.bytesize * 2 / 3])

    sign_in("admin")
    visit "/admin/tenant_kit/archives/#{archive}"
    click_button "Verify"
    expect(find("#tk-verify")).to have_text("Verified: the archive is intact")

    visit "/admin/tenant_kit/archives/#{broken}"
    click_button "Verify"
    expect(find("#tk-verify")).not_to have_text("Verified")
    expect(find("#tk-verify")).to have_text(/TenantKit::\w+Error|failed/)

    click_button "Dry run"
    wait_for_state("failed")
    expect(find("#tk-error")).to have_text(/\ATenantKit::\w+Error: .+/)
    expect(page).to have_css("#tk-log li", text: "failed")
    visit "/admin/tenant_kit?state=failed"
    expect(page).to have_css("#tk-jobs tr[data-tk-job]", count: 1)
    expect(find("#tk-jobs tr[data-tk-job]")).to have_text("dry run")
    visit "/admin/tenant_kit?state=done"
    expect(find("#tk-jobs tr[data-tk-job]")).to have_text("backup")

    dashboard.per_page = 1 # newest first, a page at a time
    visit "/admin/tenant_kit"
    expect(find("#tk-jobs tr[data-tk-job]")).to have_text("dry run")
    click_link "Older"
    expect(find("#tk-jobs tr[data-tk-job]")).to have_text("backup")
    expect(page).not_to have_link("Older")
  end
end

RSpec.describe TenantKit::Rails::Dashboard::JobView, rails: true do
  def view(state:, progress:)
    described_class.new(BackgroundJob.new(tenant_id: 1, job_type: "restore", state: state, job_progress: progress.to_json),
                        tenant_column: "tenant_id")
  end

  it "reads the app's state values and the gem's alike" do
    now = Time.now.utc.iso8601(3)
    expect(view(state: "completed", progress: { "state" => "running", "updated_at" => now }).state).to eq("done")
    expect(view(state: "planned", progress: { "updated_at" => now }).state).to eq("queued")
    expect(view(state: "running", progress: { "state" => "failed" }).state).to eq("failed")
    expect(view(state: nil, progress: { "state" => "done" }).percent).to eq(100.0)
  end

  it "renders no job arguments: only the whitelisted fields" do
    job = view(state: "running", progress: { "operation" => "restore", "updated_at" => Time.now.utc.iso8601(3),
                                             "arguments" => { "archive_path" => "/secret/path" },
                                             "dashboard" => { "archive" => "tenant_1_1.tar.gz", "dry_run" => true },
                                             "result" => { "path" => "/secret/path/tenant_1_1.tar.gz", "rows" => 3 } })
    json = job.as_json.to_json
    expect(json).not_to include("/secret")
    expect(job.as_json).to include(operation: "restore", label: "dry run", archive: "tenant_1_1.tar.gz", result: { "rows" => 3 })
  end
end
