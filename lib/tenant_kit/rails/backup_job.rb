# frozen_string_literal: true

require "fileutils"

module TenantKit
  module Rails
    # The body of the app's BackupTenantJob:
    #
    #   class BackupTenantJob < ApplicationJob
    #     queue_as :default
    #     include TenantKit::Rails::BackupJob
    #   end
    #
    #   BackupTenantJob.perform_later(tenant: tenant, user: current_user, background_job: job)
    #
    # Backs the tenant up into `output_dir` (default Rails.root/tmp/tenant_backups)
    # logging progress into background_job.job_progress (a BackgroundJob row
    # is created when none is given), then sends
    # `TenantMailer.with(tenant:, user:, background_job:, archive_path:, result:).backup_created`,
    # or on failure `TenantMailer.with(tenant:, user:, background_job:, error:, error_class:).backup_failed`.
    module BackupJob
      extend ActiveSupport::Concern
      include Job

      # tenant: is checked inside, so that a job given none leaves a failed
      # progress row and a failure mail (see Job's raise_errors:).
      def perform(tenant: nil, user: nil, background_job: nil)
        tenant_id = tenant_id_of(tenant) rescue nil # rubocop:disable Style/RescueModifier -- raised again below
        result, record, error = tenant_kit_run(:backup, background_job, tenant_id) do |on_event|
          tenant_id = tenant_id_of(tenant)
          output_dir = (tenant_kit_setting(:output_dir) || default_output_dir).to_s
          FileUtils.mkdir_p(output_dir) unless File.exist?(output_dir)
          options = app_options(tenant_kit_setting(:backup_options)).merge(encryption_options(:backup))
          TenantKit.backup(**options, tenant_id: tenant_id, output_dir: output_dir, &on_event)
        end
        # The mails get the tenant record also when the job was given an id.
        tenant = tenant_record(tenant, tenant_id)
        if error
          tenant_kit_mail(:backup_failed, tenant: tenant, user: user, background_job: record,
                                          error: error.message, error_class: error.class.name)
        else
          tenant_kit_mail(:backup_created, tenant: tenant, user: user, background_job: record,
                                           archive_path: result.path, result: result.to_h)
        end
        tenant_kit_reraise(error)
        result
      end

      private

      def tenant_kit_operation
        :backup
      end

      def default_output_dir
        root = defined?(::Rails.root) && ::Rails.root
        raise ArgumentError, "#{self.class.name}: set `tenant_kit output_dir: ...`" unless root

        root.join("tmp", "tenant_backups")
      end
    end
  end
end
