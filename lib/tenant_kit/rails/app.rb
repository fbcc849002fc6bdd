# frozen_string_literal: true

module TenantKit
  module Rails
    # Reads what TenantKit.backup / TenantKit.restore need from the running
    # Rails app: the SQLite path, the ActiveStorage Disk root, relation hints
    # and the polymorphic class → table map from the model reflections.
    #
    #   TenantKit::Rails::App.options(tenant_column: "tenant_id")
    #   # => { database:, storage_root:, tenant_column:, tenant_table:,
    #   #      relations: [...], polymorphic: {...} }
    module App
      module_function

      # Options for TenantKit.backup / restore (everything but tenant_id,
      # output_dir / archive and the restore switches).
      # skip_tables: tables that are not tenant data although they carry
      # the tenant column (the jobs pass their progress table).
      def options(tenant_column: "tenant_id", base: ::ActiveRecord::Base, models: nil, storage_service: :default,
                  skip_tables: [])
        models ||= self.models(base)
        {
          database: database_path(base),
          storage_root: storage_service == :default ? storage_root : storage_root(storage_service),
          tenant_column: tenant_column.to_s,
          tenant_table: tenant_table(models, tenant_column, base),
          relations: relations(models, tenant_column: tenant_column, base: base),
          polymorphic: polymorphic(models),
          skip_tables: skip_tables.map(&:to_s)
        }.compact
      end

      # The app's TenantKit::Config from its model reflections: the tenants
      # table (the model the tenant column belongs_to), relation hints and
      # the polymorphic class map. Review it with TenantKit.explain.
      def config(tenant_column: "tenant_id", base: ::ActiveRecord::Base, models: nil, skip_tables: [])
        models ||= self.models(base)
        TenantKit::Config.new(
          tenant_column: tenant_column.to_s, tenant_table: tenant_table(models, tenant_column, base),
          relations: relations(models, tenant_column: tenant_column, base: base),
          polymorphic: polymorphic(models), skip_tables: skip_tables.map(&:to_s)
        )
      end

      # Absolute path of the SQLite file of `base`'s connection (relative
      # paths are taken from Rails.root, as Rails does).
      def database_path(base = ::ActiveRecord::Base)
        config = base.connection_db_config
        unless config.adapter.to_s.start_with?("sqlite")
          raise ArgumentError, "TenantKit needs the sqlite3 adapter (#{base.name} uses #{config.adapter})"
        end

        path = config.database.to_s
        if path.empty? || path.include?(":memory:") || path.start_with?("file::memory")
          raise ArgumentError, "TenantKit cannot use an in-memory database"
        end

        path = path.delete_prefix("file:").split("?").first if path.start_with?("file:")
        root = defined?(::Rails.root) && ::Rails.root
        root ? File.expand_path(path, root.to_s) : File.expand_path(path)
      end

      # Root directory of the ActiveStorage Disk service (the app's
      # configured service, or the given one; a Mirror service gives its
      # primary's). nil when ActiveStorage is not loaded; an ArgumentError
      # for a service that does not keep files on this disk.
      def storage_root(service = nil)
        if service.nil?
          return nil unless defined?(::ActiveStorage::Blob)

          service = ::ActiveStorage::Blob.service
          return nil if service.nil?
        end
        service = service.primary while service.respond_to?(:primary)
        return service.root.to_s if service.respond_to?(:root)

        raise ArgumentError,
              "TenantKit copies files of the ActiveStorage Disk service only (#{service.class.name} has no root); " \
              "pass storage_root: nil to back up rows without files"
      end

      # Every concrete model stored in `base`'s database (eager-loads the
      # app first when it is not, so that no model is missed).
      def models(base = ::ActiveRecord::Base)
        eager_load!
        database = database_path(base)
        ::ActiveRecord::Base.descendants.select do |model|
          next false if model.abstract_class? || model.name.nil? || model.table_name.nil?

          begin
            database_path(model) == database
          rescue StandardError # a model of another (or a removed) connection
            false
          end
        end
      end

      # Polymorphic class → table for every model (STI subclasses map to
      # their base table, custom table names included): what `*_type`
      # columns, including active_storage_attachments.record_type, can hold.
      def polymorphic(models)
        models.each_with_object({}) do |model, map|
          next if model.name.match?(/(\A|::)HABTM_/) || model.name.start_with?("ActiveRecord::")

          map[model.name] = model.table_name.to_s
          map[model.polymorphic_name] = model.table_name.to_s if model.respond_to?(:polymorphic_name)
        end
      end

      # The table of the model `belongs_to` whose foreign key is the tenant
      # column (nil: let tenant_kit find it by foreign key or convention).
      def tenant_table(models, tenant_column, base = ::ActiveRecord::Base)
        model = tenant_model(models, tenant_column)
        model && table_exists?(base, model.table_name) ? model.table_name : nil
      end

      # The model the tenant column points to (`belongs_to :tenant` / `:account`).
      def tenant_model(models, tenant_column)
        klasses = models.flat_map do |model|
          model.reflect_on_all_associations(:belongs_to).filter_map do |reflection|
            next if reflection.polymorphic? || reflection.foreign_key.to_s != tenant_column.to_s

            safe_klass(reflection)
          end
        end
        klasses = klasses.map { |k| k.respond_to?(:base_class) ? k.base_class : k }.uniq
        klasses.size == 1 ? klasses.first : nil
      end

      # Relation hints ({ table:, column:, references:, primary_key: }) from
      # belongs_to (without declared foreign keys tenant_kit would only find
      # them by naming convention, which misses `class_name:`/`foreign_key:`),
      # has_many / has_one and has_and_belongs_to_many join tables. Hints
      # whose tables or columns do not exist are left out.
      def relations(models, tenant_column: "tenant_id", base: ::ActiveRecord::Base)
        hints = []
        models.each do |model|
          model.reflect_on_all_associations.each do |reflection|
            next if reflection.options[:through]

            case reflection.macro
            when :belongs_to
              next if reflection.polymorphic?

              parent = safe_klass(reflection) or next
              hints << hint(model.table_name, reflection.foreign_key, parent.table_name,
                            reflection.association_primary_key)
            when :has_many, :has_one
              next if reflection.options[:as]

              child = safe_klass(reflection) or next
              hints << hint(child.table_name, reflection.foreign_key, model.table_name,
                            reflection.active_record_primary_key)
            when :has_and_belongs_to_many
              other = safe_klass(reflection) or next
              join_table = reflection.join_table
              hints << hint(join_table, reflection.foreign_key, model.table_name, model.primary_key)
              hints << hint(join_table, reflection.association_foreign_key, other.table_name, other.primary_key)
            end
          end
        end
        hints.compact.uniq.reject { |h| h[:column] == tenant_column.to_s }.select { |h| valid_hint?(base, h) }
      end

      def hint(table, column, references, primary_key)
        return nil if [table, column, references, primary_key].any? { |v| v.nil? || v.is_a?(Array) }

        { table: table.to_s, column: column.to_s, references: references.to_s, primary_key: primary_key.to_s }
      end

      def safe_klass(reflection)
        reflection.klass
      rescue NameError, ArgumentError
        nil
      end

      def valid_hint?(base, hint)
        table_exists?(base, hint[:table]) && table_exists?(base, hint[:references]) &&
          columns(base, hint[:table]).include?(hint[:column]) &&
          columns(base, hint[:references]).include?(hint[:primary_key])
      end

      def table_exists?(base, table)
        base.connection.data_source_exists?(table)
      end

      def columns(base, table)
        base.connection.columns(table).map(&:name)
      end

      def eager_load!
        return unless defined?(::Rails.application) && ::Rails.application
        return if ::Rails.application.config.eager_load || @eager_loaded

        ::Rails.application.eager_load!
        @eager_loaded = true
      end
    end
  end
end
