# frozen_string_literal: true

require "json"

# The progress vocabulary, read from the extension (the core defines every
# step once, src/progress/steps.rs), so Ruby never spells a step name again.
module TenantKit
  vocabulary = JSON.parse(Native.steps_json)

  # Every step a progress event can have, as the block receives it (a Symbol).
  STEPS = vocabulary["steps"].map(&:to_sym).freeze
  # Steps that count one table's rows (`table:`, `processed:`, `total:`).
  TABLE_STEPS = vocabulary["per_table"].map(&:to_sym).freeze
  # Steps that repeat with the counts of one piece of work.
  TICK_STEPS = vocabulary["ticks"].map(&:to_sym).freeze
  # The `state:` of a `lock` event.
  LOCK_STATES = vocabulary["locks"].freeze
  # Per operation (:backup, :restore), its steps in order:
  # { step => { percent: [from, to], lock: "none" | "read" | "write" } }.
  PHASES = vocabulary["phases"].to_h do |operation, phases|
    steps = phases.to_h do |phase|
      [phase["step"].to_sym, { percent: phase["percent"].freeze, lock: phase["lock"].freeze }.freeze]
    end
    [operation.to_sym, steps.freeze]
  end.freeze
end
