# frozen_string_literal: true

module TenantKit
  module Rails
    # At boot, says which mails the jobs cannot send: a job skips a mail
    # whose action its mailer lacks (it logs that, at the time, where nobody
    # looks), so an app without `backup_failed` learns of failures never.
    module MailerCheck
      ACTIONS = {
        backup: %w[backup_created backup_failed],
        restore: %w[restore_completed restore_failed]
      }.freeze

      module_function

      # { "TenantMailer" => ["backup_failed", ...] } for the mailers of the
      # loaded jobs (the default TenantMailer when none is loaded yet).
      def missing(jobs = loaded_jobs)
        wanted = Hash.new { |h, k| h[k] = [] }
        if jobs.empty?
          wanted[Job::DEFAULTS[:mailer]].concat(ACTIONS.values.flatten)
        else
          jobs.each do |job|
            mailer = job.tenant_kit_settings[:mailer]
            wanted[mailer].concat(ACTIONS.fetch(job < BackupJob ? :backup : :restore)) if mailer
          end
        end
        wanted.each_with_object({}) do |(name, actions), out|
          mailer = name.is_a?(Class) ? name : name.to_s.safe_constantize
          lacking = actions.uniq - (mailer.respond_to?(:action_methods) ? mailer.action_methods.to_a : [])
          out[mailer_name(name)] = lacking if lacking.any?
        end
      end

      def warn_missing(logger = ::Rails.logger)
        missing.each do |name, actions|
          message = "[tenant_kit] #{name} has no #{actions.join(', ')}: those mails are not sent " \
                    "(`bin/rails generate tenant_kit:mailer` writes all four; `tenant_kit mailer: nil` sends none)"
          logger&.warn(message)
          Kernel.warn(message)
        end
      end

      def loaded_jobs
        return [] unless defined?(::ActiveJob::Base)

        ::ActiveJob::Base.descendants.select { |job| job < Job && job.name }
      end

      def mailer_name(name)
        name.is_a?(Class) ? name.name : name.to_s
      end
    end
  end
end
