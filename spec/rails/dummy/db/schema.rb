# frozen_string_literal: true

# The dummy app's schema as `db:schema:load` would create it. No foreign
# keys are declared except users.tenant_id (like many Rails apps):
# tenant_kit finds the rest from conventions and the model reflections.
# background_jobs comes from the tenant_kit:job_progress migration.
ActiveRecord::Schema.define(version: 2026_11_01_000000) do
  create_table :tenants do |t|
    t.string :name, null: false
    t.string :subdomain
    t.timestamps
  end

  # The issue-21 app's job table (AppBackgroundJob): job_klass, an
  # integer state enum, no foreign key.
  create_table :app_background_jobs do |t|
    t.integer :tenant_id, index: true
    t.string :job_klass
    t.integer :state, null: false, default: 0
    t.text :job_progress
    t.timestamps
  end

  create_table :users do |t|
    t.references :tenant, null: false, index: true, foreign_key: true
    t.string :email, null: false
    t.string :name
    t.timestamps
  end

  create_table :projects do |t|
    t.integer :tenant_id, null: false, index: true
    t.string :name, null: false
    t.decimal :budget, precision: 12, scale: 2
    t.boolean :archived, default: false, null: false
    t.timestamps
  end

  create_table :project_documents do |t|
    t.integer :tenant_id, null: false, index: true
    t.integer :project_id, null: false, index: true
    t.string :title
    t.timestamps
  end

  create_table :tasks do |t|
    t.integer :tenant_id, null: false, index: true
    t.integer :project_id, null: false, index: true
    t.integer :assignee_id
    t.integer :parent_id
    t.string :type
    t.string :title, null: false
    t.text :notes
    t.float :estimate
    t.date :due_on
    t.timestamps
  end

  create_table :checklist_items do |t|
    t.integer :todo_id, null: false, index: true
    t.string :body
    t.boolean :done, default: false, null: false
  end

  create_table :tags do |t|
    t.integer :tenant_id, null: false, index: true
    t.string :name, null: false
    t.timestamps
  end

  create_table :tags_tasks, id: false do |t|
    t.integer :tag_id, null: false
    t.integer :task_id, null: false
    t.index %i[tag_id task_id], unique: true
  end

  create_table :comments do |t|
    t.integer :tenant_id, null: false, index: true
    t.string :commentable_type, null: false
    t.integer :commentable_id, null: false
    t.integer :user_id
    t.text :body
    t.timestamps
  end

  # Counter caches (issue 18 item 7): boards are the tenant's, labels are
  # shared between tenants (no tenant column), cards count into both.
  create_table :boards do |t|
    t.integer :tenant_id, null: false, index: true
    t.string :name, null: false
    t.integer :cards_count, null: false, default: 0
    t.integer :stickers_count, null: false, default: 0
  end

  create_table :labels do |t|
    t.string :name, null: false
    t.integer :cards_count, null: false, default: 0
    t.integer :stickers_count, null: false, default: 0
  end

  # A polymorphic counter cache: stickers count into boards (the tenant's)
  # and labels (shared) alike, per stickable_type.
  create_table :stickers do |t|
    t.integer :tenant_id, null: false, index: true
    t.string :stickable_type, null: false
    t.integer :stickable_id, null: false
  end

  create_table :cards do |t|
    t.integer :tenant_id, null: false, index: true
    t.integer :board_id, null: false, index: true
    t.integer :label_id, index: true
    t.string :title
  end

  create_table :settings do |t|
    t.integer :tenant_id, null: false, index: true
    t.string :target_type
    t.string :target_id
    t.string :key, null: false
    t.text :value
    t.timestamps
  end

  create_table :active_storage_blobs do |t|
    t.string :key, null: false
    t.string :filename, null: false
    t.string :content_type
    t.text :metadata
    t.string :service_name, null: false
    t.bigint :byte_size, null: false
    t.string :checksum, null: false
    t.datetime :created_at, null: false
    t.index [:key], unique: true
  end

  create_table :active_storage_attachments do |t|
    t.string :name, null: false
    t.references :record, null: false, polymorphic: true, index: false
    t.references :blob, null: false
    t.datetime :created_at, null: false
    t.index %i[record_type record_id name blob_id], name: "index_active_storage_attachments_uniqueness", unique: true
    t.foreign_key :active_storage_blobs, column: :blob_id
  end

  create_table :active_storage_variant_records do |t|
    t.belongs_to :blob, null: false, index: false
    t.string :variation_digest, null: false
    t.index %i[blob_id variation_digest], name: "index_active_storage_variant_records_uniqueness", unique: true
    t.foreign_key :active_storage_blobs, column: :blob_id
  end
end
