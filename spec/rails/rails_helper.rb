# frozen_string_literal: true

# Boots the dummy Rails 6.1 app (spec/rails/dummy) from the system's gems,
# in a temporary directory: SQLite database, ActiveStorage Disk root and
# backup directory. The schema is db/schema.rb plus the migration the
# tenant_kit:job_progress generator writes (background_jobs).
require_relative "../spec_helper"
require "tmpdir"
require "fileutils"
require "digest"
require "zlib"
require "rubygems/package"

unless defined?(TenantKitDummy::Application)
  dir = Dir.mktmpdir("tenant_kit_rails")
  at_exit { FileUtils.remove_entry(dir) if File.directory?(dir) }
  ENV["TENANT_KIT_DUMMY_TMP"] = dir
  ENV["TENANT_KIT_DUMMY_DB"] = File.join(dir, "app.sqlite3")
  ENV["TENANT_KIT_DUMMY_STORAGE"] = File.join(dir, "storage")
  ENV["TENANT_KIT_DUMMY_BACKUPS"] = File.join(dir, "backups")
  ENV["RAILS_ENV"] = "test"
  FileUtils.mkdir_p([ENV["TENANT_KIT_DUMMY_STORAGE"], ENV["TENANT_KIT_DUMMY_BACKUPS"]])

  require_relative "dummy/config/environment"
  require "rails/generators"
  require "generators/tenant_kit/job_progress/job_progress_generator"

  ActiveRecord::Schema.verbose = false
  ActiveRecord::Migration.verbose = false
  generated = File.join(dir, "generated")
  TenantKit::Generators::JobProgressGenerator.start(["--quiet"], destination_root: generated)
  DUMMY_JOB_PROGRESS_MIGRATION = Dir[File.join(generated, "db/migrate/*_add_tenant_kit_job_progress.rb")].fetch(0)
end

# db/schema.rb, then the generated job_progress migration (background_jobs),
# into the database ActiveRecord::Base is connected to.
def load_dummy_schema!
  load File.expand_path("dummy/db/schema.rb", __dir__)
  Object.send(:remove_const, :AddTenantKitJobProgress) if defined?(AddTenantKitJobProgress)
  load DUMMY_JOB_PROGRESS_MIGRATION
  AddTenantKitJobProgress.migrate(:up)
  ActiveRecord::Base.connection.schema_cache.clear!
  ActiveRecord::Base.descendants.each(&:reset_column_information)
end
load_dummy_schema! unless ActiveRecord::Base.connection.data_source_exists?("background_jobs")

module DummyAppHelpers
  APP_TABLES = %w[tenants users projects project_documents tasks checklist_items tags tags_tasks comments
                  settings background_jobs app_background_jobs active_storage_blobs active_storage_attachments
                  active_storage_variant_records boards labels cards stickers].freeze

  def storage_root
    ENV.fetch("TENANT_KIT_DUMMY_STORAGE")
  end

  def backups_dir
    ENV.fetch("TENANT_KIT_DUMMY_BACKUPS")
  end

  def database_path
    ENV.fetch("TENANT_KIT_DUMMY_DB")
  end

  def connection
    ActiveRecord::Base.connection
  end

  # Empty every table and directory, switch the journal mode.
  def reset_app!(journal_mode: "delete")
    connection.clear_query_cache
    APP_TABLES.reverse_each { |t| connection.execute("DELETE FROM #{connection.quote_table_name(t)}") }
    connection.execute("DELETE FROM sqlite_sequence") if connection.data_source_exists?("sqlite_sequence")
    mode = connection.select_value("PRAGMA journal_mode=#{journal_mode}")
    raise "journal mode #{journal_mode} not set (#{mode})" unless mode == journal_mode

    connection.execute("PRAGMA synchronous=OFF") # this connection only: faster seeding

    [storage_root, backups_dir].each do |d|
      FileUtils.rm_rf(Dir.glob(File.join(d, "*")))
    end
    ActionMailer::Base.deliveries.clear
  end

  def attach_bytes(attachable, seed, name:, size: 3000)
    bytes = Random.new(seed).bytes(size)
    attachable.attach(io: StringIO.new(bytes), filename: "#{name}.bin", content_type: "application/octet-stream")
  end

  # A tenant with everything the models have: users with avatars, projects,
  # documents (custom table, one file each), tasks (STI milestone,
  # subtasks, checklist items, tags, files), polymorphic comments, settings.
  def seed_tenant(name, seed:)
    rng = Random.new(seed)
    tenant = Tenant.create!(name: name, subdomain: name.downcase)
    users = Array.new(2) do |i|
      User.create!(tenant: tenant, email: "u#{i}@#{name.downcase}.test", name: "User #{i}").tap do |u|
        attach_bytes(u.avatar, seed * 100 + i, name: "avatar#{i}", size: 500)
      end
    end
    tags = %w[red green blue].map { |n| Tag.create!(tenant: tenant, name: "#{n}-#{name}") }
    Setting.create!(tenant: tenant, key: "theme", value: { "v" => "dark" }.to_json)
    Setting.create!(tenant: tenant, target_type: "User", target_id: users[0].id.to_s, key: "per_page", value: "50")
    2.times do |p|
      project = Project.create!(tenant: tenant, name: "#{name} project #{p}", budget: "1234.5#{p}", archived: p.odd?)
      doc = Document.create!(tenant: tenant, project: project, title: "Spec #{p}")
      attach_bytes(doc.file, seed * 1000 + p, name: "doc#{p}")
      Comment.create!(tenant: tenant, commentable: doc, user: users[0], body: "on document #{p}")
      Comment.create!(tenant: tenant, commentable: project, user: users[1], body: "on project #{p}")
      milestone = Milestone.create!(tenant: tenant, project: project, title: "Milestone #{p}", due_on: Date.new(2026, 12, p + 1))
      3.times do |t|
        task = Task.create!(tenant: tenant, project: project, assignee: users[t % 2], parent: t.zero? ? milestone : nil,
                            title: "Task #{p}.#{t} \u00e9", notes: t.odd? ? nil : "notes #{rng.rand(1000)}",
                            estimate: (t + 1) * 0.1 + 0.2)
        task.tags << tags.sample(2, random: rng)
        task.checklist_items.create!(body: "check #{t}", done: t.even?)
        Comment.create!(tenant: tenant, commentable: task, user: users[0], body: "on task #{t}")
        next if t == 2

        attach_bytes(task.files, seed * 10_000 + p * 10 + t, name: "file#{t}a")
        attach_bytes(task.files, seed * 20_000 + p * 10 + t, name: "file#{t}b", size: 70_000)
      end
      Comment.create!(tenant: tenant, commentable: milestone, body: "on milestone #{p}")
    end
    tenant.reload
  end

  def attrs(record, without: [])
    record.attributes.except(*without.map(&:to_s))
  end

  # Attachments read back through ActiveStorage: `blob.open` checks the
  # file's checksum against the blob's (ActiveStorage::IntegrityError).
  def attachment_view(attached)
    Array(attached.attachments).sort_by(&:id).map do |attachment|
      blob = attachment.blob
      bytes = nil
      blob.open { |file| bytes = file.read }
      raise "checksum mismatch for #{blob.key}" unless Digest::MD5.base64digest(bytes) == blob.checksum

      { id: attachment.id, name: attachment.name, filename: blob.filename.to_s, key: blob.key,
        content_type: blob.content_type, byte_size: blob.byte_size, checksum: blob.checksum,
        sha256: Digest::SHA256.hexdigest(bytes) }
    end
  end

  # The tenant's data read through the models and their associations.
  def tenant_view(tenant, without: [])
    tenant = Tenant.find(tenant.is_a?(Tenant) ? tenant.id : tenant)
    comments = ->(record) { record.comments.order(:id).map { |c| attrs(c, without: without).merge("author" => c.user&.email) } }
    {
      tenant: attrs(tenant, without: [:id, *(without.empty? ? [] : %i[name subdomain created_at updated_at])]),
      users: tenant.users.order(:id).map do |u|
        attrs(u, without: without).merge("avatar" => attachment_view(u.avatar),
                                         "assigned" => u.assigned_tasks.order(:id).pluck(:id))
      end,
      tags: tenant.tags.order(:id).map { |t| attrs(t, without: without).merge("tasks" => t.tasks.order(:id).pluck(:id)) },
      settings: tenant.settings.order(:id).map { |s| attrs(s, without: without) },
      projects: tenant.projects.order(:id).map do |p|
        attrs(p, without: without).merge(
          "comments" => comments.call(p),
          "documents" => p.documents.order(:id).map do |d|
            attrs(d, without: without).merge("file" => attachment_view(d.file), "comments" => comments.call(d))
          end,
          "tasks" => p.tasks.order(:id).map do |t|
            attrs(t, without: without).merge(
              "class" => t.class.name, "assignee" => t.assignee&.email, "parent" => t.parent&.title,
              "subtasks" => t.subtasks.order(:id).pluck(:title), "tags" => t.tags.order(:id).pluck(:name),
              "checklist" => t.checklist_items.order(:id).map(&:attributes), "comments" => comments.call(t),
              "files" => attachment_view(t.files)
            )
          end
        )
      end
    }
  end

  # Every row of every table (background_jobs aside: the jobs write their
  # progress there) and every stored file: "nothing changed" means equal.
  def database_fingerprint
    connection.clear_query_cache
    tables = (APP_TABLES - ["background_jobs"]).to_h do |t|
      [t, connection.select_rows("SELECT * FROM #{connection.quote_table_name(t)} ORDER BY 1, 2")]
    end
    files = Dir.glob(File.join(storage_root, "**", "*")).select { |f| File.file?(f) }.sort.to_h do |f|
      [f, Digest::SHA256.file(f).hexdigest]
    end
    { tables: tables, files: files }
  end

  def stored_files
    Dir.glob(File.join(storage_root, "**", "*")).select { |f| File.file?(f) }
  end

  # A .tar.gz with the given entries ({ name => body }, or [name, body, typeflag, linkname]).
  def write_tar_gz(path, entries)
    File.open(path, "wb") do |file|
      gz = Zlib::GzipWriter.new(file)
      Gem::Package::TarWriter.new(gz) do |tar|
        entries.each do |name, body|
          tar.add_file_simple(name, 0o644, body.bytesize) { |io| io.write(body) }
        end
      end
      gz.close
    end
    path
  end

  def deliveries
    ActionMailer::Base.deliveries
  end
end

RSpec.configure do |config|
  config.include DummyAppHelpers, rails: true
  config.define_derived_metadata(file_path: %r{/spec/rails/}) { |meta| meta[:rails] = true }
end
