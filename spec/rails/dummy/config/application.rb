# frozen_string_literal: true

# A Rails 6.1 app for tenant_kit's Rails specs, booted from the system's
# gems (no Bundler): ActiveRecord on SQLite, ActiveStorage on the Disk
# service, ActiveJob, ActionMailer. Its database and storage live in the
# directories named by TENANT_KIT_DUMMY_DB and TENANT_KIT_DUMMY_STORAGE
# (spec/rails/rails_helper.rb sets them to a temporary directory).
require "rails"
require "active_record/railtie"
require "action_controller/railtie"
require "action_view/railtie"
require "active_storage/engine"
require "active_job/railtie"
require "action_mailer/railtie"
require "logger"

require "tenant_kit/rails"
require "tenant_kit/rails/dashboard"

module TenantKitDummy
  class Application < ::Rails::Application
    config.root = File.expand_path("..", __dir__)
    config.load_defaults 6.1
    config.eager_load = false
    config.cache_classes = true
    config.secret_key_base = "tenant_kit-dummy-secret-key-base-for-specs-only"
    config.logger = Logger.new(nil)
    config.log_level = :warn
    config.active_support.deprecation = :silence
    config.active_storage.service = :local
    config.active_storage.analyzers = []
    config.active_storage.previewers = []
    config.active_job.queue_adapter = :inline
    config.action_mailer.delivery_method = :test
    config.action_mailer.default_url_options = { host: "example.test" }
  end
end
