# frozen_string_literal: true

# The Rails side of tenant_kit. Load it from the app (it needs ActiveRecord,
# and uses ActiveStorage, ActiveJob and ActionMailer when present):
#
#   # config/initializers/tenant_kit.rb
#   require "tenant_kit/rails"
#
# - TenantKit::Rails::ProgressLogger: `log_progress` into background_jobs.job_progress
# - TenantKit::Rails::App: database path, ActiveStorage root, relation hints, polymorphic map
# - TenantKit::Rails.config: the app's TenantKit::Config, built from the model reflections
# - TenantKit::Rails::CounterCaches: recounts counter caches after a restore or purge (RestoreJob does)
# - TenantKit::Rails::BackupJob / RestoreJob: the bodies of BackupTenantJob / RestoreTenantJob
# - TenantKit::Rails::PruneJob: the body of a retention job (TenantKit.prune)
# - generators: `bin/rails generate tenant_kit:job_progress` (the job_progress migration),
#   `bin/rails generate tenant_kit:mailer` (TenantMailer with its four actions and views)
# - at boot: a warning naming the mail actions the configured mailer lacks
require "tenant_kit"
require "active_support"
require "active_support/core_ext"
require "active_record"

module TenantKit
  module Rails
    # The app's scope rules from its models (see App.config):
    #   TenantKit.backup(database: ..., tenant_id: 1, output_dir: ..., config: TenantKit::Rails.config)
    #   TenantKit.explain(database: TenantKit::Rails::App.database_path, config: TenantKit::Rails.config)
    def self.config(tenant_column: "tenant_id", skip_tables: [])
      App.config(tenant_column: tenant_column, skip_tables: skip_tables)
    end
  end
end

require_relative "rails/progress_logger"
require_relative "rails/app"
require_relative "rails/counter_caches"
require_relative "rails/after_commit"
require_relative "rails/argument_names"
require_relative "rails/progress_record"
require_relative "rails/job"
require_relative "rails/backup_job"
require_relative "rails/restore_job"
require_relative "rails/prune_job"
require_relative "rails/mailer_check"
require_relative "rails/railtie" if defined?(::Rails::Railtie)
