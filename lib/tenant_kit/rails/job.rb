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
    #   background_job_class: "BackgroundJob" (model with the job_progress column; nil: no progress row).
    #                      Its table is not tenant data: backups leave it out and restores never purge it.
    #   states:            { running:, done:, failed: } values of its `state` column (default: from the
    #                      model's `state` enum: done is `completed` or `done`; else "running"/"done"/"failed")
    #   job_class_column:  default the first of job_klass / job_type / job_class it has (job_type gets
    #                      "backup"/"restore", the others the job's class name)
    #   progress_column:   :job_progress
    #   max_log:           200 (entries kept in job_progress["log"])
    #   mailer:            "TenantMailer" (nil: no mails)
    #   deliver:           :deliver_now or :deliver_later
    #   raise_errors:      false: a TenantKit::Error or an ArgumentError (a bad or missing argument, a tenant
    #                      that is not there) is recorded (progress `failed`, failure mail) and the job is
    #                      discarded, not retried; true re-raises them after that. Other exceptions (bugs)
    #                      are always re-raised after that
    #   reset_counter_caches: true: after a restore or purge, recount the counter caches
    #                      (belongs_to ..., counter_cache:) of the rows it affected (see CounterCaches)
    #   backup_options / restore_options: extra keywords for TenantKit.backup / restore
    #                      (busy_timeout:, compression_level:, relations:, polymorphic:, storage_root:, ...;
    #                      config: a TenantKit::Config replacing the scope read from the models)
    #   recipients:        age public keys (age1...) the backups are encrypted to (….tar.gz.age); nil: plain
    #   identities:        age identities (AGE-SECRET-KEY-1...) restores decrypt with
    #   identity_file:     or a file of them (age's key-file format)
    #                      Keys come from here (a Proc, e.g. `-> { Rails.application.credentials.tenant_kit_identities }`),
    #                      never from job arguments: those are serialised into the queue.
    module Job
      extend ActiveSupport::Concern

      DEFAULTS = {
        tenant_column: "tenant_id",
        output_dir: nil,
        background_job_class: "BackgroundJob",
        states: nil,
        job_class_column: nil,
        progress_column: :job_progress,
        max_log: ProgressLogger::DEFAULT_MAX_LOG,
        mailer: "TenantMailer",
        deliver: :deliver_now,
        raise_errors: false,
        reset_counter_caches: true,
        backup_options: {},
        restore_options: {},
        recipients: nil,
        identities: nil,
        identity_file: nil
      }.freeze

      included do
        class_attribute :tenant_kit_settings, instance_writer: false, default: DEFAULTS
        # Arguments ActiveJob itself refuses (an unknown or missing keyword)
        # never reach #perform: recorded and discarded here all the same.
        rescue_from(::ArgumentError) { |error| tenant_kit_rescue(error) } if respond_to?(:rescue_from)
      end

      class_methods do
        # Change settings (see above); returns them.
        def tenant_kit(**settings)
          unknown = settings.keys - DEFAULTS.keys
          raise ArgumentError, "unknown tenant_kit setting(s) #{unknown.inspect} (known: #{DEFAULTS.keys.inspect})" if unknown.any?

          self.tenant_kit_settings = tenant_kit_settings.merge(settings)
        end
      end

      # Inside a database transaction the job is enqueued once it commits
      # (as Rails 7.2 does for most adapters; here for every adapter and
      # Rails version), so that it never runs before the rows the
      # transaction writes, its BackgroundJob included, nor meets its lock.
      # Where Rails defers it already, no transaction is open any more here.
      def enqueue(options = {})
        connection = ::ActiveRecord::Base.connection
        return super unless connection.transaction_open?

        AfterCommit.run(connection) { super(options) }
        self
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

      # The job rows are the app's bookkeeping, not tenant data: leaving
      # their table out keeps the running job's own row out of the archive
      # and every job row (history, jobs queued since) through a purge.
      # `extra` is the backup_options / restore_options setting; with a
      # `config:` (a TenantKit::Config) in it, that config is the scope, the
      # progress table added to its skipped tables.
      def app_options(extra = nil)
        extra = (extra || {}).to_h.transform_keys(&:to_sym)
        options = App.options(tenant_column: tenant_kit_setting(:tenant_column), skip_tables: progress_tables)
        return options.merge(extra) unless extra.key?(:config)

        config = TenantKit::Config.for_call(extra[:config], {})
        config = config.with(tables: config.tables.merge(progress_tables.to_h { |t| [t, "skip"] }))
        options.except(*TenantKit::Config::OPTIONS).merge(extra, config: config)
      end

      # The keys of the encryption settings, for TenantKit.backup (encrypt)
      # or TenantKit.restore (decrypt); unset ones are left out.
      def encryption_options(operation)
        names = operation == :backup ? %i[recipients] : %i[identities identity_file]
        names.to_h { |name| [name, tenant_kit_setting(name)] }.compact
      end

      def progress_tables
        klass = progress_class
        klass && ::ActiveRecord::Base.connection.data_source_exists?(klass.table_name) ? [klass.table_name] : []
      end

      def progress_class
        name = tenant_kit_setting(:background_job_class)
        return nil unless name

        name.is_a?(Class) ? name : name.to_s.constantize
      end

      def progress_model
        klass = progress_class
        klass && ProgressRecord.new(klass, tenant_column: tenant_kit_setting(:tenant_column),
                                           states: tenant_kit_setting(:states),
                                           job_class_column: tenant_kit_setting(:job_class_column))
      end

      def refuse_open_transaction!
        return unless ::ActiveRecord::Base.connection.transaction_open?

        raise TenantKit::DatabaseError,
              "#{self.class.name} runs inside an open database transaction: tenant_kit works on its own " \
              "connection and would wait for this transaction's lock; run the job outside of it"
      end

      # The BackgroundJob row to log into: the given one, or a new one.
      def progress_record(background_job, tenant_id, operation)
        return background_job if background_job

        progress_model&.create(tenant_id: tenant_id, operation: operation, job_class: self.class.name)
      end

      # state: :running, :done or :failed (written in the app's words).
      def set_state(record, state)
        return unless record

        ProgressRecord.new(record.class, states: tenant_kit_setting(:states)).update_state(record, state)
      rescue ::ActiveRecord::ActiveRecordError, ::ArgumentError => e
        logger&.warn("[tenant_kit] could not set #{record.class.name}##{record.id} state: #{e.message}")
      end

      # Runs the native call under the progress logger. Returns
      # [result, progress_record, error]: error is the exception that was
      # recorded (state `failed`), which the caller mails about and then
      # hands to #tenant_kit_reraise.
      # `tenant_id` may be nil (an argument that names no tenant): the
      # block raises then, and the failure is recorded like any other.
      def tenant_kit_run(operation, background_job, tenant_id, &block)
        tenant_kit_attempt(operation, background_job, tenant_id, &block)
      end

      def tenant_kit_attempt(operation, background_job, tenant_id)
        record = progress_record(background_job, tenant_id, operation.to_s)
        set_state(record, :running)
        @progress_logger = ProgressLogger.new(record, column: tenant_kit_setting(:progress_column),
                                                      max_log: tenant_kit_setting(:max_log))
        result = progress_logger.track(operation) do |on_event|
          refuse_open_transaction!
          yield(on_event)
        rescue ::ArgumentError => e
          raise ArgumentNames.in_job_terms(e) # before the logger records it
        end
        # The native side changed rows behind ActiveRecord's back.
        ::ActiveRecord::Base.connection.clear_query_cache
        set_state(record, :done)
        [result, record, nil]
      rescue StandardError => e
        ::ActiveRecord::Base.connection.clear_query_cache
        e = ArgumentNames.in_job_terms(e)
        if record && progress_logger.nil?
          ProgressLogger.new(record, column: tenant_kit_setting(:progress_column)).finish(:failed, error: e)
        end
        set_state(record, :failed)
        [nil, record, e]
      end

      # A TenantKit::Error (bad archive, conflict, busy database...) or an
      # ArgumentError has been recorded and mailed: the job is done with
      # (retrying cannot help, and would send the mail again) unless
      # `raise_errors: true`; anything else (a bug) is raised again.
      def tenant_kit_reraise(error)
        return unless error
        raise error if tenant_kit_setting(:raise_errors) || !tenant_kit_discarded?(error)
      end

      def tenant_kit_discarded?(error)
        error.is_a?(TenantKit::Error) || error.is_a?(::ArgumentError)
      end

      # An ArgumentError raised before #perform ran (ActiveJob's keyword
      # check): a failed progress row and the failure mail, then discarded.
      def tenant_kit_rescue(error)
        raise error if tenant_kit_setting(:raise_errors) || @progress_logger

        params = arguments.first.is_a?(Hash) ? arguments.first.symbolize_keys : {}
        _, record, error = tenant_kit_attempt(tenant_kit_operation, params[:background_job], nil) { raise error }
        tenant_kit_mail(:"#{tenant_kit_operation}_failed",
                        **params.slice(:tenant, :user, :archive_path), background_job: record,
                                                                       error: error.message, error_class: error.class.name)
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
        progress_logger&.log_after("#{name}##{action} #{tenant_kit_setting(:deliver) == :deliver_later ? 'enqueued' : 'sent'}",
                                   step: :email_enqueued, mailer: name.to_s, action: action.to_s)
      rescue StandardError => e
        logger&.error("[tenant_kit] #{name}##{action} failed: #{e.class}: #{e.message}")
        progress_logger&.log_progress("mail #{action} failed: #{e.message}", step: :mail_failed)
        progress_logger&.flush
        nil
      end
    end
  end
end
