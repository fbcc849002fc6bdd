# frozen_string_literal: true

module TenantKit
  module Rails
    module Dashboard
      # The backup job's archives: list, download, verify, dry run, restore.
      # An archive is named in the URL but found only among the files the
      # jobs wrote (see Archives), and only when its manifest's tenant is
      # in the user's scope: anything else is a 404.
      class ArchivesController < ApplicationController
        include Enqueue

        before_action :find_archive, except: :index

        def index
          @tenant = params[:tenant].presence
          ids = tenant_scope_ids
          ids = ids ? ids.select { |id| id.to_s == @tenant } : [tenant_param(@tenant)] if @tenant
          @archives = archives.list(tenant_ids: ids)
        end

        def show
          @dry_run = last_dry_run
        end

        def download
          send_file @archive.path, filename: @archive.name, type: "application/gzip", disposition: "attachment"
        end

        def verify
          @verification = TenantKit.verify(archive: @archive.path)
        rescue TenantKit::Error => e
          @verification_error = e
        ensure
          @dry_run = last_dry_run
          render :show, status: :ok unless performed?
        end

        # A dry run with purge plans the purge too (what a purge restore deletes).
        def dry_run
          purge = params[:purge] == "1"
          record = enqueue(:restore, @archive.tenant_id, note(dry_run: true, purge: purge),
                           archive_path: @archive.path, dry_run: true, purge: purge)
          redirect_to job_path(record.id)
        end

        # Only after a finished dry run of this very file with the same purge
        # switch, and only when the form names the tenant it restores.
        def restore
          purge = params[:purge] == "1"
          unless last_dry_run(purge: purge)
            return refuse("Run a dry run#{' with purge' if purge} of #{@archive.name} first: " \
                          "a restore follows a dry run of the same archive.")
          end
          unless params[:confirm_tenant].to_s.strip == @archive.tenant_id.to_s
            return refuse("Type the tenant id #{@archive.tenant_id} to confirm the restore.")
          end

          record = enqueue(:restore, @archive.tenant_id, note(dry_run: false, purge: purge),
                           archive_path: @archive.path, dry_run: false, purge: purge)
          redirect_to job_path(record.id)
        end

        private

        def find_archive
          request.format = :html # the name's ".gz" is not a format
          @archive = archives.find(params[:name], tenant_ids: tenant_scope_ids)
          raise Archives::NotFound, "no archive" if @archive.tenant_id.nil?
        end

        def note(dry_run:, purge:)
          { "archive" => @archive.name, "archive_identity" => @archive.identity, "archive_bytes" => @archive.size,
            "dry_run" => dry_run, "purge" => purge }
        end

        def refuse(message)
          flash.now[:alert] = message
          @dry_run = last_dry_run
          render :show, status: :unprocessable_entity
        end

        # The newest finished dry run of this file (same name, size and mtime)
        # for its tenant (with that purge switch, when given), as a JobView.
        def last_dry_run(purge: nil)
          rows = job_model.unscoped.where(tenant_column => @archive.tenant_id)
                          .order(job_model.primary_key => :desc).limit(200)
          rows.lazy.map { |row| JobView.new(row, tenant_column: tenant_column) }.find do |job|
            job.operation == "restore" && job.dry_run? && job.state == "done" &&
              job.dashboard["archive"] == @archive.name && job.dashboard["archive_identity"] == @archive.identity &&
              (purge.nil? || job.dashboard["purge"] == purge)
          end
        end
      end
    end
  end
end
