# frozen_string_literal: true

require "json"
require "time"

module TenantKit
  module Rails
    # Writes a job's progress into a text column (by default
    # `background_jobs.job_progress`) as JSON:
    #
    #   {
    #     "operation": "backup",            # or "restore"
    #     "state": "running",               # "done" / "failed" at the end
    #     "step": "dump_progress",          # the current step
    #     "summary": "tasks 400/900",       # the last summary line
    #     "table": "tasks", "processed": 400, "total": 900,  # the current counts
    #     "percent": 42.5,                  # whole job, 0..100, never goes back
    #     "error": null, "error_class": null,
    #     "started_at": "...", "updated_at": "...", "finished_at": null,
    #     "result": { ... },                # the TenantKit result's to_h when done
    #     "log": [ { "at": ..., "step": ..., "summary": ..., ...data }, ... ]
    #   }
    #
    # `log` keeps the newest `max_log` entries (default 200, oldest dropped).
    # Consecutive progress ticks of the same step (and table, for per-table
    # steps) replace each other in the log (the counts stay current, the log
    # keeps its history).
    #
    # == Locks
    #
    # The native side works on its own SQLite connection: a backup holds a
    # read transaction while it reads the rows, a restore one while it plans
    # and then a write transaction (BEGIN IMMEDIATE). Progress events arrive
    # in the job's thread while the native call waits for the block to
    # return, so a synchronous write that needs a lock the native side holds
    # could only wait for its busy timeout and fail. The native side says
    # when it takes and lets go of a lock with `lock` events (`state`:
    # "read", "write", "none"; emitted before a lock is taken and after it
    # is released), and the logger writes as it goes except:
    #
    # - during "write" (any journal mode);
    # - during "read" in rollback-journal mode (delete/truncate/persist),
    #   where a reader keeps writers from committing (in WAL it does not).
    #
    # Meanwhile the progress is kept in memory and written once the lock is
    # let go. `lock` events are not logged.
    #
    # Writes are throttled (`interval`, default 0.25 s; step changes and the
    # final state are always written). A write that still finds the database
    # busy (another process holds a lock) is not retried in the callback: the
    # state stays in memory and goes out with the next write; the final flush
    # retries for at most `flush_timeout` seconds, then logs a warning. So
    # nothing blocks forever and the logger never makes the job fail.
    #
    # Use it through the jobs (TenantKit::Rails::BackupJob / RestoreJob), or:
    #
    #   logger = TenantKit::Rails::ProgressLogger.new(background_job)
    #   logger.track(:backup) do |on_event|
    #     TenantKit.backup(**options, &on_event)
    #   end
    #   logger.log_progress("custom line", step: :notify, users: 3)
    class ProgressLogger
      DEFAULT_MAX_LOG = 200

      # Overall percent ranges per step: [from, to] (TenantKit::PHASES).
      PHASES = TenantKit::PHASES.transform_values { |steps| steps.transform_values { |p| p[:percent] }.freeze }.freeze
      # Ticks that replace the previous log entry when it is the same step
      # (for these: and the same table), so the log keeps its history.
      PER_TABLE_STEPS = TenantKit::TABLE_STEPS
      TICK_STEPS = TenantKit::TICK_STEPS
      ROLLBACK_JOURNALS = %w[delete truncate persist memory off].freeze

      attr_reader :record, :column, :max_log, :progress
      attr_accessor :interval, :flush_timeout

      # record: the ActiveRecord row (e.g. a BackgroundJob) holding `column`;
      # nil keeps the progress in memory only (still readable by #progress).
      def initialize(record, column: :job_progress, max_log: DEFAULT_MAX_LOG, interval: 0.25,
                     flush_timeout: 5, logger: nil)
        raise ArgumentError, "max_log: expected a positive Integer" unless max_log.is_a?(Integer) && max_log.positive?

        @record = record
        @column = column.to_s
        @max_log = max_log
        @interval = interval
        @flush_timeout = flush_timeout
        @logger = logger
        @hold = false
        @dirty = false
        @last_write = nil
        @tables_seen = []
        @table_count = nil
        @progress = load_existing
      end

      # Append one entry to the log and update the current state.
      # `summary` is a human line (built from the data when nil); `step:` the
      # step (Symbol or String); everything else is kept as data (counts
      # `processed:`/`total:` update the percent).
      def log_progress(summary = nil, step:, **data)
        step = step.to_sym
        now = Time.now.utc.iso8601(3)
        data = data.transform_keys(&:to_sym)
        at = data.delete(:at) || now
        summary ||= summarize(step, data)
        update_counts(step, data)
        append_log({ "at" => at, "step" => step.to_s, "summary" => summary }.merge(stringify(data)))
        @progress["step"] = step.to_s
        @progress["summary"] = summary
        @progress["updated_at"] = now
        @progress["state"] ||= "running"
        @dirty = true
        changed = step != @last_step
        @last_step = step
        write(force: changed)
        self
      end

      # A log entry after the work has ended (a mail sent): the final state,
      # step and percent stay as they are. Written now.
      def log_after(summary, step:, **data)
        now = Time.now.utc.iso8601(3)
        append_log({ "at" => now, "step" => step.to_s, "summary" => summary }.merge(stringify(data)))
        @progress["updated_at"] = now
        @dirty = true
        flush
      end

      # Run the block (which runs the native call with the yielded Proc as its
      # event block) under the lock policy of `operation` (:backup or
      # :restore). Records `done` or `failed` and writes the progress after
      # the native call has returned, whatever happened; re-raises errors.
      def track(operation, journal_mode: nil)
        operation = operation.to_sym
        raise ArgumentError, "operation: expected :backup or :restore" unless PHASES.key?(operation)

        @operation = operation
        @progress["operation"] = operation.to_s
        @progress["state"] = "running"
        @progress["started_at"] ||= Time.now.utc.iso8601(3)
        %w[error error_class finished_at result].each { |k| @progress.delete(k) }
        mode = (journal_mode || detect_journal_mode).to_s.downcase
        @readers_block_writers = ROLLBACK_JOURNALS.include?(mode) || mode.empty?
        on_event = lambda do |event|
          event = event.dup
          step = event.delete(:step).to_sym
          if step == :lock
            @hold = event[:state].to_s == "write" || (event[:state].to_s == "read" && @readers_block_writers)
            quietly { write(force: true) } # what was held back, now that it may
            next
          end
          quietly { log_progress(step: step, **event) } unless step == :failed
        end
        result = yield(on_event)
        @hold = false
        quietly { finish(:done, result: result) }
        result
      rescue Exception => e # rubocop:disable Lint/RescueException -- recorded, then re-raised
        @hold = false
        quietly { finish(:failed, error: e) }
        raise
      ensure
        @hold = false
        @operation = nil
      end

      # Mark the progress done or failed and write it now.
      def finish(state, error: nil, result: nil)
        @progress["state"] = state.to_s
        @progress["finished_at"] = Time.now.utc.iso8601(3)
        if error
          @progress["error"] = error.message
          @progress["error_class"] = error.class.name
          append_log({ "at" => @progress["finished_at"], "step" => "failed",
                       "summary" => "failed: #{error.message}", "error_class" => error.class.name })
          @progress["step"] = "failed"
        elsif state.to_s == "done"
          @progress["percent"] = 100.0
          @progress["step"] = "done" unless @progress["step"] == "done"
        end
        @progress["result"] = stringify(result) if result
        @dirty = true
        flush
      end

      # Write the pending progress now (retrying while busy for at most
      # flush_timeout seconds). Returns true when written.
      def flush
        return true unless @dirty
        return false if @hold

        deadline = monotonic + flush_timeout.to_f
        loop do
          return true if write(force: true)
          return false if monotonic > deadline

          sleep 0.05
        end
      end

      def to_json(*args)
        @progress.to_json(*args)
      end

      private

      def monotonic
        Process.clock_gettime(Process::CLOCK_MONOTONIC)
      end

      def load_existing
        raw = @record && @record.has_attribute?(@column) ? @record[@column] : nil
        parsed = raw.is_a?(String) && !raw.empty? ? JSON.parse(raw) : nil
        parsed.is_a?(Hash) ? parsed.merge("log" => Array(parsed["log"]).last(@max_log)) : { "log" => [] }
      rescue JSON::ParserError
        { "log" => [] }
      end

      # The progress log must never stop (or fail) the work it reports on.
      def quietly
        yield
      rescue StandardError => e
        log = @logger || (defined?(::Rails.logger) && ::Rails.logger)
        log&.error("[tenant_kit] job progress not written: #{e.class}: #{e.message}")
        nil
      end

      def append_log(entry)
        log = @progress["log"]
        last = log.last
        step = entry["step"].to_sym
        if last && last["step"] == entry["step"] &&
           (TICK_STEPS.include?(step) || (PER_TABLE_STEPS.include?(step) && last["table"] == entry["table"]))
          log[-1] = entry
        else
          log << entry
        end
        log.shift(log.size - @max_log) if log.size > @max_log
      end

      def update_counts(step, data)
        %w[table processed total].each { |k| @progress.delete(k) }
        @progress["table"] = data[:table].to_s if data[:table]
        processed = data[:processed] || data[:blobs]
        total = data[:total]
        if processed.is_a?(Numeric) && total.is_a?(Numeric)
          @progress["processed"] = processed
          @progress["total"] = total
        end
        @table_count = Array(data[:tables]).size if step == :scan_tables && data[:tables]
        @table_count = data[:tables] if step == :plan && data[:tables].is_a?(Integer)
        if data[:table] && PER_TABLE_STEPS.include?(step)
          key = "#{step}:#{data[:table]}"
          @tables_seen << key unless @tables_seen.include?(key)
        end
        (@progress["counts"] ||= {})[step.to_s] = stringify(data.reject { |_, v| v.is_a?(Array) || v.is_a?(Hash) }) if data.any?
        percent = percent_for(step, data, processed, total)
        @progress["percent"] = [@progress["percent"].to_f, percent].max.round(1) if percent
      end

      def percent_for(step, data, processed, total)
        range = PHASES.dig(@operation || @progress["operation"]&.to_sym, step)
        return nil unless range

        from, to = range
        counted = processed.is_a?(Numeric) && total.is_a?(Numeric)
        # No counts: the step has just begun (its range's start).
        fraction = counted ? (total.positive? ? processed.to_f / total : 1.0) : 0.0
        fraction = fraction.clamp(0.0, 1.0)
        if data[:table] && PER_TABLE_STEPS.include?(step) && @table_count.to_i.positive?
          done_tables = @tables_seen.count { |k| k.start_with?("#{step}:") } - 1
          fraction = ((done_tables + fraction) / @table_count).clamp(0.0, 1.0)
        end
        from + (to - from) * fraction
      end

      def summarize(step, data)
        parts = [step.to_s.tr("_", " ")]
        parts << data[:table].to_s if data[:table]
        done = data.key?(:processed) ? data[:processed] : data[:blobs]
        parts << "#{done}/#{data[:total]}" if !done.nil? && data.key?(:total)
        parts << "#{data[:rows]} rows" if step == :done && data[:rows]
        parts << "#{data[:restored]} rows restored" if step == :done && data[:restored]
        parts << "#{data[:purged]} purged" if step == :done && data[:purged]
        parts << "#{data[:insert]} to insert, #{data[:update]} to update, #{data[:conflicts]} conflicts" if step == :plan && data.key?(:insert)
        parts << data[:path].to_s if data[:path]
        parts << data[:error].to_s if data[:error]
        parts.join(" ")
      end

      def stringify(value)
        case value
        when Hash then value.to_h { |k, v| [k.to_s, stringify(v)] }
        when Array then value.map { |v| stringify(v) }
        when Symbol then value.to_s
        when String, Integer, Float, true, false, nil then value
        else value.respond_to?(:to_h) ? stringify(value.to_h) : value.to_s
        end
      end

      # One UPDATE of the column, never waiting on a lock: held while the
      # native side holds one, throttled, and a busy database just leaves the
      # progress pending. Returns true when the row was written.
      def write(force: false)
        return false if @hold
        return true unless @dirty
        if @record.nil?
          @dirty = false
          return true
        end
        return false if !force && @last_write && monotonic - @last_write < interval.to_f

        persist!
        @dirty = false
        @last_write = monotonic
        true
      rescue ActiveRecord::StatementInvalid, ActiveRecord::ConnectionTimeoutError => e
        raise unless busy?(e)

        warn_busy(e)
        false
      end

      def persist!
        json = JSON.generate(@progress)
        klass = @record.class
        updates = { @column => json }
        updates["updated_at"] = Time.now.utc if klass.column_names.include?("updated_at")
        count = without_busy_wait(klass.connection) { klass.unscoped.where(klass.primary_key => @record.id).update_all(updates) }
        if count.zero? && @record.id
          # The row is gone (a restore with purge removed this tenant's
          # background_jobs): write it again, keeping its id when free.
          attributes = @record.attributes.merge(@column => json).slice(*klass.column_names)
          attributes["updated_at"] = Time.now.utc if attributes.key?("updated_at")
          taken = klass.unscoped.exists?(klass.primary_key => @record.id)
          attributes.delete(klass.primary_key) if taken
          klass.unscoped.insert_all!([attributes.compact])
          # Follow the row to its new id (the old one came back with the archive).
          @record.id = klass.connection.select_value("SELECT last_insert_rowid()") if taken
        end
        @record[@column] = json
        @record.send(:clear_attribute_change, @column) if @record.respond_to?(:clear_attribute_change, true)
      end

      # Lower the sqlite3 busy timeout to zero around one write while the
      # native call runs: a lock held by someone else must not stall the
      # job's progress callback (the final flush retries instead).
      def without_busy_wait(connection)
        raw = connection.raw_connection
        return yield unless @operation && raw.respond_to?(:busy_timeout=)

        raw.busy_timeout = 0
        begin
          yield
        ensure
          raw.busy_timeout = sqlite_timeout(connection)
        end
      end

      def sqlite_timeout(connection)
        config = connection.pool.db_config.configuration_hash
        timeout = config[:timeout]
        timeout ? timeout.to_i : 0
      rescue StandardError
        0
      end

      def busy?(error)
        error.is_a?(ActiveRecord::ConnectionTimeoutError) ||
          error.cause.class.name.to_s.match?(/Busy|Locked/) || error.message.match?(/database is locked|busy/i)
      end

      def warn_busy(error)
        log = @logger || (defined?(::Rails.logger) && ::Rails.logger)
        log&.warn("[tenant_kit] job progress not written yet (database busy): #{error.message}")
      end

      def detect_journal_mode
        return nil unless @record

        @record.class.connection.select_value("PRAGMA journal_mode").to_s
      rescue StandardError
        nil
      end
    end
  end
end
