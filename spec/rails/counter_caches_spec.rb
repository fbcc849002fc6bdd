# frozen_string_literal: true

require_relative "rails_helper"

# Counter caches after RestoreTenantJob: the tenant's boards and the shared
# labels its cards point at are recounted; rows the restore did not touch
# are left as they are.
RSpec.describe "counter caches after a restore" do
  before { reset_app!(journal_mode: "delete") }

  let!(:acme) { Tenant.create!(name: "Acme", subdomain: "acme") }
  let!(:globex) { Tenant.create!(name: "Globex", subdomain: "globex") }
  let!(:shared) { Label.create!(name: "urgent") }
  let!(:globex_only) { Label.create!(name: "later") }
  let!(:board) { Board.create!(tenant: acme, name: "Acme board") }
  let!(:globex_board) { Board.create!(tenant: globex, name: "Globex board") }

  def backup(tenant)
    job = BackgroundJob.create!(tenant: tenant, job_type: "backup", state: "queued")
    BackupTenantJob.perform_now(tenant: tenant, background_job: job)
    expect(job.reload.state).to eq("done"), job.progress.inspect
    job.progress.fetch("result").fetch("path")
  end

  def restore(tenant, archive, purge:)
    job = BackgroundJob.create!(tenant: tenant, job_type: "restore", state: "queued")
    RestoreTenantJob.perform_now(tenant: tenant, archive_path: archive, purge: purge, background_job: job)
    expect(job.reload.state).to eq("done"), job.progress.inspect
    job.progress
  end

  def counted(record)
    record.reload.cards_count
  end

  before do
    3.times { |i| Card.create!(tenant: acme, board: board, label: shared, title: "acme #{i}") }
    2.times { |i| Card.create!(tenant: globex, board: globex_board, label: shared, title: "globex #{i}") }
    Card.create!(tenant: globex, board: globex_board, label: globex_only, title: "globex later")
    expect([counted(board), counted(shared), counted(globex_board)]).to eq([3, 5, 3])
  end

  it "recounts the tenant's parents and the shared ones after a restore that changed children" do
    archive = backup(acme)
    board.cards.first(2).each(&:destroy!) # the app's own decrements: board 1, label 3
    Card.create!(tenant: acme, board: board, label: shared, title: "acme new")
    expect([counted(board), counted(shared)]).to eq([2, 4])

    progress = restore(acme, archive, purge: false)

    # The board row came back with the archived count (3), the shared label
    # kept the app's (4): both recounted from the rows now present.
    expect(Card.where(board_id: board.id).count).to eq(4)
    expect(counted(board)).to eq(4)
    expect(counted(shared)).to eq(Card.where(label_id: shared.id).count)
    expect(counted(shared)).to eq(6)
    step = progress["log"].find { |e| e["step"] == "counter_caches" }
    expect(step.fetch("counters")).to include("boards.cards_count" => 1, "labels.cards_count" => 1)
  end

  it "recounts after a purge restore, and leaves the rows it did not affect alone" do
    archive = backup(acme)
    Card.where(tenant_id: acme.id).first.destroy! # label 4
    Card.create!(tenant: acme, board: board, label: globex_only, title: "moved") # label later: 2
    Board.where(id: globex_board.id).update_all(cards_count: 99) # a stale count the restore has no business fixing
    expect(counted(shared)).to eq(4)

    restore(acme, archive, purge: true)

    expect(Card.where(tenant_id: acme.id).count).to eq(3)
    expect(counted(board)).to eq(3)
    expect(counted(shared)).to eq(5)
    # The purge took the acme card away from "later": its parent is one the
    # tenant's children pointed at before the restore.
    expect(counted(globex_only)).to eq(1)
    expect(counted(globex_board)).to eq(99)
  end
end
