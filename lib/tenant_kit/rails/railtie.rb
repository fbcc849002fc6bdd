# frozen_string_literal: true

module TenantKit
  module Rails
    # Boot-time checks of the app's tenant_kit setup.
    class Railtie < ::Rails::Railtie
      config.after_initialize { TenantKit::Rails::MailerCheck.warn_missing }

      generators do
        require "generators/tenant_kit/job_progress/job_progress_generator"
        require "generators/tenant_kit/mailer/mailer_generator"
      end
    end
  end
end
