#!/usr/bin/env ruby
# frozen_string_literal: true

# One benchmark candidate run of tenant_kit, in its own process so that the
# harness measures its peak RSS alone:
#
#   ruby bench/candidates/tenant_kit_job.rb backup  --database DB --tenant-id 1 \
#        --output-dir DIR --storage-root DIR
#   ruby bench/candidates/tenant_kit_job.rb restore --database DB --archive A \
#        --tenant-id 1 --storage-root DIR [--purge] [--dry-run]
#
# Encrypted archives: `--recipient age1…` (backup), `--identity-file FILE`
# (restore).
#
# Passes a progress block (as BackupTenantJob/RestoreTenantJob do) that only
# counts events. Last stdout line: `RESULT <json>` with the call's result, the
# time of the call alone (`seconds`), the RSS before the call, the number of
# progress events per step, any lock/hold-off timings found in the result
# or the events, and the time between `lock` events per state (`read_seconds`:
# a restore's plan in its read transaction).

require "json"
require "optparse"
# This checkout's lib/ (TENANT_KIT_LIB=dir: another build, e.g. an installed gem's).
$LOAD_PATH.unshift(ENV["TENANT_KIT_LIB"] || File.expand_path("../../lib", __dir__))
require "tenant_kit"

def vm_kb(field)
  File.read("/proc/self/status")[/^#{field}:\s+(\d+)/, 1].to_i
end

# Every numeric value under a key that mentions a lock or writers being held
# off (the contract does not fix the key's name): { "path.to.key" => value }.
def lock_fields(value, path = [], found = {})
  case value
  when Hash
    value.each do |k, v|
      key = [*path, k.to_s]
      if v.is_a?(Numeric) && k.to_s.match?(/lock|snapshot|held|hold|writer|blocked/i)
        found[key.join(".")] = v
      else
        lock_fields(v, key, found)
      end
    end
  when Array
    value.each_with_index { |v, i| lock_fields(v, [*path, i.to_s], found) }
  end
  found
end

mode = ARGV.shift
options = { tenant_id: 1 }
OptionParser.new do |o|
  o.on("--database PATH") { |v| options[:database] = v }
  o.on("--tenant-id ID", Integer) { |v| options[:tenant_id] = v }
  o.on("--output-dir DIR") { |v| options[:output_dir] = v }
  o.on("--storage-root DIR") { |v| options[:storage_root] = v }
  o.on("--archive PATH") { |v| options[:archive] = v }
  o.on("--purge") { options[:purge] = true }
  o.on("--dry-run") { options[:dry_run] = true }
  o.on("--no-restore") { options[:restore] = false }
  o.on("--recipient KEY") { |v| (options[:recipients] ||= []) << v }
  o.on("--identity-file FILE") { |v| options[:identity_file] = v }
end.parse!
abort "usage: #{$PROGRAM_NAME} backup|restore OPTIONS" unless %w[backup restore].include?(mode)
unless TenantKit.respond_to?(mode)
  abort "TenantKit.#{mode} is not available in this build of tenant_kit (lib/tenant_kit.rb)"
end

rss_start = vm_kb("VmRSS")
counts = Hash.new(0)
lock_events = {}
# Time under each lock state, from the `lock` events (a restore's plan runs
# in a read transaction: "read").
lock_state = nil
lock_since = nil
held = Hash.new(0.0)
started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
result = TenantKit.public_send(mode, **options) do |event|
  counts[event[:step].to_s] += 1
  if event[:step].to_s == "lock"
    now = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    held[lock_state] += now - lock_since if lock_state
    lock_state = event[:state].to_s
    lock_since = now
  end
  found = lock_fields(event)
  lock_events["#{event[:step]}.#{found.keys.first}"] = found.values.first unless found.empty?
end
seconds = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
result = result.to_h
puts "RESULT #{JSON.generate(
  'result' => result, 'seconds' => seconds.round(4), 'rss_start_kb' => rss_start,
  'hwm_kb' => vm_kb('VmHWM'), 'events' => counts,
  'read_seconds' => held["read"].round(4), 'write_seconds' => held["write"].round(4), 'lock' => lock_fields(result).merge(lock_events),
)}"
