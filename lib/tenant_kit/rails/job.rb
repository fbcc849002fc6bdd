# frozen_string_literal: true

require "active_support/concern"
require "active_support/core_ext/class/attribute"

module TenantKit
  module Rails
    # What BackupJob and RestoreJob share: settings, the progress row, mails.
    #
    #   class BackupTenantJob < ApplicationJob
    #     include TenantKit::Rails::BackupJob
    #     tenant_kit tenant_column: "account_id", output_dir: -> { Rails.root.join("backups") }
    #   end
    #
    # Settings (all optional):
    #   tenant_column:     "tenant_id"
    #   output_dir:        backups go here (String, Pathname or a Proc), default Rails.root/tmp/tenant_backups
    #   background_job_class: "BackgroundJob" (model with the job_progress column; nil: no progress row)
    #   progress_column:   :job_progress
    #   max_log:           200 (entries kept in job_progress["log"])
    #   mailer:            "TenantMailer" (nil: no mails)
    #   deliver:           :deliver_now or :deliver_later
    #   raise_errors:      false: a TenantKit::Error is recorded (progress `failed`, failure mail) and not re-raised;
    #                      other exceptions are always re-raised after that
    #   backup_options / restore_options: extra keywords for TenantKit.backup / restore
    #                      (busy_timeout:, compression_level:, relations:, polymorphic:, storage_root:, ...)
    module Job
      extend ActiveSupport::Concern

      DEFAULTS = {
        tenant_column: "tenant_id",
        output_dir: nil,
        background_job_class: "BackgroundJob",
        progress_column: :job_progress,
        max_log: ProgressLogger::DEFAULT_MAX_LOG,
        mailer: "TenantMailer",
        deliver: :deliver_now,
        raise_errors: false,
        backup_options: {},
        restore_options: {}
      }.freeze

      included do
        class_attribute :tenant_kit_settings, instance_writer: false, default: DEFAULTS
      end

      class_methods do
        # Change settings (see above); returns them.
        def tenant_kit(**settings)
          unknown = settings.keys - DEFAULTS.keys
          raise ArgumentError, "unknown tenant_kit setting(s) #{unknown.inspect} (known: #{DEFAULTS.keys.inspect})" if unknown.any?

          self.tenant_kit_settings = tenant_kit_settings.merge(settings)
        end
      end

      # The progress logger of the running job (nil outside perform).
      attr_reader :progress_logger

      # Append to the job's progress log (see ProgressLogger#log_progress).
      def log_progress(summary = nil, step:, **data)
        progress_logger&.log_progress(summary, step: step, **data)
      end

      private

      def tenant_kit_setting(name)
        value = tenant_kit_settings.fetch(name)
        value.respond_to?(:call) && !value.is_a?(Class) ? instance_exec(&value) : value
      end

      def tenant_id_of(tenant)
        id = if tenant.is_a?(::ActiveRecord::Base) then database_id(tenant)
             elsif tenant.respond_to?(:id) then tenant.id
             else tenant
             end
        raise ArgumentError, "tenant: expected a tenant record or id, got #{tenant.inspect}" unless id.is_a?(Integer) || id.is_a?(String)

        id
      end

      # The record's id as the database stores it, which is what the tenant
      # column holds: a BLOB primary key (UUIDs kept as 16 bytes, which
      # the model may show as base36 or dashed text) as its binary String.
      def database_id(record)
        id = record.respond_to?(:id_for_database, true) ? record.send(:id_for_database) : record.id
        id = id.to_s.b if id.is_a?(::ActiveModel::Type::Binary::Data)
        id
      end

      def app_options
        App.options(tenant_column: tenant_kit_setting(:tenant_column))
      end

      def refuse_open_transaction!
        return unless ::ActiveRecord::Base.connection.transaction_open?

        raise TenantKit::DatabaseError,
              "#{self.class.name} runs inside an open database transaction: tenant_kit works on its own " \
              "connection and would wait for this transaction's lock; run the job outside of it"
      end

      # The BackgroundJob row to log into: the given one, or a new one.
      def progress_record(background_job, tenant_id, job_type)
        return background_job if background_job

        name = tenant_kit_setting(:background_job_class)
        return nil unless name

        klass = name.is_a?(Class) ? name : name.to_s.constantize
        attributes = {}
        attributes["tenant_id"] = tenant_id if klass.column_names.include?("tenant_id")
        attributes[tenant_kit_setting(:tenant_column).to_s] = tenant_id if klass.column_names.include?(tenant_kit_setting(:tenant_column).to_s)
        attributes["job_type"] = job_type if klass.column_names.include?("job_type")
        attributes["state"] = "running" if klass.column_names.include?("state")
        klass.create!(attributes)
      end

      def set_state(record, state)
        return unless record && record.class.column_names.include?("state")

        record.class.unscoped.where(record.class.primary_key => record.id).update_all(state: state)
        record.state = state
        record.send(:clear_attribute_change, :state)
      rescue ::ActiveRecord::ActiveRecordError => e
        logger&.warn("[tenant_kit] could not set #{record.class.name}##{record.id} state: #{e.message}")
      end

      # Runs the native call under the progress logger. Returns
      # [result, progress_record, error]: error is the exception that was
      # recorded (state `failed`), which the caller mails about and then
      # hands to #tenant_kit_reraise.
      def tenant_kit_run(operation, background_job, tenant_id, &block)
        refuse_open_transaction! # raised: a usage error, not a failed backup or restore
        tenant_kit_attempt(operation, background_job, tenant_id, &block)
      end

      def tenant_kit_attempt(operation, background_job, tenant_id)
        record = progress_record(background_job, tenant_id, operation.to_s)
        set_state(record, "running")
        @progress_logger = ProgressLogger.new(record, column: tenant_kit_setting(:progress_column),
                                                      max_log: tenant_kit_setting(:max_log))
        result = progress_logger.track(operation) { |on_event| yield(on_event) }
        # The native side changed rows behind ActiveRecord's back.
        ::ActiveRecord::Base.connection.clear_query_cache
        set_state(record, "done")
        [result, record, nil]
      rescue StandardError => e
        ::ActiveRecord::Base.connection.clear_query_cache
        if record && progress_logger.nil?
          ProgressLogger.new(record, column: tenant_kit_setting(:progress_column)).finish(:failed, error: e)
        end
        set_state(record, "failed")
        [nil, record, e]
      end

      # A TenantKit::Error (bad archive, conflict, busy database...) has
      # been recorded and mailed: it is not raised again unless
      # `raise_errors: true`; anything else (a bug) is.
      def tenant_kit_reraise(error)
        return unless error
        raise error if tenant_kit_setting(:raise_errors) || !error.is_a?(TenantKit::Error)
      end

      # The tenant record for a tenant given as an id (for the mails).
      def tenant_record(tenant, tenant_id)
        return tenant.class.unscoped.find_by(id: tenant.id) || tenant if tenant.is_a?(::ActiveRecord::Base)

        model = App.tenant_model(App.models, tenant_kit_setting(:tenant_column))
        (model && model.unscoped.find_by(model.primary_key => tenant_id)) || tenant
      rescue StandardError
        tenant
      end

      MAIL_ALIASES = {
        path: :archive_path, archive: :archive_path, job: :background_job, account: :tenant,
        message: :error, error_message: :error, recipient: :user
      }.freeze

      # Arguments for a mailer action that takes some: matched by name
      # (`def backup_created(user, tenant, archive_path)` or keywords);
      # unknown positional names get nil. Parameterless actions read `params`.
      def mail_arguments(method, params)
        args = []
        kwargs = {}
        method.parameters.each do |type, name|
          key = params.key?(name) ? name : MAIL_ALIASES[name]
          case type
          when :req then args << (key && params[key])
          when :opt then args << params[key] if key && params.key?(key)
          when :keyreq, :key then kwargs[name] = params[key] if key && params.key?(key)
          when :keyrest then kwargs = params.merge(kwargs)
          end
        end
        [args, kwargs]
      end

      # TenantMailer.with(params).<action>(...).deliver_now; a mail that fails is
      # logged and never turns a finished backup or restore into a failure.
      def tenant_kit_mail(action, **params)
        name = tenant_kit_setting(:mailer)
        return unless name

        mailer = name.is_a?(Class) ? name : name.to_s.safe_constantize
        unless mailer&.action_methods&.include?(action.to_s)
          logger&.warn("[tenant_kit] #{name}##{action} is not defined: no mail sent")
          return
        end
        args, kwargs = mail_arguments(mailer.instance_method(action), params)
        message = kwargs.empty? ? mailer.with(**params).public_send(action, *args) : mailer.with(**params).public_send(action, *args, **kwargs)
        message.public_send(tenant_kit_setting(:deliver))
      rescue StandardError => e
        logger&.error("[tenant_kit] #{name}##{action} failed: #{e.class}: #{e.message}")
        progress_logger&.log_progress("mail #{action} failed: #{e.message}", step: :mail_failed)
        progress_logger&.flush
        nil
      end
    end
  end
end
