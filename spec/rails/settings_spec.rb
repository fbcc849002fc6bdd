# frozen_string_literal: true

require_relative "rails_helper"

# The app's Setting call shapes (issue 6) inside the real Rails app: the
# Setting model extends TenantKit::Rails::SettingsExtension, and settings rows
# travel with the tenant's backup like any other tenant table.
RSpec.describe "Setting in the Rails app" do
  include DummyAppHelpers

  before { reset_app! }

  it "resolves the cascade through the app's call shapes, once per level" do
    acme = Tenant.create!(name: "Acme", subdomain: "acme")
    other = Tenant.create!(name: "Other", subdomain: "other")
    alice, bob = %w[alice bob].map { |n| User.create!(tenant: acme, email: "#{n}@acme.test", name: n) }
    stranger = User.create!(tenant: other, email: "x@other.test", name: "x")

    Setting.create!(tenant: acme, target_type: nil, target_id: nil, key: "theme", value: '"sepia"')
    Setting.create!(tenant: acme, target_type: "User", target_id: nil, key: "per_page", value: "50")
    Setting.create!(tenant: acme, target_type: "User", target_id: bob.id.to_s, key: "theme", value: '"dark"')
    Setting.create!(tenant: other, target_type: nil, target_id: nil, key: "theme", value: '"neon"')

    expect(Setting.user_settings(alice)).to eq("theme" => "sepia", "per_page" => 50)
    expect(Setting.user_settings(bob)[:theme]).to eq("dark")
    expect(Setting.user_settings(stranger)).to eq("theme" => "neon", "per_page" => 25)
    # Tenant-level rows apply to every class (documented in README "Settings").
    expect(Setting.time_material_settings(acme)).to eq("rounding" => 15, "billable" => true, "theme" => "sepia")
    expect(Setting.explain_settings_for(bob)["theme"]).to include(value: "dark", source: :instance)
    many = Setting.settings_for_many([alice, bob])
    expect(many.values.map { |s| s["theme"] }).to eq(%w[sepia dark])

    # Reading created the default rows of each level once; reading again adds none.
    count = Setting.count
    Setting.user_settings(alice)
    Setting.time_material_settings(acme)
    expect(Setting.count).to eq(count)
    duplicates = Setting.group(:tenant_id, :target_type, :target_id, :key).having("count(*) > 1").count
    expect(duplicates).to be_empty
  end

  it "backs up and restores settings rows with the tenant" do
    acme = Tenant.create!(name: "Acme", subdomain: "acme")
    user = User.create!(tenant: acme, email: "a@acme.test", name: "a")
    Setting.create!(tenant: acme, target_type: "User", target_id: user.id.to_s, key: "theme", value: '"dark"')
    rows = Setting.where(tenant: acme).order(:id).map { |s| s.attributes.except("created_at", "updated_at") }

    result = TenantKit.backup(database: database_path, tenant_id: acme.id, output_dir: backups_dir)
    expect(result.tables["settings"]).to eq(rows.size)
    Setting.where(tenant: acme).delete_all
    TenantKit.restore(database: database_path, archive: result.path, tenant_id: acme.id)
    expect(Setting.where(tenant: acme).order(:id).map { |s| s.attributes.except("created_at", "updated_at") }).to eq(rows)
    expect(Setting.user_settings(user)[:theme]).to eq("dark")
  end
end
