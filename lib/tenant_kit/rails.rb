# frozen_string_literal: true

# The Rails side of tenant_kit. Load it from the app (it needs ActiveRecord,
# and uses ActiveStorage, ActiveJob and ActionMailer when present):
#
#   # config/initializers/tenant_kit.rb
#   require "tenant_kit/rails"
#
# - TenantKit::Rails::ProgressLogger: `log_progress` into background_jobs.job_progress
# - TenantKit::Rails::App: database path, ActiveStorage root, relation hints, polymorphic map
# - TenantKit::Rails::BackupJob / RestoreJob: the bodies of BackupTenantJob / RestoreTenantJob
# - generator: `bin/rails generate tenant_kit:job_progress` (the job_progress migration)
require "tenant_kit"
require "active_support"
require "active_support/core_ext"
require "active_record"

module TenantKit
  module Rails
  end
end

require_relative "rails/progress_logger"
require_relative "rails/app"
require_relative "rails/job"
require_relative "rails/backup_job"
require_relative "rails/restore_job"
