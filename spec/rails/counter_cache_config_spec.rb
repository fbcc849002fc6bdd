# frozen_string_literal: true

require_relative "rails_helper"

# Counter caches after RestoreTenantJob, the cases the first version left
# out: a polymorphic counter cache (stickers count into the tenant's boards
# and the shared labels, per stickable_type), and a restore whose scope
# comes from `restore_options: { config: }` with its own tenant column.
RSpec.describe "counter caches: polymorphic ones and the config's tenant column" do
  before { reset_app!(journal_mode: "delete") }

  let!(:acme) { Tenant.create!(name: "Acme", subdomain: "acme") }
  let!(:globex) { Tenant.create!(name: "Globex", subdomain: "globex") }
  let!(:label) { Label.create!(name: "urgent") }
  let!(:board) { Board.create!(tenant: acme, name: "Acme board") }
  let!(:globex_board) { Board.create!(tenant: globex, name: "Globex board") }

  def backup(tenant)
    job = BackgroundJob.create!(tenant: tenant, job_type: "backup", state: "queued")
    BackupTenantJob.perform_now(tenant: tenant, background_job: job)
    expect(job.reload.state).to eq("done"), job.progress.inspect
    job.progress.fetch("result").fetch("path")
  end

  def restore(job_class, tenant, archive, purge:)
    job = BackgroundJob.create!(tenant: tenant, job_type: "restore", state: "queued")
    job_class.perform_now(tenant: tenant, archive_path: archive, purge: purge, background_job: job)
    expect(job.reload.state).to eq("done"), job.progress.inspect
    job.progress.fetch("log").find { |e| e["step"] == "counter_caches" }
  end

  def counts
    [board, label, globex_board].map { |r| r.reload.stickers_count }
  end

  context "with a polymorphic counter cache" do
    before do
      2.times { Sticker.create!(tenant: acme, stickable: board) }
      Sticker.create!(tenant: acme, stickable: label)
      Sticker.create!(tenant: globex, stickable: label)
      Sticker.create!(tenant: globex, stickable: globex_board)
      expect(counts).to eq([2, 2, 1])
    end

    it "recounts each type's parents, the tenant's board and the shared label" do
      archive = backup(acme)
      Sticker.where(tenant_id: acme.id).each(&:destroy!) # the app's decrements: board 0, label 1
      2.times { Sticker.create!(tenant: acme, stickable: label) } # label 3
      Board.where(id: globex_board.id).update_all(stickers_count: 99) # not the restore's business
      expect(counts).to eq([0, 3, 99])

      step = restore(RestoreTenantJob, acme, archive, purge: true)

      # The archive's three stickers are back, the new ones purged: board 2
      # (the archived board row said 2 already, but it is recounted), the
      # shared label 1 of acme's + 1 of globex's.
      expect(Sticker.where(tenant_id: acme.id).count).to eq(3)
      expect(counts).to eq([2, 2, 99])
      expect(step.fetch("counters")).to include("boards.stickers_count" => 1, "labels.stickers_count" => 1)
    end

    it "counts only the children of the parent's type, not every child with that id" do
      archive = backup(acme)
      # A board and a label with the same id: a count ignoring the type
      # would mix them.
      other_label = Label.create!(id: board.id + 100, name: "same id")
      Board.create!(id: other_label.id, tenant: acme, name: "same id board")
      Sticker.create!(tenant: acme, stickable: other_label)
      Label.where(id: label.id).update_all(stickers_count: 0)

      restore(RestoreTenantJob, acme, archive, purge: true)

      expect(counts).to eq([2, 2, 1])
      # The purge took the sticker away from the label it pointed at before.
      expect(other_label.reload.stickers_count).to eq(0)
    end
  end

  context "with the tenant column from restore_options' config" do
    # The job's own tenant_column setting names a column no table has; the
    # restore runs with the config's, and so must the recount.
    let(:job_class) do
      config = TenantKit::Rails.config(tenant_column: "tenant_id")
      stub_const("ConfigRestoreTenantJob", Class.new(RestoreTenantJob) do
        tenant_kit tenant_column: "organization_id", restore_options: { config: config }
      end)
    end

    before do
      3.times { |i| Card.create!(tenant: acme, board: board, label: label, title: "acme #{i}") }
      Card.create!(tenant: globex, board: globex_board, label: label, title: "globex")
    end

    it "recounts the tenant's parents only, as the config's tenant column says" do
      archive = backup(acme)
      Card.where(tenant_id: acme.id).first.destroy! # board 2, label 3
      Board.where(id: globex_board.id).update_all(cards_count: 99) # a stale count of another tenant

      step = restore(job_class, acme, archive, purge: true)

      expect([board.reload.cards_count, label.reload.cards_count]).to eq([3, 4])
      expect(globex_board.reload.cards_count).to eq(99)
      expect(step.fetch("counters")).to include("boards.cards_count" => 1, "labels.cards_count" => 1)
    end
  end
end
