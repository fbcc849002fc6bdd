# frozen_string_literal: true

module TenantKit
  module Rails
    # Runs a block once the connection's open transaction commits (at once
    # when none is open; never when it rolls back). Rails 7.2 enqueues jobs
    # after commit by itself; on 6.1 a job enqueued inside a transaction
    # would run (or be picked up by a worker) before its own BackgroundJob
    # row exists, and an inline job would meet the transaction's lock.
    #
    # ActiveRecord calls these methods on every object enrolled with
    # `add_transaction_record` (the same protocol as a model's after_commit).
    class AfterCommit
      def self.run(connection, &block)
        return block.call unless connection.transaction_open?

        connection.add_transaction_record(new(block))
        nil
      end

      def initialize(block)
        @block = block
      end

      def trigger_transactional_callbacks?
        true
      end

      def before_committed!; end

      def committed!(should_run_callbacks: true)
        @block.call if should_run_callbacks
      end

      def rolledback!(force_restore_state: false, should_run_callbacks: true); end
    end
  end
end
