# frozen_string_literal: true

module TenantKit
  module Rails
    # The body of the app's RestoreTenantJob:
    #
    #   class RestoreTenantJob < ApplicationJob
    #     queue_as :default
    #     include TenantKit::Rails::RestoreJob
    #   end
    #
    #   RestoreTenantJob.perform_later(tenant: tenant, user: current_user, archive_path: path,
    #                                  dry_run: true, purge: false, restore: true, remap: false)
    #
    # `tenant` is the target (a record or an id: restoring into an empty
    # database, the tenant row comes from the archive). Progress goes to a
    # BackgroundJob row (job_type "restore"; pass `background_job:` to use
    # your own); it is written after the restore's transaction has ended and
    # written again if a purge removed it. Then it sends
    # `TenantMailer.with(tenant:, user:, background_job:, archive_path:, result:, dry_run:, planned:,
    # conflicts:, conflict_count:).restore_completed` (also for a dry run: its planned counts per table
    # and its conflicts are params of their own), or on failure
    # `TenantMailer.with(tenant:, user:, background_job:, archive_path:, error:, error_class:).restore_failed`.
    # A failed restore changes nothing (it rolls back).
    module RestoreJob
      extend ActiveSupport::Concern
      include Job

      # tenant: and archive_path: are checked inside, so that a job missing
      # one leaves a failed progress row and a failure mail.
      def perform(tenant: nil, archive_path: nil, user: nil, dry_run: false, purge: false, restore: true,
                  remap: false, background_job: nil)
        tenant_id = tenant_id_of(tenant) rescue nil # rubocop:disable Style/RescueModifier -- raised again below
        result, record, error = tenant_kit_run(:restore, background_job, tenant_id) do |on_event|
          tenant_id = tenant_id_of(tenant)
          raise ::ArgumentError, "archive_path: is required" if archive_path.nil?

          options = app_options.merge(tenant_kit_setting(:restore_options) || {}, encryption_options(:restore))
          TenantKit.restore(**options, archive: archive_path.to_s, tenant_id: tenant_id, dry_run: dry_run,
                                       purge: purge, restore: restore, remap: remap, &on_event)
        end
        tenant = tenant_record(tenant, tenant_id)
        if error
          tenant_kit_mail(:restore_failed, tenant: tenant, user: user, background_job: record,
                                           archive_path: archive_path.to_s, error: error.message,
                                           error_class: error.class.name)
        else
          summary = result.to_h
          if result.dry_run && result.conflicts?
            log_progress("dry run: #{result.conflict_count} conflict(s), a restore would be refused",
                         step: :conflicts, conflict_count: result.conflict_count)
          end
          tenant_kit_mail(:restore_completed, tenant: tenant, user: user, background_job: record,
                                              archive_path: archive_path.to_s, result: summary,
                                              dry_run: summary[:dry_run], planned: summary[:planned],
                                              conflicts: summary[:conflicts], conflict_count: summary[:conflict_count])
        end
        tenant_kit_reraise(error)
        result
      end

      private

      def tenant_kit_operation
        :restore
      end
    end
  end
end
