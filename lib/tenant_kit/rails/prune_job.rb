# frozen_string_literal: true

module TenantKit
  module Rails
    # The body of a retention job: deletes old archives with TenantKit.prune
    # (only files named tenant_<id>_<yyyymmddHHMMSS>.tar.gz or .tar.gz.age).
    #
    #   class PruneTenantBackupsJob < ApplicationJob
    #     include TenantKit::Rails::PruneJob
    #     tenant_kit_prune keep_last: 7, older_than: 30.days   # both: an archive goes when both say so
    #   end
    #
    # Run it on a schedule, e.g. with whenever (config/schedule.rb):
    #   every 1.day, at: "3:30 am" do
    #     runner "PruneTenantBackupsJob.perform_later"
    #   end
    # or solid_queue's config/recurring.yml:
    #   prune_tenant_backups:
    #     class: PruneTenantBackupsJob
    #     schedule: every day at 3:30am
    module PruneJob
      extend ActiveSupport::Concern

      DEFAULTS = { output_dir: nil, keep_last: 7, older_than: nil }.freeze

      included do
        class_attribute :tenant_kit_prune_settings, instance_writer: false, default: DEFAULTS
      end

      class_methods do
        # output_dir: (default: where the backup jobs write, Rails.root/tmp/tenant_backups),
        # keep_last:, older_than: (see TenantKit.prune).
        def tenant_kit_prune(**settings)
          unknown = settings.keys - DEFAULTS.keys
          raise ArgumentError, "unknown tenant_kit_prune setting(s) #{unknown.inspect} (known: #{DEFAULTS.keys.inspect})" if unknown.any?

          self.tenant_kit_prune_settings = tenant_kit_prune_settings.merge(settings)
        end
      end

      # Keywords override the class settings for one run. Returns what
      # TenantKit.prune returns (the deleted paths).
      def perform(**overrides)
        settings = tenant_kit_prune_settings.merge(overrides.symbolize_keys)
        dir = settings[:output_dir]
        dir = instance_exec(&dir) if dir.respond_to?(:call)
        dir ||= ::Rails.root.join("tmp", "tenant_backups")
        return [] unless File.directory?(dir.to_s)

        TenantKit.prune(output_dir: dir.to_s, **settings.slice(:keep_last, :older_than).compact)
      end
    end
  end
end
