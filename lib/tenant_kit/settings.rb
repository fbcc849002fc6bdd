# frozen_string_literal: true

require "json"

module TenantKit
  # Settings resolved through the cascade defaults < tenant < class <
  # instance, natively, over the app's `settings` table.
  #
  #   settings = TenantKit::Settings.new(
  #     database: "db/production.sqlite3",
  #     defaults: { "User" => { "theme" => "light", "per_page" => 25 } },
  #   )
  #   settings.resolve(tenant_id: 1, klass: "User", id: 42)
  #   # => { "theme" => "dark", "per_page" => 25 }
  #   settings.explain(tenant_id: 1, klass: "User", id: 42)
  #   # => { "theme" => { value: "dark", source: :instance },
  #   #      "per_page" => { value: 25, source: :default } }
  #   settings.resolve_many(tenant_id: 1, klass: "User", ids: [42, 43])
  #   # => { 42 => {...}, 43 => {...} }        (one query, not one per id)
  #   settings.build_settings_for(tenant_id: 1, klass: "User", id: 42) # => 2
  #
  # Rows: `target_type` NULL is the tenant level (it applies to every
  # class), `target_type` set with `target_id` NULL the class level, both
  # set the instance level. `id: nil` resolves the class level. Values are
  # JSON text. Unknown keys are returned as they are; duplicate rows of one
  # level resolve to the lowest id; `42` and `"42"` are the same target.
  #
  # A stored value that is not JSON, or whose JSON type contradicts the
  # default's, raises InvalidValueError naming the row when it is the
  # effective value; `explain` instead skips it and lists it under
  # `errors:` of that key (the key's entry then also has `errors:`).
  #
  # One object keeps one SQLite connection (reopened by itself after `fork`)
  # and is safe to share between threads. Nothing stays locked between
  # calls. Without an index on (tenant column, target_type, target_id) the
  # rows of a tenant are cached and reloaded whenever another connection
  # commits; add the index (see README) for write-heavy apps.
  class Settings
    # A stored value that is not valid JSON, or contradicts its default's
    # type. The message names the row (id, tenant, level, target, key).
    class InvalidValueError < IntegrityError; end

    SOURCES = {
      "default" => :default, "tenant" => :tenant, "class" => :class, "instance" => :instance
    }.freeze

    # Options besides `database:` and `defaults:`; names of the table and
    # its columns default to the Rails ones shown. `busy_timeout:` (seconds,
    # as TenantKit.backup and .restore take it) may stand for `busy_timeout_ms:`.
    OPTIONS = {
      table: "settings",
      tenant_column: "tenant_id",
      target_type_column: "target_type",
      target_id_column: "target_id",
      key_column: "key",
      value_column: "value",
      created_at_column: "created_at",
      updated_at_column: "updated_at",
      busy_timeout_ms: 5000,
      lookup: :auto, # :auto, :query or :snapshot
    }.freeze

    class << self
      # The settings class name of `target`: a String as is, a Symbol
      # camelized (`:time_material` => "TimeMaterial"), a Class or Module by
      # its name. Records are the Rails extension's business
      # (TenantKit::Rails::SettingsExtension#klass_for).
      def klass_for(target)
        case target
        when String
          raise ArgumentError, "klass must not be empty" if target.strip.empty?

          target
        when Symbol then camelize(target.to_s)
        when Module
          target.name or raise ArgumentError, "klass: anonymous class #{target.inspect} has no name"
        else
          raise ArgumentError,
                "klass must be a class name String, a Symbol or a Class (got #{target.inspect})"
        end
      end

      def camelize(name)
        return name.camelize if name.respond_to?(:camelize)

        name.split("/").map { |part| part.split("_").map(&:capitalize).join }.join("::")
      end
    end

    attr_reader :database, :defaults

    def initialize(database:, defaults: {}, **options)
      options = busy_timeout_in_ms(options)
      unknown = options.keys - OPTIONS.keys
      unless unknown.empty?
        raise ArgumentError, "unknown option#{"s" if unknown.size > 1} #{unknown.map(&:inspect).join(", ")} " \
                             "(known: database, defaults, #{OPTIONS.keys.join(", ")})"
      end
      unless database.is_a?(String) || database.respond_to?(:to_path)
        raise ArgumentError, "database must be the path of the SQLite file (got #{database.inspect})"
      end
      raise ArgumentError, "defaults must be a Hash (got #{defaults.class})" unless defaults.is_a?(Hash)

      @database = File.expand_path(database.respond_to?(:to_path) ? database.to_path : database)
      @defaults = defaults.each_with_object({}) do |(klass, keys), out|
        keys = {} if keys.nil?
        raise ArgumentError, "defaults[#{klass.inspect}] must be a Hash (got #{keys.class})" unless keys.is_a?(Hash)

        out[self.class.klass_for(klass)] = keys.transform_keys(&:to_s)
      end.freeze
      config = options.merge(database: @database, defaults: @defaults)
      config[:lookup] = config[:lookup].to_s if config.key?(:lookup)
      @native = Native::Settings.open(JSON.generate(config))
    end

    # Effective settings of one target: `{ "key" => value }`. `id: nil`
    # resolves the class level (defaults < tenant < class).
    def resolve(tenant_id:, klass:, id: nil)
      @native.resolve(request("resolve", tenant_id, klass, id: check_id(:id, id, nil_ok: true)))
    end

    # Value and source of every key: `{ "key" => { value:, source: } }`,
    # source one of :default, :tenant, :class, :instance. Invalid rows are
    # skipped and listed in an extra `errors:` Array of that key (source is
    # nil when nothing valid is left and there is no default).
    def explain(tenant_id:, klass:, id: nil)
      call("explain", tenant_id, klass, id: check_id(:id, id, nil_ok: true)).fetch("settings").transform_values do |e|
        entry = { value: e["value"], source: SOURCES[e["source"]] }
        entry[:errors] = e["errors"] unless e["errors"].empty?
        entry
      end
    end

    # `resolve` for many instances of one class in one pass:
    # `{ id => { "key" => value } }`, keyed by the ids as given.
    def resolve_many(tenant_id:, klass:, ids:)
      raise ArgumentError, "ids must be an Array of ids (got #{ids.inspect})" unless ids.respond_to?(:to_ary)

      ids = ids.to_ary.map { |id| check_id(:ids, id) }
      return {} if ids.empty?

      @native.resolve_many(request("resolve_many", tenant_id, klass, ids: ids))
    end

    # Create the missing rows of one level (class level for `id: nil`,
    # instance level otherwise) for the keys of `defaults[klass]`, exactly
    # once even when several processes call it at the same time. The values
    # written are those in effect at that moment, so `resolve` does not
    # change. Returns how many rows were created.
    def build_settings_for(tenant_id:, klass:, id: nil)
      call("build_settings_for", tenant_id, klass, id: check_id(:id, id, nil_ok: true)).fetch("created")
    end

    # :query (indexed lookups) or :snapshot (cached rows per tenant).
    def lookup
      @native.lookup.to_sym
    end

    # Close the connection now; the next call opens a new one.
    def close
      @native.close
      nil
    end

    def inspect
      "#<#{self.class.name} database=#{@database.inspect} classes=#{@defaults.keys.inspect}>"
    end

    private

    # `busy_timeout:` in seconds, as TenantKit.backup and .restore take it,
    # or `busy_timeout_ms:` (the native option); not both.
    def busy_timeout_in_ms(options)
      return options unless options.key?(:busy_timeout)
      raise ArgumentError, "give busy_timeout: (seconds) or busy_timeout_ms:, not both" if options.key?(:busy_timeout_ms)

      options.except(:busy_timeout).merge(busy_timeout_ms: Arguments.milliseconds(:busy_timeout, options[:busy_timeout]))
    end

    def request(op, tenant_id, klass, **target)
      tenant = Arguments.tenant_id(:tenant_id, check_id(:tenant_id, tenant_id))
      JSON.generate(op: op, tenant_id: tenant, klass: self.class.klass_for(klass), **target)
    end

    # explain and build_settings_for: JSON both ways.
    def call(op, tenant_id, klass, **target)
      JSON.parse(@native.call(request(op, tenant_id, klass, **target)))
    end

    def check_id(name, value, nil_ok: false)
      case value
      when Integer then value
      when String
        raise ArgumentError, "#{name} must not be empty" if value.empty?

        value
      when nil
        return nil if nil_ok
        raise ArgumentError, "ids must hold Integers or Strings (got nil)" if name == :ids

        raise ArgumentError, "#{name} is required (got nil)"
      else
        raise ArgumentError, "#{name} must be an Integer or a String (got #{value.inspect})"
      end
    end
  end
end
