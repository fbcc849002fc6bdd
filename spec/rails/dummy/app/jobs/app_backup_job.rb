# frozen_string_literal: true

# BackupTenantJob as the issue-21 app writes it: its own job model.
class AppBackupJob < ApplicationJob
  include TenantKit::Rails::BackupJob
  tenant_kit background_job_class: "AppBackgroundJob", output_dir: -> { ENV.fetch("TENANT_KIT_DUMMY_BACKUPS") }
end
