# frozen_string_literal: true

module TenantKit
  module Rails
    module Dashboard
      # Recent backups and restores, one job's page and its JSON (polled).
      class JobsController < ApplicationController
        STATE_VALUES = JobView::STATES.group_by { |_, v| v }.transform_values { |pairs| pairs.map(&:first) }

        def index
          @state = params[:state].presence_in(%w[queued running done failed])
          @tenant = params[:tenant].presence
          @page = [params[:page].to_i, 1].max
          rows = filtered_jobs.order(job_model.primary_key => :desc)
                              .offset((@page - 1) * per_page).limit(per_page + 1).to_a
          @more = rows.size > per_page
          @jobs = rows.first(per_page).map { |row| view(row) }
          @states = %w[queued running done failed]
        end

        def show
          @job = view(find_job)
        end

        def progress
          render json: view(find_job).as_json
        rescue ::ActiveRecord::StatementInvalid => e
          raise unless e.message.match?(/locked|busy/i)

          # The restore holds the write lock: the page keeps its last state.
          render json: { busy: true }
        end

        private

        def per_page = Dashboard.per_page.to_i.clamp(1, 500)

        def view(row) = JobView.new(row, tenant_column: tenant_column)

        def scoped_jobs
          relation = job_model.unscoped
          relation = relation.where(tenant_column => tenant_scope_ids) if tenant_scoped?
          operation_filter(relation)
        end

        # Only rows of the backup and restore jobs (the table may hold others).
        def operation_filter(relation)
          columns = job_model.column_names
          if columns.include?("job_type")
            relation.where(job_type: %w[backup restore])
          elsif columns.include?("job_klass")
            names = [Dashboard.backup_job, Dashboard.restore_job].map(&:to_s) + %w[backup restore]
            relation.where(job_klass: names)
          else
            relation.where("#{job_model.connection.quote_column_name('job_progress')} LIKE ?", '%"operation"%')
          end
        end

        def filtered_jobs
          relation = scoped_jobs
          relation = relation.where(tenant_column => tenant_param(@tenant)) if @tenant
          return relation unless @state && job_model.column_names.include?("state")

          values = state_values(@state)
          relation.where(state: @state == "queued" ? values + [nil] : values)
        end

        # The column's values for a state: an enum (the app's own states)
        # is queried by its labels, and only by labels it has.
        def state_values(state)
          values = STATE_VALUES.fetch(state)
          enum = job_model.defined_enums["state"]
          enum ? values & enum.keys : values
        end

        def find_job
          scoped_jobs.find(params[:id])
        end
      end
    end
  end
end
