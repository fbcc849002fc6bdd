# frozen_string_literal: true

module TenantKit
  module Rails
    module Dashboard
      # Authorisation first (default deny), then the tenant scope; CSRF on
      # every unsafe request. Out-of-scope records answer 404 like missing ones.
      class ApplicationController < TenantKit::Rails::Dashboard.parent_controller.to_s.constantize
        protect_from_forgery with: :exception
        layout "tenant_kit/rails/dashboard/application"
        before_action :tenant_kit_authorize!
        helper_method :tenant_scope_ids, :tenant_scoped?
        rescue_from Archives::NotFound, ::ActiveRecord::RecordNotFound, with: :tenant_kit_not_found

        NOT_CONFIGURED = "The tenant_kit dashboard is closed: no authorisation is configured. Add " \
                         "TenantKit::Rails::Dashboard.authorize { |controller| controller.current_user&.admin? } " \
                         "to an initializer."
        DENIED = "You are not allowed to use the tenant_kit dashboard."

        private

        def tenant_kit_authorize!
          rule = Dashboard.authorize
          return tenant_kit_forbidden(NOT_CONFIGURED) unless rule
          return if rule.call(self)

          tenant_kit_forbidden(DENIED)
        end

        def tenant_kit_forbidden(message)
          respond_to do |format|
            format.json { render json: { error: message }, status: :forbidden }
            format.any { render plain: message, status: :forbidden, content_type: "text/plain" }
          end
        end

        def tenant_kit_not_found
          render plain: "Not found", status: :not_found, content_type: "text/plain"
        end

        # nil: every tenant; else the ids this user may see and act on.
        def tenant_scope_ids
          return @tenant_scope_ids if defined?(@tenant_scope_ids)

          rule = Dashboard.tenant_scope
          ids = rule&.call(self)
          @tenant_scope_ids = ids.nil? ? nil : Array(ids)
        end

        def tenant_scoped? = !tenant_scope_ids.nil?

        def tenant_allowed?(tenant_id)
          !tenant_scoped? || Archives.tenant_in?(tenant_id, tenant_scope_ids)
        end

        def tenant_column
          job = Dashboard.constant(:backup_job)
          job.respond_to?(:tenant_kit_settings) ? job.tenant_kit_settings[:tenant_column].to_s : "tenant_id"
        end

        def job_model = Dashboard.constant(:background_job_class)

        def archives
          @archives ||= Archives.new(output_dir)
        end

        # The configured directory, else the backup job's own setting.
        def output_dir
          dir = Dashboard.output_dir
          job = Dashboard.constant(:backup_job)
          dir ||= job.tenant_kit_settings[:output_dir] if job.respond_to?(:tenant_kit_settings)
          dir = job.new.instance_exec(&dir) if dir.respond_to?(:call)
          (dir || ::Rails.root.join("tmp", "tenant_backups")).to_s
        end

        # A tenant id from a form: digits are an Integer id, like the jobs take.
        def tenant_param(value)
          value = value.to_s.strip
          value.match?(/\A\d+\z/) ? value.to_i : value
        end
      end
    end
  end
end
