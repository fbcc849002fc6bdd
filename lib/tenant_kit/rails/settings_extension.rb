# frozen_string_literal: true

require "tenant_kit"
require "active_support"
require "active_support/core_ext/string/inflections"
require "active_support/hash_with_indifferent_access"

module TenantKit
  module Rails
    # The Rails side of TenantKit::Settings: the module the app's `Setting`
    # model extends, keeping the app's call shapes. Not loaded by
    # `require "tenant_kit"`; require it where the model is defined:
    #
    #   # app/models/setting.rb
    #   require "tenant_kit/rails/settings_extension"
    #
    #   class Setting < ApplicationRecord
    #     extend TenantKit::Rails::SettingsExtension
    #
    #     settings_defaults(
    #       "TimeMaterial" => { "rounding" => 15, "billable" => true },
    #       "Team" => { "color" => "blue" },
    #       "User" => { "theme" => "light", "per_page" => 25 },
    #     )
    #     # STI subclasses use their base class's settings unless mapped:
    #     settings_class_map "Contractor" => "Team"
    #   end
    #
    #   Setting.time_material_settings(tenant) # class level of TimeMaterial
    #   Setting.team_settings(team)            # instance level of the team
    #   Setting.user_settings(user)            # instance level of the user
    #   Setting.settings_for(:time_material, tenant: tenant)
    #   Setting.settings_for_many(users)       # { user => settings }, one pass
    #   Setting.explain_settings_for(user)     # { "key" => { value:, source: } }
    #   Setting.klass_for(:time_material)      # => "TimeMaterial"
    #
    # Results are HashWithIndifferentAccess (`settings[:theme]` and
    # `settings["theme"]` both work; equal to the plain Hash of
    # TenantKit::Settings#resolve). Without `settings_defaults`, the model's
    # `DEFAULTS` constant is used when it has one.
    #
    # Reading never writes: missing rows resolve to what is in effect, so a
    # later tenant-level change reaches every instance that has no row of
    # its own. `settings_options build_on_read: true` brings back the old
    # app's habit of creating the missing default rows of that level on read
    # (`build_settings_for`, once across processes), which freezes the value
    # in effect at that moment into instance rows. It is skipped inside an
    # open transaction of the model's connection:
    # the native side has its own connection, which would wait for this
    # transaction's lock. Resolution is the same either way (missing rows
    # resolve to what is in effect), the rows are created by the next read
    # outside a transaction. That separate connection also means settings
    # written inside a still-open transaction are not seen until commit
    # (and transactional fixtures hide test data from it).
    module SettingsExtension
      OPTION_NAMES = %i[tenant_column busy_timeout_ms lookup build_on_read].freeze

      # Class name => { key => default } (getter without argument).
      def settings_defaults(defaults = nil)
        return @tenant_kit_defaults || (const_defined?(:DEFAULTS, false) ? const_get(:DEFAULTS) : {}) if defaults.nil?

        @tenant_kit_settings = nil
        @tenant_kit_defaults = defaults
      end

      # Settings class of records whose class (or an ancestor) is named
      # here, e.g. `"Contractor" => "Team"`; a Proc gets the record's class
      # and returns a name (or nil for the default rule).
      def settings_class_map(map = nil)
        return @tenant_kit_class_map || {} if map.nil?

        @tenant_kit_class_map = map
      end

      # tenant_column: (the records' tenant column, default "tenant_id"),
      # busy_timeout_ms:, lookup: (see TenantKit::Settings::OPTIONS),
      # build_on_read: (default false: reading never writes).
      def settings_options(**options)
        return { tenant_column: "tenant_id", build_on_read: false }.merge(@tenant_kit_options || {}) if options.empty?

        unknown = options.keys - OPTION_NAMES
        raise ArgumentError, "unknown settings option(s) #{unknown.inspect} (known: #{OPTION_NAMES.inspect})" if unknown.any?

        @tenant_kit_settings = nil
        @tenant_kit_options = (@tenant_kit_options || {}).merge(options)
      end

      # The settings class name of `target`: a Symbol or snake_case String is
      # camelized (`:time_material` => "TimeMaterial"), a class name String
      # is kept, a class or a record goes through `settings_class_map`, then
      # STI (an ActiveRecord subclass uses its `base_class`).
      def klass_for(target)
        case target
        when Symbol then target.to_s.camelize
        when String
          raise ArgumentError, "klass must not be empty" if target.strip.empty?

          target.match?(/\A[a-z]/) ? target.camelize : target
        when Class then settings_class_of(target)
        else
          if target.respond_to?(:id) && target.class.respond_to?(:base_class)
            settings_class_of(target.class)
          else
            raise ArgumentError,
                  "klass_for: expected a Symbol, a class name, a model class or a record (got #{target.inspect})"
          end
        end
      end

      # The native resolver of this model's database and table (one per
      # process; it reopens its connection by itself after fork).
      def tenant_kit_settings
        @tenant_kit_settings ||= begin
          options = settings_options
          native_options = options.slice(:busy_timeout_ms, :lookup).compact
          TenantKit::Settings.new(database: tenant_kit_database, defaults: settings_defaults,
                                  table: table_name.to_s, **native_options)
        end
      end

      def time_material_settings(tenant)
        settings_for(:time_material, tenant: tenant)
      end

      def team_settings(team)
        settings_for(team)
      end

      def user_settings(user)
        settings_for(user)
      end

      # Effective settings of a record (instance level, tenant taken from the
      # record unless given) or of a class (class level, `tenant:` required).
      def settings_for(target, tenant: nil)
        tenant_id, klass, id = settings_target(target, tenant)
        build_on_read(tenant_id, klass, id)
        ActiveSupport::HashWithIndifferentAccess.new(tenant_kit_settings.resolve(tenant_id: tenant_id, klass: klass, id: id))
      end

      # `{ record => settings }` for many records, one native pass per
      # (class, tenant) instead of one query per record.
      def settings_for_many(records)
        records = records.to_a
        records.each { |record| build_on_read(*settings_target(record, nil)) }
        result = {}
        records.group_by { |record| settings_target(record, nil)[0, 2] }.each do |(tenant_id, klass), group|
          resolved = tenant_kit_settings.resolve_many(tenant_id: tenant_id, klass: klass, ids: group.map(&:id))
          group.each { |record| result[record] = ActiveSupport::HashWithIndifferentAccess.new(resolved.fetch(record.id)) }
        end
        result
      end

      # `{ "key" => { value:, source: } }` (see TenantKit::Settings#explain).
      def explain_settings_for(target, tenant: nil)
        tenant_id, klass, id = settings_target(target, tenant)
        tenant_kit_settings.explain(tenant_id: tenant_id, klass: klass, id: id)
      end

      # Create the missing default rows of that level now; returns how many.
      def build_settings_for(target, tenant: nil)
        tenant_id, klass, id = settings_target(target, tenant)
        tenant_kit_settings.build_settings_for(tenant_id: tenant_id, klass: klass, id: id)
      end

      private

      def settings_class_of(klass)
        map = settings_class_map
        if map.respond_to?(:call)
          mapped = map.call(klass)
          return mapped.to_s if mapped
        else
          klass.ancestors.each do |ancestor|
            break if defined?(::ActiveRecord::Base) && ancestor == ::ActiveRecord::Base

            mapped = ancestor.is_a?(Class) && ancestor.name && map[ancestor.name]
            return mapped.to_s if mapped
          end
        end
        base = klass.respond_to?(:base_class) ? klass.base_class : klass
        base.name or raise ArgumentError, "klass_for: anonymous class #{klass.inspect}"
      end

      # [tenant_id, klass, id] of a settings call.
      def settings_target(target, tenant)
        klass = klass_for(target)
        if target.is_a?(Symbol) || target.is_a?(String) || target.is_a?(Class)
          raise ArgumentError, "tenant: is required for the class-level settings of #{klass}" if tenant.nil?

          [tenant_id_of(tenant), klass, nil]
        else
          tenant_id = tenant ? tenant_id_of(tenant) : target.public_send(settings_options[:tenant_column])
          raise ArgumentError, "#{target.class.name}##{target.id} has no #{settings_options[:tenant_column]}" if tenant_id.nil?
          raise ArgumentError, "#{target.class.name} record is not saved: it has no id" if target.id.nil?

          [tenant_id, klass, target.id]
        end
      end

      def tenant_id_of(tenant)
        case tenant
        when Integer, String then tenant
        else
          return tenant.id if tenant.respond_to?(:id) && !tenant.id.nil?

          raise ArgumentError, "tenant: expected a tenant record or id (got #{tenant.inspect})"
        end
      end

      def build_on_read(tenant_id, klass, id)
        return unless settings_options[:build_on_read]
        return if connection.transaction_open?
        return unless tenant_kit_settings.defaults.key?(klass)

        tenant_kit_settings.build_settings_for(tenant_id: tenant_id, klass: klass, id: id)
      end

      def tenant_kit_database
        config = connection_db_config
        unless config.adapter.to_s.start_with?("sqlite")
          raise ArgumentError, "TenantKit settings need the sqlite3 adapter (#{name} uses #{config.adapter})"
        end

        path = config.database.to_s
        raise ArgumentError, "TenantKit settings cannot use an in-memory database" if path.empty? || path.include?(":memory:")

        root = defined?(::Rails.root) && ::Rails.root
        root ? File.expand_path(path, root.to_s) : File.expand_path(path)
      end
    end
  end
end
