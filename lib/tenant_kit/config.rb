# frozen_string_literal: true

module TenantKit
  # The rules saying which rows are a tenant's, checked once and shared by
  # TenantKit.backup, restore, verify and explain:
  #
  #   config = TenantKit::Config.new(
  #     tenant_column: "account_id",
  #     tenant_table: "accounts",
  #     relations: [{ table: "related_categories", column: "related_category_id", references: "categories" },
  #                 { table: "campaign_messages", column: "message_id", references: nil }],
  #     polymorphic: { "Admin::User" => "users" },
  #     tables: { "audits" => :skip }
  #   )
  #   TenantKit.backup(database: db, tenant_id: 7, output_dir: dir, config: config)
  #
  # Immutable: a Config is frozen with everything in it.
  class Config
    # Option => default. The JSON keys backup, restore and explain (and the
    # C API) take are these names but skip_tables, which becomes `tables`.
    DEFAULTS = {
      tenant_column: "tenant_id",
      tenant_table: nil,
      relations: [].freeze,
      polymorphic: {}.freeze,
      tables: {}.freeze,
      skip_tables: [].freeze
    }.freeze
    OPTIONS = DEFAULTS.keys.freeze

    attr_reader :tenant_column, :tenant_table, :relations, :polymorphic, :tables

    # A Config from `config:` or the loose scope keywords of a call (never
    # both): what TenantKit.backup / restore / explain use.
    def self.for_call(config, scope)
      if config.nil?
        return new(**scope)
      end
      raise ArgumentError, "config: expected a TenantKit::Config, got #{config.inspect}" unless config.is_a?(Config)
      unless scope.empty?
        raise ArgumentError,
              "config: given together with #{scope.keys.map { |k| "#{k}:" }.join(', ')}; " \
              "put every scope option in the config (config.with(#{scope.keys.first}: ...)) or pass none"
      end

      config
    end

    def initialize(**options)
      unknown = options.keys - OPTIONS
      unless unknown.empty?
        raise ArgumentError,
              "TenantKit::Config: unknown option#{'s' if unknown.size > 1} #{unknown.map(&:inspect).join(', ')} " \
              "(expected #{OPTIONS.map { |o| "#{o}:" }.join(', ')})"
      end
      options = DEFAULTS.merge(options)
      @tenant_column = Arguments.identifier(:tenant_column, options[:tenant_column]).freeze
      @tenant_table = options[:tenant_table] && Arguments.identifier(:tenant_table, options[:tenant_table]).freeze
      @relations = deep_freeze(Arguments.relations(options[:relations]))
      @polymorphic = deep_freeze(Arguments.polymorphic(options[:polymorphic]))
      @tables = deep_freeze(Arguments.tables(options[:tables], options[:skip_tables]))
      freeze
    end

    # A copy with some options changed (relations, polymorphic and tables
    # are replaced, not merged).
    def with(**changes)
      Config.new(**to_h, **changes)
    end

    # The options as given to Config.new (skip_tables folded into tables).
    def to_h
      { tenant_column: tenant_column, tenant_table: tenant_table, relations: relations,
        polymorphic: polymorphic, tables: tables }
    end

    # The JSON keys of the native options (and of the C API's options).
    def to_native
      { tenant_column: tenant_column, tenant_table: tenant_table, relations: relations,
        polymorphic: polymorphic, tables: tables }
    end

    def to_json(*args)
      to_native.to_json(*args)
    end

    def ==(other)
      other.is_a?(Config) && to_h == other.to_h
    end
    alias eql? ==

    def hash
      to_h.hash
    end

    def inspect
      parts = ["tenant_column=#{tenant_column.inspect}"]
      parts << "tenant_table=#{tenant_table.inspect}" if tenant_table
      parts << "relations=#{relations.inspect}" unless relations.empty?
      parts << "polymorphic=#{polymorphic.inspect}" unless polymorphic.empty?
      parts << "tables=#{tables.inspect}" unless tables.empty?
      "#<TenantKit::Config #{parts.join(' ')}>"
    end
    alias to_s inspect

    private

    def deep_freeze(value)
      case value
      when Hash then value.each_value { |v| deep_freeze(v) }
      when Array then value.each { |v| deep_freeze(v) }
      end
      value.freeze
    end
  end
end
