# frozen_string_literal: true

# Databases the restore cases of bench/run start from, made from the
# generated "main" data (issue 19):
#
# - the child-key variant: the same rows, with the foreign keys a Rails app
#   declares (`add_foreign_key` / `t.references foreign_key: true`) on child
#   keys that have no index, as real apps often leave them. With foreign keys
#   on, SQLite looks up the children of every deleted parent row, by a full
#   scan of the child table when no index serves the key;
# - an empty database: the same schema, no rows (a restore into a new
#   database).
require "sqlite3"
require "fileutils"

module Bench
  module Variants
    # child table => [[child column, parent table], ...]. Only
    # `tags_tasks.tag_id` and `.task_id` and `tasks.project_id` are served by
    # an index of the app's schema; the others are bare.
    CHILD_KEYS = {
      "projects" => [%w[team_id teams]],
      "tasks" => [%w[project_id projects], %w[user_id users], %w[parent_id tasks]],
      "time_entries" => [%w[task_id tasks], %w[user_id users]],
      "tags_tasks" => [%w[tag_id tags], %w[task_id tasks]],
      "comments" => [%w[user_id users]],
    }.freeze

    module_function

    # The schema's statements, tables first, then indexes (created after the
    # rows are in: one sort each).
    def schema(conn)
      rows = conn.execute("SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL " \
                          "AND name NOT LIKE 'sqlite_%' ORDER BY rowid")
      tables = rows.select { |type, _, _| type == "table" }.map { |_, name, sql| [name, sql] }
      others = rows.reject { |type, _, _| type == "table" }.map { |_, _, sql| sql }
      [tables, others]
    end

    # CREATE TABLE `sql` with the declared foreign keys of CHILD_KEYS added.
    def with_child_keys(name, sql)
      keys = CHILD_KEYS.fetch(name, [])
      return sql if keys.empty?

      clauses = keys.map { |column, parent| %(FOREIGN KEY ("#{column}") REFERENCES "#{parent}" ("id")) }
      raise "unexpected CREATE TABLE for #{name}" unless sql.rstrip.end_with?(")")

      "#{sql.rstrip.chomp(')')}, #{clauses.join(', ')})"
    end

    # `target`: a copy of `source` (rows, sequences, indexes, journal mode
    # delete) whose tables declare CHILD_KEYS. Refuses data that breaks them.
    def build_child_key_variant(source, target)
      build(source, target) do |conn, tables|
        tables.each { |name, _| conn.execute(%(INSERT INTO main."#{name}" SELECT * FROM src."#{name}")) }
        conn.execute("INSERT INTO main.sqlite_sequence SELECT * FROM src.sqlite_sequence")
      end
      open_db(target) do |conn|
        broken = conn.execute("PRAGMA foreign_key_check").first(3)
        raise "the child-key variant breaks its foreign keys: #{broken.inspect}" unless broken.empty?
      end
    end

    # `target`: `source`'s schema without rows.
    def build_empty(source, target)
      build(source, target, child_keys: false) { |_conn, _tables| nil }
    end

    # The block's value (this sqlite3 gem's `Database.new` with a block
    # returns the database).
    def open_db(path, **options)
      conn = SQLite3::Database.new(path, **options)
      yield conn
    ensure
      conn&.close
    end

    def build(source, target, child_keys: true)
      FileUtils.rm_f([target, "#{target}-journal"])
      partial = "#{target}.partial"
      FileUtils.rm_f(partial)
      open_db(partial) do |conn|
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("ATTACH ? AS src", [source])
        tables, others = open_db(source, readonly: true) { |src| schema(src) }
        conn.transaction do
          tables.each { |name, sql| conn.execute(child_keys ? with_child_keys(name, sql) : sql) }
          yield conn, tables
          others.each { |sql| conn.execute(sql) }
        end
        conn.execute("DETACH src")
        conn.execute("PRAGMA journal_mode = DELETE")
      end
      File.rename(partial, target)
    end
  end
end
