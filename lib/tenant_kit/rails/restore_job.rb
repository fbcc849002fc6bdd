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
    # `TenantMailer.with(tenant:, user:, background_job:, archive_path:, result:).restore_completed`
    # (also for a dry run: `result[:dry_run]`, `result[:conflicts]`), or on failure
    # `TenantMailer.with(tenant:, user:, background_job:, archive_path:, error:, error_class:).restore_failed`.
    # A failed restore changes nothing (it rolls back).
    module RestoreJob
      extend ActiveSupport::Concern
      include Job

      def perform(tenant:, archive_path:, user: nil, dry_run: false, purge: false, restore: true, remap: false,
                  background_job: nil)
        tenant_id = tenant_id_of(tenant)
        result, record, error = tenant_kit_run(:restore, background_job, tenant_id) do |on_event|
          options = app_options.merge(tenant_kit_setting(:restore_options) || {})
          TenantKit.restore(**options, archive: archive_path.to_s, tenant_id: tenant_id, dry_run: dry_run,
                                       purge: purge, restore: restore, remap: remap, &on_event)
        end
        tenant = tenant_record(tenant, tenant_id)
        if error
          tenant_kit_mail(:restore_failed, tenant: tenant, user: user, background_job: record,
                                           archive_path: archive_path.to_s, error: error.message,
                                           error_class: error.class.name)
        else
          tenant_kit_mail(:restore_completed, tenant: tenant, user: user, background_job: record,
                                              archive_path: archive_path.to_s, result: result.to_h)
        end
        tenant_kit_reraise(error)
        result
      end
    end
  end
end
