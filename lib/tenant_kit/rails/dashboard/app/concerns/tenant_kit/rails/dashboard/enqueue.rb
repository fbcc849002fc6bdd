# frozen_string_literal: true

module TenantKit
  module Rails
    module Dashboard
      # Creates the job's BackgroundJob row (so the page can follow it from
      # the start) and hands it to the app's job. What the dashboard notes
      # in job_progress["dashboard"] (archive name and identity, dry run,
      # purge) is kept by the ProgressLogger and lets a restore check its
      # dry run.
      module Enqueue
        private

        def enqueue(operation, tenant_id, note, **arguments)
          job = Dashboard.constant(operation == :backup ? :backup_job : :restore_job)
          record = job_model.new(job_attributes(operation, job, tenant_id, note))
          record.save!
          job.perform_later(tenant: tenant_id, background_job: record, **arguments)
          record
        end

        def job_attributes(operation, job, tenant_id, note)
          columns = job_model.column_names
          progress = { "operation" => operation.to_s, "state" => "queued", "dashboard" => note, "log" => [] }
          attributes = { "job_progress" => JSON.generate(progress) }
          attributes[tenant_column] = tenant_id if columns.include?(tenant_column)
          attributes["job_type"] = operation.to_s if columns.include?("job_type")
          attributes["job_klass"] = job.name if columns.include?("job_klass")
          attributes
        end
      end
    end
  end
end
