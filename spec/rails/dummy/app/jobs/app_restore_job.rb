# frozen_string_literal: true

# RestoreTenantJob as the issue-21 app writes it: its own job model.
class AppRestoreJob < ApplicationJob
  include TenantKit::Rails::RestoreJob
  tenant_kit background_job_class: "AppBackgroundJob"
end
