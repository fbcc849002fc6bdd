# frozen_string_literal: true

class BackupTenantJob < ApplicationJob
  include TenantKit::Rails::BackupJob
  tenant_kit output_dir: -> { ENV.fetch("TENANT_KIT_DUMMY_BACKUPS") }
end
