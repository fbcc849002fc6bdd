# frozen_string_literal: true

# Loads tenant_kit from this checkout (lib/), with the extension that
# script/compile placed in lib/tenant_kit/.
REPO_ROOT = File.expand_path("..", __dir__)
lib = File.join(REPO_ROOT, "lib")
$LOAD_PATH.unshift(lib) unless $LOAD_PATH.include?(lib)

unless Dir[File.join(lib, "tenant_kit", "**", "tenant_kit_ext.so")].any?
  abort "spec_helper: lib/tenant_kit/tenant_kit_ext.so is missing: run script/compile first"
end

require "tenant_kit"

module SpecHelpers
  def monotonic
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end

  # Wait (at most `timeout` seconds) until the block is true.
  def wait_until(timeout = 5)
    deadline = monotonic + timeout
    until yield
      raise "condition not met within #{timeout}s" if monotonic > deadline

      sleep 0.01
    end
  end

  # Run the block with file descriptor 2 sent to /dev/null: Rust prints a
  # panic's message there before the boundary turns it into an exception.
  def silence_stderr
    saved = STDERR.dup
    STDERR.reopen(File::NULL)
    yield
  ensure
    STDERR.reopen(saved)
    saved.close
  end
end

RSpec.configure do |config|
  config.include SpecHelpers
  config.disable_monkey_patching!
  config.expect_with(:rspec) { |c| c.syntax = :expect }
  config.order = :random
  Kernel.srand config.seed
end
