# frozen_string_literal: true

module TenantKit
  module Rails
    # The app's job row (BackgroundJob) in the app's own words: its state
    # values and its job class column, whatever they are called.
    #
    # States: the jobs speak of :running, :done and :failed. The value
    # written is the `states:` setting's when given, else the model's `state`
    # enum's (done: `completed`, else `done`, `succeeded`, `finished`), else
    # the plain names ("running", "done", "failed").
    #
    # Job class column: the `job_class_column:` setting, else the first of
    # job_klass, job_type, job_class the table has. job_type gets the
    # operation ("backup"/"restore"), the others the job's class name.
    class ProgressRecord
      STATES = %i[running done failed].freeze
      PLAIN_STATES = { running: "running", done: "done", failed: "failed" }.freeze
      # An enum's name for each state, first match wins.
      STATE_NAMES = { running: %w[running], done: %w[completed done succeeded finished], failed: %w[failed] }.freeze
      JOB_CLASS_COLUMNS = %w[job_klass job_type job_class].freeze

      attr_reader :klass

      def initialize(klass, tenant_column: "tenant_id", states: nil, job_class_column: nil)
        @klass = klass
        @tenant_column = tenant_column.to_s
        @states = (states || {}).to_h.transform_keys(&:to_sym)
        @job_class_column = job_class_column&.to_s
        check!
      end

      # The state column's value for :running / :done / :failed, as the
      # model names it (an enum's key) and as the database stores it.
      def state(name)
        name = name.to_sym
        raise ArgumentError, "state: expected one of #{STATES.inspect}" unless STATES.include?(name)

        value = @states.fetch(name) { enum ? enum_name(name) : PLAIN_STATES.fetch(name) }.to_s
        return [value, value] unless enum
        return [value, enum.fetch(value)] if enum.key?(value)

        raise ArgumentError, "states: #{name}: #{value.inspect} is not a value of #{klass.name}.state " \
                             "(its values: #{enum.keys.join(', ')})"

      end

      # A new row for a job that was given none: created without the
      # model's validations (a restore's tenant row may not exist yet: the
      # app's `belongs_to :tenant` would refuse the very job that brings it).
      def create(tenant_id:, operation:, job_class:)
        attributes = {}
        attributes["tenant_id"] = tenant_id if columns.include?("tenant_id")
        attributes[@tenant_column] = tenant_id if columns.include?(@tenant_column)
        column = job_class_column
        attributes[column] = column == "job_type" ? operation.to_s : job_class.to_s if column
        attributes["state"] = state(:running).first if state?
        record = klass.new(attributes)
        record.save!(validate: false)
        record
      end

      # Set the state in the database and on the record, without callbacks
      # or validations (the row may belong to a tenant being restored).
      def update_state(record, name)
        return unless state?

        value, stored = state(name)
        klass.unscoped.where(klass.primary_key => record.id).update_all("state" => stored)
        record.state = value
        record.send(:clear_attribute_change, :state)
      end

      def job_class_column
        return @job_class_column if @job_class_column

        JOB_CLASS_COLUMNS.find { |c| columns.include?(c) }
      end

      def state?
        columns.include?("state")
      end

      private

      def columns
        klass.column_names
      end

      def enum
        klass.respond_to?(:defined_enums) ? klass.defined_enums["state"] : nil
      end

      def enum_name(name)
        found = STATE_NAMES.fetch(name).find { |n| enum.key?(n) }
        return found if found

        raise ArgumentError,
              "#{klass.name}.state has no value for #{name} (its values: #{enum.keys.join(', ')}); " \
              "set `tenant_kit states: { #{name}: \"...\" }`"
      end

      # Every mistake in the settings is named before any job runs.
      def check!
        unknown = @states.keys - STATES
        raise ArgumentError, "states: unknown state(s) #{unknown.inspect} (known: #{STATES.inspect})" if unknown.any?

        STATES.each { |s| state(s) } if state?
        return unless @job_class_column && !columns.include?(@job_class_column)

        raise ArgumentError, "job_class_column: #{klass.table_name} has no column #{@job_class_column}"
      end
    end
  end
end
