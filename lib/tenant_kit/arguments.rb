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

    # Per-table rules: { "audits" => :skip }, plus the skip_tables: list
    # (sugar for the same rule). Sent as { table => "skip" }.
    TABLE_RULES = %w[skip].freeze

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

    def boolean(name, value)
      return value if [true, false].include?(value)

      raise ArgumentError, "#{name}: expected true or false, got #{value.inspect}"
    end

    # Relation hints: [{ table:, column:, references:, primary_key: }, ...]
    def relations(value)
      Array(value).map do |hint|
        raise ArgumentError, "relations: each hint must be a Hash" unless hint.is_a?(Hash)

        # references: nil says "not a reference" and must stay nil.
        hint.transform_keys(&:to_s).transform_values do |v|
          case v
          when Array then v.map(&:to_s)
          when nil then nil
          else v.to_s
          end
        end
      end
    end

    # Polymorphic class name => table name.
    def polymorphic(value)
      raise ArgumentError, "polymorphic: expected a Hash of class name => table" unless value.is_a?(Hash)

      value.to_h { |k, v| [k.to_s, v.to_s] }
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
