# frozen_string_literal: true

require "rails/generators"
require "rails/generators/active_record"

module TenantKit
  module Generators
    # bin/rails generate tenant_kit:job_progress [--table background_jobs] [--tenant-column tenant_id]
    #
    # Writes db/migrate/<timestamp>_add_tenant_kit_job_progress.rb: adds to
    # an existing `background_jobs` what it lacks (the `job_progress` text
    # column; a `state` column; a `job_klass` column unless it has job_klass,
    # job_type or job_class), renaming nothing, or creates the table (tenant
    # column, job_type, state, job_progress, timestamps) when the app has
    # none. Then run `bin/rails db:migrate`.
    #
    # The migration's text is in this file (no template file), so the gem's
    # `lib/**/*.rb` carries all of it.
    class JobProgressGenerator < ::Rails::Generators::Base
      include ::ActiveRecord::Generators::Migration

      desc "Add background_jobs.job_progress (the JSON progress log tenant_kit's jobs write)"

      class_option :table, type: :string, default: "background_jobs", desc: "Table holding the job rows"
      class_option :tenant_column, type: :string, default: "tenant_id", desc: "Tenant column of a new table"

      def copy_migration
        destination = "db/migrate/add_tenant_kit_job_progress.rb"
        set_migration_assigns!(destination)
        dir, base = File.split(destination)
        source = migration_source
        create_migration(File.join(dir, "%migration_number%_#{base}"), nil, {}) { source }
      end

      private

      def migration_source
        table = identifier(options[:table])
        tenant_column = identifier(options[:tenant_column])
        version = "#{::ActiveRecord::VERSION::MAJOR}.#{::ActiveRecord::VERSION::MINOR}"
        <<~RUBY
          # frozen_string_literal: true

          # tenant_kit: #{table}.job_progress holds the JSON progress of
          # BackupTenantJob / RestoreTenantJob (state, step, percent, capped log).
          class AddTenantKitJobProgress < ActiveRecord::Migration[#{version}]
            def up
              if table_exists?(:#{table})
                # Only what is missing: the app's own columns (job_klass,
                # an integer state enum...) are kept as they are.
                add_column :#{table}, :job_progress, :text unless column_exists?(:#{table}, :job_progress)
                add_column :#{table}, :state, :string unless column_exists?(:#{table}, :state)
                unless %i[job_klass job_type job_class].any? { |c| column_exists?(:#{table}, c) }
                  add_column :#{table}, :job_klass, :string
                end
              else
                create_table :#{table} do |t|
                  t.integer :#{tenant_column}, index: true
                  t.string :job_type
                  t.string :state
                  t.text :job_progress
                  t.timestamps
                end
              end
            end

            def down
              remove_column :#{table}, :job_progress if column_exists?(:#{table}, :job_progress)
            end
          end
        RUBY
      end

      def identifier(name)
        raise ArgumentError, "not a table or column name: #{name.inspect}" unless name.to_s.match?(/\A[a-z_][a-z0-9_]*\z/i)

        name.to_s
      end
    end
  end
end
