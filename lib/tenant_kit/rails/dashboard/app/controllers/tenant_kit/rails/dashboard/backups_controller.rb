# frozen_string_literal: true

module TenantKit
  module Rails
    module Dashboard
      # "Back up now": a BackgroundJob row for the page to follow, then the
      # app's backup job on its queue.
      class BackupsController < ApplicationController
        include Enqueue

        def create
          tenant_id = tenant_param(params.require(:tenant_id))
          return tenant_kit_not_found unless tenant_allowed?(tenant_id)

          record = enqueue(:backup, tenant_id, {})
          redirect_to job_path(record.id)
        end
      end
    end
  end
end
