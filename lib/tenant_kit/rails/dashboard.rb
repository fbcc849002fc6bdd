# frozen_string_literal: true

require "tenant_kit/rails"

module TenantKit
  module Rails
    # A mountable progress dashboard for the backup and restore jobs:
    #
    #   # config/initializers/tenant_kit.rb
    #   require "tenant_kit/rails/dashboard"
    #   TenantKit::Rails::Dashboard.configure do |dashboard|
    #     dashboard.authorize { |controller| controller.current_user&.admin? }
    #     # optional: tenant admins see and act on their own tenant only
    #     dashboard.tenant_scope { |controller| controller.current_user.admin? ? nil : controller.current_user.tenant_id }
    #   end
    #
    #   # config/routes.rb
    #   mount TenantKit::Rails::Dashboard::Engine, at: "/admin/tenant_kit"
    #
    # Nothing is reachable until `authorize` is configured (403). Settings:
    #   parent_controller:    "ActionController::Base" (the engine's controllers inherit it:
    #                         use "ApplicationController" for its current_user and filters)
    #   backup_job / restore_job: "BackupTenantJob" / "RestoreTenantJob"
    #   background_job_class: "BackgroundJob" (the model with job_progress)
    #   output_dir:           where the backup job writes (default: the backup job's setting)
    #   per_page:             25
    #   stale_after:          900 (seconds without progress after which a running
    #                         job is shown "stale" and no longer polled)
    module Dashboard
      SETTINGS = {
        parent_controller: "ActionController::Base",
        backup_job: "BackupTenantJob",
        restore_job: "RestoreTenantJob",
        background_job_class: "BackgroundJob",
        output_dir: nil,
        per_page: 25,
        stale_after: 900
      }.freeze

      class << self
        attr_writer(*SETTINGS.keys)

        SETTINGS.each do |name, default|
          define_method(name) { instance_variable_defined?("@#{name}") ? instance_variable_get("@#{name}") : default }
        end

        def configure
          yield self
          self
        end

        # The block gets the controller and answers whether its user may use
        # the dashboard. Without one, every request is refused.
        def authorize(&block)
          @authorize = block if block
          @authorize
        end

        # The block gets the controller and answers nil (every tenant) or the
        # tenant id (or ids) its user may see and act on.
        def tenant_scope(&block)
          @tenant_scope = block if block
          @tenant_scope
        end

        # Back to the defaults (for tests).
        def reset!
          (SETTINGS.keys + %i[authorize tenant_scope]).each do |name|
            remove_instance_variable("@#{name}") if instance_variable_defined?("@#{name}")
          end
        end

        def constant(name)
          value = public_send(name)
          value.is_a?(Class) ? value : value.to_s.constantize
        end
      end
    end
  end
end

require_relative "dashboard/job_view"
require_relative "dashboard/archives"
require_relative "dashboard/engine" if defined?(::Rails::Engine)
