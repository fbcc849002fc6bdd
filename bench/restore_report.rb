# frozen_string_literal: true

# The restore part of bench/run's report (issue 19): every restore case next
# to its floor and its ActiveRecord baseline, measured in the same run, and
# the targets. Mixed into Bench::Harness (needs `selected?`, `fmt_*`, `ratio`,
# `verdict`, `table`).
module Bench
  module RestoreReport
    # case => the floor that moves the same rows by plain SQL.
    FLOOR_OF = {
      "tk_restore_all" => "floor_insert", "ruby_restore_all" => "floor_insert",
      "tk_restore_all_fk" => "floor_insert", "tk_purge_fk" => "floor_delete",
      "tk_restore_new" => "floor_insert_new"
    }.freeze
    # case => the ActiveRecord job doing the same (for a new database: the
    # job that writes every row, (h)).
    BASELINE_OF = {
      "tk_restore" => "ruby_restore", "tk_restore_all" => "ruby_restore_all",
      "tk_restore_all_fk" => "ruby_restore_all", "tk_restore_new" => "ruby_restore_all"
    }.freeze

    # Issue 19's targets.
    PURGE_LOCK_VS_FLOOR = 2.0
    INSERT_LOCK_VS_FLOOR = 1.5
    INSERT_TOTAL_VS_FLOOR = 3.0
    RESTORE_VS_AR = 20.0
    UNCHANGED_TOTAL_S = 1.2
    UNCHANGED_READ_S = 0.5

    def restore_cases_table(s)
      rows = RESTORES.select { |c| s[c] }.map do |c|
        st = s[c]
        floor = s[FLOOR_OF[c]] || {}
        base = s[BASELINE_OF[c]] || {}
        [CANDIDATES[c], fmt_s(st[:seconds]), fmt_s(st[:lock_seconds]), fmt_s(st[:read_seconds]), fmt_mib(st[:peak_kb]),
         fmt_ratio(ratio(st[:seconds], floor[:seconds])), fmt_ratio(ratio(st[:lock_seconds], floor[:seconds])),
         BASELINE_OF[c] ? "#{fmt_ratio(ratio(base[:seconds], st[:seconds]))} (#{CANDIDATES[BASELINE_OF[c]][0, 3]})" : "–"]
      end
      table(["case", "time", "write lock", "plan read", "peak RSS", "time / floor", "lock / floor", "AR / time"], rows)
    end

    def restore_target_rows(s)
      e, g, i, j = s.values_at("tk_restore", "tk_restore_all", "tk_restore_all_fk", "tk_purge_fk").map { |x| x || {} }
      del = s["floor_delete"] || {}
      ins = s["floor_insert"] || {}
      [
        ["purge only, unindexed child keys: write lock ≤ #{PURGE_LOCK_VS_FLOOR}× the delete floor",
         "#{fmt_s(j[:lock_seconds])} vs #{fmt_s(del[:seconds])}: #{fmt_ratio(ratio(j[:lock_seconds], del[:seconds]))}",
         bound(ratio(j[:lock_seconds], del[:seconds]), PURGE_LOCK_VS_FLOOR)],
        *[["(g)", g], ["(i)", i]].flat_map { |label, x| deleted_first_rows(label, x, ins, s["ruby_restore_all"] || {}) },
        ["unchanged tenant (e): total ≤ #{UNCHANGED_TOTAL_S} s", fmt_s(e[:seconds]), bound(e[:seconds], UNCHANGED_TOTAL_S)],
        ["unchanged tenant (e): plan's read transaction ≤ #{UNCHANGED_READ_S} s", fmt_s(e[:read_seconds]),
         bound(e[:read_seconds], UNCHANGED_READ_S)],
        ["unchanged tenant (e): ≥ #{RESTORE_VS_AR.to_i}× the Ruby/AR baseline (f)",
         fmt_ratio(ratio((s["ruby_restore"] || {})[:seconds], e[:seconds])),
         verdict(ratio((s["ruby_restore"] || {})[:seconds], e[:seconds])&.>=(RESTORE_VS_AR))],
        rss_row(s),
      ]
    end

    private

    def deleted_first_rows(label, x, floor, ar)
      return [] unless x[:seconds]

      [
        ["#{label} deleted first: write lock ≤ #{INSERT_LOCK_VS_FLOOR}× the insert floor",
         "#{fmt_s(x[:lock_seconds])} vs #{fmt_s(floor[:seconds])}: #{fmt_ratio(ratio(x[:lock_seconds], floor[:seconds]))}",
         bound(ratio(x[:lock_seconds], floor[:seconds]), INSERT_LOCK_VS_FLOOR)],
        ["#{label} deleted first: total ≤ #{INSERT_TOTAL_VS_FLOOR}× the insert floor",
         "#{fmt_s(x[:seconds])}: #{fmt_ratio(ratio(x[:seconds], floor[:seconds]))}",
         bound(ratio(x[:seconds], floor[:seconds]), INSERT_TOTAL_VS_FLOOR)],
        ["#{label} deleted first: ≥ #{RESTORE_VS_AR.to_i}× the Ruby/AR baseline (h)", fmt_ratio(ratio(ar[:seconds], x[:seconds])),
         verdict(ratio(ar[:seconds], x[:seconds])&.>=(RESTORE_VS_AR))],
      ]
    end

    # Peak RSS of every TenantKit restore ≤ 128 MiB, and the 3x tenant's at
    # most FLAT_RSS_GROWTH × the 1x tenant's (same case, (l) vs (g)).
    def rss_row(s)
      peaks = RESTORES.select { |c| c.start_with?("tk_") && s[c] }.map { |c| s[c][:peak_kb] }.compact
      g = (s["tk_restore_all"] || {})[:peak_kb]
      l = (s["tk_restore_all_3x"] || {})[:peak_kb]
      flat = g && l ? l <= g * FLAT_RSS_GROWTH : nil
      under = peaks.empty? ? nil : peaks.max < RESTORE_RSS_LIMIT_MIB * MIB
      ["restore peak RSS < #{RESTORE_RSS_LIMIT_MIB} MiB, flat at 3× the tenant (l ≤ #{FLAT_RSS_GROWTH}× g)",
       "max #{fmt_mib(peaks.max)}; 3x #{fmt_mib(l)} vs 1x #{fmt_mib(g)}",
       verdict(under.nil? && flat.nil? ? nil : under != false && flat != false)]
    end

    def bound(value, limit)
      verdict(value && value <= limit)
    end
  end
end
