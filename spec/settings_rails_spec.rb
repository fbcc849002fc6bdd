# frozen_string_literal: true

# TenantKit::Rails::SettingsExtension on ActiveRecord 6.1 models over a real
# SQLite file: the app's call shapes Setting.time_material_settings(tenant),
# Setting.team_settings(team), Setting.user_settings(user), klass_for with
# STI, default rows created on read exactly once, transactions respected.

spec_helper = File.expand_path("spec_helper.rb", __dir__)
if File.exist?(spec_helper)
  require spec_helper
else
  $LOAD_PATH.unshift File.expand_path("../lib", __dir__)
  require "tenant_kit"
end
require "active_record"
require "sqlite3"
require "tmpdir"
require "fileutils"
require "tenant_kit/rails/settings_extension"

RSpec.describe TenantKit::Rails::SettingsExtension do
  schema = File.read(File.expand_path("../tests/fixtures/app_schema.sql", __dir__))
  defaults = {
    "TimeMaterial" => { "rounding" => 15, "billable" => true },
    "Team" => { "color" => "blue", "members_max" => 10 },
    "User" => { "theme" => "light", "per_page" => 25 },
  }

  before do
    @dir = Dir.mktmpdir("tenant_kit_settings_rails")
    path = File.join(@dir, "app.sqlite3")
    db = SQLite3::Database.new(path)
    db.execute_batch(schema)
    db.execute("ALTER TABLE users ADD COLUMN type varchar") # for STI
    db.close

    # Own abstract base: never touch ActiveRecord::Base's connection, which
    # other specs may use.
    @base = Class.new(ActiveRecord::Base) { self.abstract_class = true }
    stub_const("SettingsSpecRecord", @base)
    @base.establish_connection(adapter: "sqlite3", database: path)
    stub_const("Tenant", Class.new(@base) { self.table_name = "tenants" })
    stub_const("User", Class.new(@base) { self.table_name = "users" })
    stub_const("Admin", Class.new(User))
    stub_const("Contractor", Class.new(User))
    stub_const("Team", Class.new(@base) { self.table_name = "teams" })
    stub_const("Setting", Class.new(@base) do
      self.table_name = "settings"
      extend TenantKit::Rails::SettingsExtension
    end)
    Setting.settings_defaults(defaults)
  end

  after do
    Setting.tenant_kit_settings.close
    @base.remove_connection
    FileUtils.remove_entry(@dir)
  end

  let(:tenant) { Tenant.create!(name: "Acme") }
  let(:other_tenant) { Tenant.create!(name: "Other") }
  let(:user) { User.create!(tenant_id: tenant.id, email: "u@acme.test") }
  let(:team) { Team.create!(tenant_id: tenant.id, name: "Core") }

  def add(tenant_id, type, id, key, value)
    Setting.create!(tenant_id: tenant_id, target_type: type, target_id: id&.to_s, key: key, value: value.to_json)
  end

  def duplicates
    Setting.group(:tenant_id, :target_type, :target_id, :key).having("COUNT(*) > 1").count.size
  end

  it "keeps the app's call shapes" do
    Setting.settings_options(build_on_read: true) # the old app's habit, now opt-in
    add(tenant.id, nil, nil, "theme", "tenant-wide")
    add(tenant.id, "TimeMaterial", nil, "rounding", 30)
    add(tenant.id, "Team", team.id, "color", "red")
    add(tenant.id, "User", user.id, "per_page", 100)

    time_material = Setting.time_material_settings(tenant)
    expect(time_material).to eq("rounding" => 30, "billable" => true, "theme" => "tenant-wide")
    expect(time_material[:rounding]).to eq(30) # indifferent access
    expect(Setting.team_settings(team)).to eq("color" => "red", "members_max" => 10, "theme" => "tenant-wide")
    expect(Setting.user_settings(user)).to eq("theme" => "tenant-wide", "per_page" => 100)
    expect(Setting.explain_settings_for(user)).to eq(
      "theme" => { value: "tenant-wide", source: :instance }, # the row built on read copied the tenant's value
      "per_page" => { value: 100, source: :instance },
    )
  end

  it "creates the default rows of each level once, on read, with the values in effect" do
    Setting.settings_options(build_on_read: true) # the old app's habit, now opt-in
    add(tenant.id, nil, nil, "theme", "dark")
    3.times do
      Setting.time_material_settings(tenant)
      Setting.team_settings(team)
      Setting.user_settings(user)
    end
    rows = ->(type, id) { Setting.where(tenant_id: tenant.id, target_type: type, target_id: id&.to_s).pluck(:key, :value).to_h }
    expect(rows.call("TimeMaterial", nil)).to eq("rounding" => "15", "billable" => "true")
    expect(rows.call("Team", team.id)).to eq("color" => '"blue"', "members_max" => "10")
    expect(rows.call("User", user.id)).to eq("theme" => '"dark"', "per_page" => "25")
    expect(duplicates).to eq(0)
    expect(Setting.build_settings_for(user)).to eq(0)
  end

  it "does not build rows inside an open transaction and still resolves" do
    Setting.settings_options(build_on_read: true) # the old app's habit, now opt-in
    Setting.transaction do
      expect(Setting.user_settings(user)).to eq("theme" => "light", "per_page" => 25)
    end
    expect(Setting.where(target_type: "User").count).to eq(0)
    Setting.user_settings(user)
    expect(Setting.where(target_type: "User").count).to eq(2)
  end

  it "maps names, classes, records and STI subclasses with klass_for" do
    admin = Admin.create!(tenant_id: tenant.id, email: "a@acme.test")
    Setting.settings_class_map("Contractor" => "Team")
    contractor = Contractor.create!(tenant_id: tenant.id, email: "c@acme.test")

    expect(Setting.klass_for(:time_material)).to eq("TimeMaterial")
    expect(Setting.klass_for("time_material")).to eq("TimeMaterial")
    expect(Setting.klass_for("TimeMaterial")).to eq("TimeMaterial")
    expect(Setting.klass_for(user)).to eq("User")
    expect(Setting.klass_for(admin)).to eq("User") # STI: the base class
    expect(Setting.klass_for(Admin)).to eq("User")
    expect(Setting.klass_for(contractor)).to eq("Team") # mapped by the app
    expect { Setting.klass_for(3) }.to raise_error(ArgumentError)

    add(tenant.id, "User", admin.id, "theme", "admin-dark")
    expect(Setting.user_settings(admin)["theme"]).to eq("admin-dark")
  end

  it "resolves many records in one pass and keeps tenants apart" do
    users = Array.new(5) { |i| User.create!(tenant_id: tenant.id, email: "u#{i}@acme.test") }
    stranger = User.create!(tenant_id: other_tenant.id, email: "x@other.test")
    add(other_tenant.id, nil, nil, "theme", "other-tenant")
    add(other_tenant.id, "User", users.first.id, "per_page", 999) # same id, other tenant
    add(tenant.id, "User", users.last.id, "theme", "mine")

    many = Setting.settings_for_many(users + [stranger])
    expect(many.keys).to eq(users + [stranger])
    users.each { |u| expect(many[u]).to eq(Setting.user_settings(u)) }
    expect(many[users.first]).to eq("theme" => "light", "per_page" => 25)
    expect(many[users.last]["theme"]).to eq("mine")
    expect(many[stranger]).to eq("theme" => "other-tenant", "per_page" => 25)
  end

  it "explains bad arguments" do
    expect { Setting.settings_for(:time_material) }.to raise_error(ArgumentError, /tenant: is required/)
    expect { Setting.user_settings(User.new(tenant_id: tenant.id, email: "new@acme.test")) }
      .to raise_error(ArgumentError, /not saved/)
    expect { Setting.settings_options(colour: 1) }.to raise_error(ArgumentError, /unknown settings option/)
    add(tenant.id, "User", user.id, "per_page", "many")
    expect { Setting.user_settings(user) }.to raise_error(TenantKit::Settings::InvalidValueError, /per_page/)
  end

  it "uses the model's DEFAULTS constant when no defaults were given" do
    stub_const("Legacy", Class.new(SettingsSpecRecord) do
      self.table_name = "settings"
      extend TenantKit::Rails::SettingsExtension
    end)
    stub_const("Legacy::DEFAULTS", { "User" => { "locale" => "en" } })
    expect(Legacy.user_settings(user)).to eq("locale" => "en")
  end
end
