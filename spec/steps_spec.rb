# frozen_string_literal: true

require_relative "spec_helper"
require_relative "support/tmpdir"

# The progress vocabulary comes from the extension (defined once in the
# core): the steps real work emits are the ones TenantKit::STEPS names.
RSpec.describe "TenantKit::STEPS" do
  include_context "tmpdir"

  it "names every step a backup and a restore emit, with their phases in order" do
    create_sample_app(tenants: 2, rows_per_tenant: 50, blob_bytes: 1024, seed: 5)
    events = []
    archive = TenantKit.backup(database: db, tenant_id: 1, output_dir: @dir, storage_root: storage) { |e| events << e }.path
    TenantKit.restore(database: db, archive: archive, tenant_id: 1, storage_root: storage, purge: true) { |e| events << e }
    steps = events.map { |e| e[:step] }.uniq
    expect(steps - TenantKit::STEPS).to eq([])
    expect(steps).to include(:lock, :dump_progress, :restore_progress)
    expect(events.select { |e| e[:step] == :lock }.map { |e| e[:state] }.uniq - TenantKit::LOCK_STATES).to eq([])
    expect(TenantKit::TABLE_STEPS).to eq(%i[dump_progress purge_progress restore_progress])
    expect(TenantKit::PHASES[:backup].keys.first(3)).to eq(%i[start scan_tables dump_progress])
    expect(TenantKit::PHASES[:restore][:restore_progress]).to eq(percent: [68, 95], lock: "write")
    expect(TenantKit::PHASES.values.flat_map(&:keys) - TenantKit::STEPS).to eq([])
    expect([TenantKit::STEPS, TenantKit::PHASES, TenantKit::PHASES[:backup]]).to all(be_frozen)
  end
end
