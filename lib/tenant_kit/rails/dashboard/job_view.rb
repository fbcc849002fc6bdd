# frozen_string_literal: true

require "json"
require "time"

module TenantKit
  module Rails
    module Dashboard
      # What the dashboard shows of one background_jobs row, read tolerantly:
      # the job_progress JSON the ProgressLogger writes, the state column
      # (running/done/completed/failed/planned...) and the job class column
      # (job_type or job_klass). Only these fields ever reach a page or the
      # JSON endpoint: never the job's arguments.
      class JobView
        TERMINAL = %w[done failed].freeze
        STATES = {
          "done" => "done", "completed" => "done", "succeeded" => "done", "finished" => "done",
          "failed" => "failed", "error" => "failed", "discarded" => "failed",
          "running" => "running", "working" => "running", "in_progress" => "running",
          "planned" => "queued", "queued" => "queued", "pending" => "queued", "enqueued" => "queued"
        }.freeze
        # Which SQLite lock the native side holds in a step, for progress
        # rows that do not record it (`lock` key): a backup reads in one
        # transaction, a restore reads while it plans and writes after.
        # From TenantKit::PHASES: { "backup" => { "read" => [step names] }, ... }.
        STEP_LOCKS = TenantKit::PHASES.to_h do |operation, steps|
          held = steps.reject { |_, phase| phase[:lock] == "none" }
          [operation.to_s, held.group_by { |_, phase| phase[:lock] }.transform_values { |pairs| pairs.map { |step, _| step.to_s }.freeze }.freeze]
        end.freeze

        attr_reader :record, :progress

        def initialize(record, tenant_column:)
          @record = record
          @tenant_column = tenant_column.to_s
          @progress = parse(record[:job_progress] || (record.has_attribute?(:job_progress) ? nil : {}))
        end

        def id = record.id
        def tenant_id = record.has_attribute?(@tenant_column) ? record[@tenant_column] : nil
        def dashboard = progress["dashboard"].is_a?(Hash) ? progress["dashboard"] : {}

        def operation
          op = progress["operation"] || (record.has_attribute?(:job_type) && record[:job_type]) ||
               (record.has_attribute?(:job_klass) && record[:job_klass]).to_s
          op = op.to_s
          return "restore" if op.match?(/restore/i)
          return "backup" if op.match?(/backup/i)

          op
        end

        def dry_run? = result["dry_run"] == true || (dashboard["dry_run"] == true && operation == "restore")
        def label = operation == "restore" && dry_run? ? "dry run" : operation

        # One state of queued/running/done/failed: a failure anywhere wins,
        # then an end, then the column, then the progress. A job that has
        # not moved for `stale_after` seconds is "stale": its worker died, or
        # its row came back from an archive (a backup's own row is in the
        # tenant's data, as it was while the backup ran).
        def state
          states = [progress["state"], record.has_attribute?(:state) ? record[:state] : nil]
                   .compact.map { |s| STATES.fetch(s.to_s, s.to_s) }
          state = %w[failed done running queued].find { |s| states.include?(s) } || "queued"
          TERMINAL.include?(state) || !stale? ? state : "stale"
        end

        def finished? = TERMINAL.include?(state) || state == "stale"

        def stale?
          last = time(progress["updated_at"]) || started_at ||
                 (record.has_attribute?(:updated_at) ? record[:updated_at] : nil)
          !last.nil? && Time.now.utc - last > Dashboard.stale_after.to_f
        end
        def percent = state == "done" ? 100.0 : progress["percent"].to_f.clamp(0.0, 100.0)
        def step = progress["step"]
        def summary = progress["summary"]
        def error = progress["error"]
        def error_class = progress["error_class"]
        def result = progress["result"].is_a?(Hash) ? progress["result"] : {}
        def log = Array(progress["log"]).select { |e| e.is_a?(Hash) }.reverse
        def archive_name = dashboard["archive"] || (result["path"] && File.basename(result["path"].to_s))

        def current_table
          return nil unless progress["table"]

          { "table" => progress["table"], "processed" => progress["processed"], "total" => progress["total"] }
        end

        # "read", "write" or "none" while it runs (recorded, else from the step).
        def lock
          return "none" if finished?
          return progress["lock"].to_s if progress["lock"]

          locks = STEP_LOCKS.fetch(operation, {})
          locks.find { |_, steps| steps.include?(step.to_s) }&.first || "none"
        end

        def started_at = time(progress["started_at"]) || (record.has_attribute?(:created_at) ? record[:created_at] : nil)
        def finished_at = time(progress["finished_at"])

        def duration
          return nil unless started_at

          ((finished_at || Time.now.utc) - started_at).round(1)
        end

        def archive_bytes = result["bytes"] || dashboard["archive_bytes"]

        # Per-table counts: planned (dry run), restored and purged (restore),
        # or the backup's rows per table: { table => { column => count } }.
        def table_counts
          sources = operation == "restore" ? (dry_run? ? %w[planned] : %w[restored purged]) : %w[tables]
          sources.each_with_object({}) do |source, counts|
            next unless result[source].is_a?(Hash)

            result[source].each do |table, value|
              row = (counts[table.to_s] ||= {})
              if value.is_a?(Hash)
                value.each { |column, n| row[sources.size > 1 ? "#{source} #{column}" : column.to_s] = n }
              else
                row[sources == %w[tables] ? "rows" : source] = value
              end
            end
          end
        end

        def conflicts = Array(result["conflicts"]).select { |c| c.is_a?(Hash) }

        # Result figures that are plain numbers or flags (no paths, no keys).
        def result_summary
          keys = %w[dry_run rows blobs blob_bytes bytes restored written purged conflict_count tenant_row_created
                    duration_ms plan_ms lock_ms]
          result.slice(*keys).select { |_, v| v.is_a?(Numeric) || v == true || v == false || v.is_a?(Hash) }
        end

        def as_json(*)
          {
            id: id, tenant_id: tenant_id.is_a?(String) && !tenant_id.valid_encoding? ? tenant_id.unpack1("H*") : tenant_id,
            operation: operation, label: label, state: state, finished: finished?, percent: percent.round(1),
            step: step, summary: summary, current_table: current_table, lock: lock,
            error: error, error_class: error_class, started_at: started_at&.iso8601, duration: duration,
            archive: archive_name, archive_bytes: archive_bytes, log: log,
            table_counts: table_counts, conflicts: conflicts, result: result_summary
          }
        end

        private

        def parse(raw)
          return raw if raw.is_a?(Hash)

          parsed = raw.to_s.empty? ? {} : JSON.parse(raw.to_s)
          parsed.is_a?(Hash) ? parsed : {}
        rescue JSON::ParserError
          {}
        end

        def time(value)
          value && Time.iso8601(value.to_s)
        rescue ArgumentError
          nil
        end
      end
    end
  end
end
