# frozen_string_literal: true

module TenantKit
  # Checks of keyword arguments before anything crosses into native code, so
  # a mistake reads as a Ruby ArgumentError that names the keyword.
  module Arguments
    module_function

    def path(name, value, allow_nil: false)
      return nil if value.nil? && allow_nil
      raise ArgumentError, "#{name}: is required" if value.nil?

      path = File.path(value)
      raise ArgumentError, "#{name}: must not be empty" if path.empty?

      path
    rescue TypeError
      raise ArgumentError, "#{name}: expected a path (String or Pathname), got #{value.class}"
    end

    # SQLite's INTEGER is 64-bit: a larger id names no row.
    TENANT_ID_RANGE = (-2**63)..(2**63 - 1)

    def tenant_id(name, value)
      case value
      when Integer
        raise ArgumentError, "#{name}: #{value} does not fit SQLite's 64-bit INTEGER" unless TENANT_ID_RANGE.cover?(value)

        value
      when String
        raise ArgumentError, "#{name}: must not be empty" if value.empty?

        text_or_blob_id(name, value)
      else
        raise ArgumentError, "#{name}: expected an Integer or String id, got #{value.inspect}"
      end
    end

    # The tenant a restore writes into: nil makes a new one, which only a
    # copy with new ids can be.
    def target_tenant_id(value, new_ids)
      return tenant_id(:tenant_id, value) unless value.nil?
      return nil if new_ids

      raise ArgumentError, "tenant_id: is required (nil makes a new tenant, with new_ids: true)"
    end

    # A String in Encoding::BINARY is a BLOB id (a UUID the app keeps as 16
    # bytes): it crosses as {"$base64": ...}, the JSON form of a BLOB. Any
    # other String is text and must be valid in its encoding, or JSON could
    # not carry it.
    def text_or_blob_id(name, value)
      return { "$base64" => [value].pack("m0") } if value.encoding == Encoding::BINARY
      return value if value.valid_encoding?

      raise ArgumentError,
            "#{name}: a String that is not valid #{value.encoding} (bytes #{value.b.unpack1('H*')[0, 64]}); " \
            "pass a binary String (String#b) for an id the database keeps as a BLOB"
    end

    def identifier(name, value)
      unless value.is_a?(String) || value.is_a?(Symbol)
        raise ArgumentError, "#{name}: expected a column or table name, got #{value.inspect}"
      end
      raise ArgumentError, "#{name}: must not be empty" if value.to_s.empty?

      value.to_s
    end

    # A list of table names (skip_tables:).
    def identifiers(name, value)
      raise ArgumentError, "#{name}: expected an Array of table names, got #{value.inspect}" unless value.is_a?(Array)

      value.each_with_index.map { |v, i| identifier("#{name}[#{i}]", v) }
    end

    # Per-table rules: { "audits" => :skip, "users" => :shared,
    # "documents" => :owned }, plus the skip_tables: list (sugar for :skip).
    # Sent as { table => "skip" | "shared" | "owned" }.
    TABLE_RULES = %w[skip shared owned].freeze

    def tables(value, skip_tables)
      raise ArgumentError, "tables: expected a Hash of table => rule, got #{value.inspect}" unless value.is_a?(Hash)

      rules = value.to_h do |table, rule|
        unless TABLE_RULES.include?(rule.to_s)
          raise ArgumentError, "tables: #{table}: expected one of #{TABLE_RULES.join(', ')}, got #{rule.inspect}"
        end

        [identifier("tables", table), rule.to_s]
      end
      identifiers(:skip_tables, skip_tables).each { |table| rules[table] = "skip" }
      rules
    end

    # A table named by its name or, from the Rails integration, by its model
    # class (anything that answers table_name).
    def table_name(name, value)
      return identifier(name, value.table_name) if value.respond_to?(:table_name)

      identifier(name, value)
    end

    # only: [tables or models] (a partial restore), or { table or model => [keys] }
    # (a subtree: those rows and everything that hangs off them). Keys are
    # Integers, text Strings, binary Strings (BLOB keys) or, for a key over
    # several columns, Arrays of those in key order. nil: the whole tenant.
    def only(value)
      case value
      when nil then nil
      when Array
        raise ArgumentError, "only: name at least one table" if value.empty?

        value.each_with_index.map { |v, i| table_name("only[#{i}]", v) }
      when Hash
        raise ArgumentError, "only: a subtree has one root table: { table => [keys] }" unless value.size == 1

        table, keys = value.first
        unless keys.is_a?(Array) && !keys.empty?
          raise ArgumentError, "only: #{table}: expected a non-empty Array of keys, got #{keys.inspect}"
        end

        { table_name("only", table) => keys.map { |k| subtree_key("only: #{table}", k) } }
      else
        raise ArgumentError, "only: expected an Array of tables or a Hash of table => [keys], got #{value.inspect}"
      end
    end

    def subtree_key(name, key)
      case key
      when Integer then tenant_id(name, key)
      when String then text_or_blob_id(name, key)
      when Array then key.map { |part| subtree_key(name, part) }
      else raise ArgumentError, "#{name}: a key is an Integer, a String or an Array of those, got #{key.inspect}"
      end
    end

    # except: [tables or models].
    def except(value)
      return nil if value.nil?
      raise ArgumentError, "except: expected an Array of tables, got #{value.inspect}" unless value.is_a?(Array)
      raise ArgumentError, "except: name at least one table" if value.empty?

      value.each_with_index.map { |v, i| table_name("except[#{i}]", v) }
    end

    def boolean(name, value)
      return value if [true, false].include?(value)

      raise ArgumentError, "#{name}: expected true or false, got #{value.inspect}"
    end

    # Relation hints: [{ table:, column:, references:, primary_key: }, ...].
    # column: and primary_key: are a name or an Array of names (a composite
    # key); references: nil says the column is no reference at all.
    HINT_KEYS = %w[table column references primary_key].freeze

    def relations(value)
      unless value.is_a?(Array) || value.is_a?(Hash)
        raise ArgumentError, "relations: expected an Array of hints ({ table:, column:, references: }), got #{value.inspect}"
      end

      (value.is_a?(Hash) ? [value] : value).each_with_index.map { |hint, i| relation("relations[#{i}]", hint) }
    end

    def relation(name, hint)
      raise ArgumentError, "#{name}: expected a Hash { table:, column:, references: }, got #{hint.inspect}" unless hint.is_a?(Hash)

      hint = hint.transform_keys(&:to_s)
      unknown = hint.keys - HINT_KEYS
      raise ArgumentError, "#{name}: unknown key #{unknown.first.inspect} (expected #{HINT_KEYS.map { |k| "#{k}:" }.join(', ')})" if unknown.any?
      %w[table column references].each do |key|
        raise ArgumentError, "#{name}: #{key}: is required#{' (nil: the column is no reference)' if key == 'references'}" unless hint.key?(key)
      end
      out = { "table" => identifier("#{name}.table", hint["table"]), "column" => names("#{name}.column", hint["column"]),
              "references" => hint["references"] && identifier("#{name}.references", hint["references"]) }
      out["primary_key"] = names("#{name}.primary_key", hint["primary_key"]) unless hint["primary_key"].nil?
      out
    end

    # A column name, or an Array of them (a composite key).
    def names(name, value)
      return identifier(name, value) unless value.is_a?(Array)
      raise ArgumentError, "#{name}: must not be empty" if value.empty?

      value.each_with_index.map { |v, i| identifier("#{name}[#{i}]", v) }
    end

    # Polymorphic class name (or the class) => table name.
    def polymorphic(value)
      raise ArgumentError, "polymorphic: expected a Hash of class name => table, got #{value.inspect}" unless value.is_a?(Hash)

      value.to_h do |klass, table|
        class_name = klass.is_a?(Module) ? klass.name : klass
        [identifier("polymorphic key", class_name), identifier("polymorphic[#{class_name.inspect}]", table)]
      end
    end

    def non_negative_integer(name, value, allow_nil: true)
      return nil if value.nil? && allow_nil
      return value if value.is_a?(Integer) && value >= 0

      raise ArgumentError, "#{name}: expected a non-negative Integer, got #{value.inspect}"
    end

    # Secrets (passphrase:, identities:) are checked without ever showing
    # the value: an error message ends up in logs.
    def secret(name, value)
      return nil if value.nil?
      raise ArgumentError, "#{name}: expected a String, got a #{value.class}" unless value.is_a?(String)
      raise ArgumentError, "#{name}: must not be empty" if value.empty?

      value
    end

    def secrets(name, value)
      return [] if value.nil?

      list = value.is_a?(String) ? [value] : value
      raise ArgumentError, "#{name}: expected an Array of Strings, got a #{value.class}" unless list.is_a?(Array)

      list.each_with_index.map { |one, i| secret("#{name}[#{i}]", one) }
    end

    # age public keys: not secret, but a secret key passed here by mistake
    # would be, so the value is not shown either.
    def recipients(value)
      list = secrets(:recipients, value)
      list.each_with_index do |r, i|
        if r.upcase.start_with?("AGE-SECRET-KEY-")
          raise ArgumentError, "recipients[#{i}]: that is a secret key; give its public recipient (age1...)"
        end
      end
      list
    end

    # The encryption keywords of backup: recipients: or passphrase:.
    def encryption(recipients, passphrase)
      list = recipients(recipients)
      raise ArgumentError, "give recipients: or passphrase:, not both" if !list.empty? && passphrase

      { recipients: list, passphrase: secret(:passphrase, passphrase) }.compact
    end

    # The decryption keywords of restore and verify.
    def decryption(identities, identity_file, passphrase)
      {
        identities: secrets(:identities, identities),
        identity_file: path(:identity_file, identity_file, allow_nil: true),
        passphrase: secret(:passphrase, passphrase)
      }.compact
    end

    # SQLite takes its busy timeout as a C int of milliseconds.
    MAX_MILLISECONDS = 2**31 - 1

    # Seconds (Numeric, ActiveSupport::Duration) to milliseconds.
    def milliseconds(name, seconds)
      duration = defined?(ActiveSupport::Duration) && seconds.is_a?(ActiveSupport::Duration)
      unless seconds.is_a?(Numeric) || duration
        raise ArgumentError, "#{name}: expected seconds as a Numeric (got #{seconds.inspect})"
      end

      value = seconds.to_f
      raise ArgumentError, "#{name}: must be a finite number of seconds (got #{seconds.inspect})" unless value.finite?

      ms = (value * 1000).round
      raise ArgumentError, "#{name}: must not be negative" if ms.negative?
      if ms > MAX_MILLISECONDS
        raise ArgumentError, "#{name}: at most #{MAX_MILLISECONDS / 1000} seconds (about 24 days), got #{seconds.inspect}"
      end

      ms
    end
  end
end
