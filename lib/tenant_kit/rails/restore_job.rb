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
    #                                  dry_run: true, purge: false, restore: true, remap: false,
    #                                  new_ids: false, id_map: nil)
    #
    # A partial restore: `only: ["tags", "Project"]` or `except: [...]` (tables, or model
    # class names: job arguments cannot be classes), or a subtree:
    # `only: { "Project" => [17] }` brings back project 17 and everything that hangs off it.
    #
    # `tenant` is the target (a record or an id: restoring into an empty
    # database, the tenant row comes from the archive). `new_ids: true`
    # makes a copy with fresh ids (with `remap: true` into another tenant);
    # with `tenant: nil` it makes a new tenant, the result's `tenant_id`. Progress goes to a
    # BackgroundJob row (job_type "restore"; pass `background_job:` to use
    # your own); it is written after the restore's transaction has ended and
    # written again if a purge removed it. Then it sends
    # `TenantMailer.with(tenant:, user:, background_job:, archive_path:, result:, dry_run:, planned:,
    # conflicts:, conflict_count:).restore_completed` (also for a dry run: its planned counts per table
    # and its conflicts are params of their own), or on failure
    # `TenantMailer.with(tenant:, user:, background_job:, archive_path:, error:, error_class:).restore_failed`.
    # A failed restore changes nothing (it rolls back). After a restore or
    # purge (not a dry run) the counter caches of the rows it affected are
    # recounted (see CounterCaches; setting `reset_counter_caches: false`
    # turns that off).
    module RestoreJob
      extend ActiveSupport::Concern
      include Job

      # tenant: and archive_path: are checked inside, so that a job missing
      # one leaves a failed progress row and a failure mail.
      def perform(tenant: nil, archive_path: nil, user: nil, dry_run: false, purge: false, restore: true,
                  remap: false, only: nil, except: nil, background_job: nil, new_ids: false, id_map: nil)
        new_tenant = new_ids && tenant.nil?
        tenant_id = tenant_id_of(tenant) rescue nil # rubocop:disable Style/RescueModifier -- raised again below
        result, record, error = tenant_kit_run(:restore, background_job, tenant_id) do |on_event|
          tenant_id = tenant_id_of(tenant) unless new_tenant
          raise ::ArgumentError, "archive_path: is required" if archive_path.nil?

          options = app_options(tenant_kit_setting(:restore_options)).merge(encryption_options(:restore))
          counters = counter_caches(tenant_id, options) unless dry_run || new_tenant
          TenantKit.restore(**options, archive: archive_path.to_s, tenant_id: tenant_id, dry_run: dry_run,
                                       purge: purge, restore: restore, remap: remap, new_ids: new_ids,
                                       id_map: id_map, only: tenant_kit_selection(only),
                                       except: tenant_kit_selection(except), &on_event).tap do |done|
            # A new tenant's shared parents are known once it is made.
            counters = counter_caches(done.tenant_id, options) if new_tenant && !dry_run
            reset_counter_caches(counters)
          end
        end
        # A new tenant is known once it is made.
        tenant_id = result.tenant_id if new_tenant && result
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

      # Model classes, or their names (what a job's arguments can carry),
      # become their tables; anything else is passed on as it is.
      def tenant_kit_selection(value)
        case value
        when Array then value.map { |v| tenant_kit_table(v) }
        when Hash then value.to_h { |k, v| [tenant_kit_table(k), v] }
        else value
        end
      end

      def tenant_kit_table(value)
        return value.table_name if value.respond_to?(:table_name)

        klass = value.to_s.safe_constantize if value.is_a?(String) && value.match?(/\A[A-Z]/)
        klass.respond_to?(:table_name) ? klass.table_name : value
      end

      # The counter caches to recount after the restore, with the shared
      # parents the tenant's rows point at before it (nil: setting off).
      # Whose rows they are is decided by the tenant column the restore
      # itself uses: a `config:` in restore_options overrides the setting.
      def counter_caches(tenant_id, options)
        return nil unless tenant_kit_setting(:reset_counter_caches)

        tenant_column = options[:config]&.tenant_column || options[:tenant_column]
        CounterCaches.new(App.models, tenant_column: tenant_column, tenant_id: tenant_id).remember
      end

      def reset_counter_caches(counters)
        return unless counters

        counts = counters.reset
        return if counts.empty?

        log_progress("counter caches recounted: #{counts.map { |name, rows| "#{name} (#{rows})" }.join(', ')}",
                     step: :counter_caches, counters: counts)
      end

      def tenant_kit_operation
        :restore
      end
    end
  end
end
