# frozen_string_literal: true

module TenantKit
  class CLI
    # `tenant_kit explain` for a person: the tables by class with the reason,
    # the references with where each came from, and the guesses to review.
    class ExplainText
      SOURCES = {
        "foreign_key" => "declared foreign key",
        "hint" => "relations: hint",
        "framework" => "Rails framework table",
        "naming" => "Rails naming GUESS",
        "polymorphic_map" => "polymorphic: map",
        "polymorphic_naming" => "polymorphic class, Rails naming"
      }.freeze

      def initialize(report)
        @report = report
      end

      def to_s
        [header, tables, references, guesses].join("\n\n")
      end

      private

      def header
        "tenant column: #{@report[:tenant_column]}   tenants table: #{@report[:tenant_table] || '(none)'}"
      end

      def tables
        rows = @report[:tables].map { |t| [t[:name], t[:class], t[:reason]] }
        "TABLES\n#{columns([%w[table class reason]] + rows)}"
      end

      def references
        rows = @report[:references].map do |r|
          from = "#{r[:table]}.#{r[:columns].join(',')}"
          to = "#{r[:references]}.#{r[:primary_key].join(',')}"
          only = r[:polymorphic] && " where #{r[:polymorphic][:type_column]} = #{r[:polymorphic][:class]}"
          ["#{from} -> #{to}#{only}", SOURCES.fetch(r[:source], r[:source])]
        end
        "REFERENCES\n#{columns([%w[reference source]] + rows)}"
      end

      def guesses
        list = @report[:guesses]
        return "No unconfirmed naming guesses." if list.empty?

        lines = list.map { |g| "  #{g[:table]}.#{g[:column]} -> #{g[:references]}" }
        "UNCONFIRMED GUESSES (confirm each with a relations: hint, or say references: nil)\n#{lines.join("\n")}"
      end

      # Left-aligned columns, two spaces apart.
      def columns(rows)
        widths = rows.transpose.map { |col| col.map { |c| c.to_s.length }.max }
        rows.map { |row| "  #{row.each_with_index.map { |c, i| c.to_s.ljust(widths[i]) }.join('  ').rstrip}" }.join("\n")
      end
    end
  end
end
