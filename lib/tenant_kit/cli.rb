# frozen_string_literal: true

require "optparse"
require "json"
require "yaml"
require "tenant_kit"
require_relative "cli/explain_text"

module TenantKit
  # The `tenant_kit` command: backup, restore, verify, prune and explain from a shell,
  # with the same options as the Ruby API. A progress bar on a terminal,
  # plain lines otherwise, JSON events with --json; the exit status says
  # what went wrong (see EXIT_CODES). Ctrl-C stops the work cleanly: a
  # backup leaves no archive, a restore rolls back.
  class CLI
    EXIT_CODES = {
      "ArgumentError" => 2, # bad options, also OptionParser's errors
      "TenantKit::ArchiveError" => 3,
      "TenantKit::IntegrityError" => 4,
      "TenantKit::SchemaError" => 5,
      "TenantKit::ConflictError" => 6, # also a dry run that found conflicts
      "TenantKit::DatabaseError" => 7,
      "TenantKit::FileError" => 8,
      "TenantKit::DecryptionError" => 9, # no identity or passphrase fits
      "TenantKit::Error" => 1,
      "TenantKit::InternalError" => 70,
      "Interrupt" => 130, # Ctrl-C, as shells report SIGINT
      "TenantKit::Cancelled" => 130
    }.freeze

    COMMANDS = %w[backup restore verify prune explain].freeze

    REQUIRED = {
      "backup" => %i[database tenant_id output_dir],
      "restore" => %i[database archive tenant_id],
      "verify" => %i[archive],
      "prune" => %i[output_dir],
      "explain" => %i[database]
    }.freeze

    USAGE = <<~TEXT
      Usage: tenant_kit COMMAND [options]

      Commands:
        backup    back up one tenant into OUTPUT_DIR/tenant_<id>_<stamp>.tar.gz
        restore   restore an archive into a tenant (dry run, purge, remap, copy with new ids)
        verify    check an archive's hashes and counts, without a database
        prune     delete old archives of OUTPUT_DIR
        explain   which tables and references a backup would follow, and why

      `tenant_kit COMMAND --help` lists a command's options.
      Exit status: 0 done, 1 other tenant_kit error, 2 bad arguments, 3 broken or hostile
      archive, 4 checksum or count mismatch, 5 schema mismatch, 6 conflicts (a dry run
      that found some too), 7 database error, 8 file error, 70 bug, 130 interrupted.
    TEXT

    def initialize(argv, out: $stdout, err: $stderr)
      @argv = argv.dup
      @out = out
      @err = err
    end

    # Runs the command; returns the exit status.
    def run
      command = @argv.shift
      case command
      when nil, "-h", "--help", "help" then say(USAGE)
      when "-v", "--version", "version" then say(TenantKit::VERSION)
      when *COMMANDS then run_command(command)
      else fail_with(ArgumentError.new("unknown command #{command.inspect}\n\n#{USAGE}"))
      end
    end

    private

    def say(text)
      @out.puts(text)
      0
    end

    def run_command(command)
      options = parse(command)
      return 0 if options.nil? # --help

      @json = options.delete(:json)
      progress = Progress.new(@json ? nil : @err, json_out: @json ? @out : nil)
      result = public_send_command(command, options, progress)
      progress.finish
      report(command, result)
    rescue OptionParser::ParseError => e
      fail_with(ArgumentError.new(e.message))
    rescue Interrupt, StandardError => e
      progress&.finish
      fail_with(e)
    end

    def public_send_command(command, options, progress)
      case command
      when "backup" then TenantKit.backup(**options) { |event| progress.event(event) }
      when "restore" then TenantKit.restore(**options) { |event| progress.event(event) }
      when "verify" then TenantKit.verify(**options) { |event| progress.event(event) }
      when "prune" then TenantKit.prune(**options)
      when "explain" then TenantKit.explain(**options)
      end
    end

    # The exit status of a finished command; the result on stdout.
    def report(command, result)
      hash = result.respond_to?(:to_h) && !result.is_a?(Array) ? result.to_h : { deleted: result }
      if @json
        @out.puts(JSON.generate({ result: printable(hash) }))
      else
        @out.puts(summary(command, hash))
      end
      command == "restore" && hash[:dry_run] && hash.fetch(:conflict_count, 0).positive? ? 6 : 0
    end

    def summary(command, hash)
      case command
      when "backup"
        "#{hash[:path]}: #{hash[:tables].values.sum} rows in #{hash[:tables].size} tables, " \
          "#{hash[:blobs]} files, #{hash[:bytes]} bytes"
      when "restore"
        restore_summary(hash)
      when "verify"
        "#{hash[:path]}: ok, tenant #{hash[:tenant_id].inspect}, #{hash[:rows]} rows, #{hash[:blobs]} files"
      when "prune"
        deleted = hash[:deleted]
        (["#{deleted.size} archive(s) deleted"] + deleted).join("\n")
      when "explain" then ExplainText.new(hash).to_s
      end
    end

    def restore_summary(hash)
      if hash[:dry_run]
        lines = hash[:planned].map do |table, c|
          "  #{table}: insert #{c[:insert]}, update #{c[:update]}, unchanged #{c[:unchanged]}, purge #{c[:purge]}"
        end
        conflicts = hash[:conflicts].map { |c| "  conflict: #{c[:table]} #{c[:key]} (#{c[:reason]})" }
        (["dry run: #{hash[:conflict_count]} conflict(s)"] + lines + conflicts).join("\n")
      else
        copied = hash[:id_map].to_h.empty? ? "" : ", #{hash[:id_map].values.sum} new ids, tenant #{hash[:tenant_id].inspect}"
        "restored #{hash[:restored].values.sum} rows, purged #{hash[:purged].values.sum}#{copied}, " \
          "write lock #{hash[:lock_ms]} ms"
      end
    end

    # Binary Strings (BLOB tenant ids) as JSON can carry them.
    def printable(value)
      case value
      when Hash then value.transform_values { |v| printable(v) }
      when Array then value.map { |v| printable(v) }
      when String
        value.encoding == Encoding::BINARY && !value.ascii_only? ? { "$base64" => [value].pack("m0") } : value
      else value
      end
    end

    def fail_with(error)
      status = exit_status(error)
      message = error.is_a?(Interrupt) ? "interrupted: nothing was changed" : error.message
      if @json
        @out.puts(JSON.generate({ error: { class: error.class.name, message: message } }))
      else
        @err.puts("tenant_kit: #{message}")
      end
      status
    end

    def exit_status(error)
      error.class.ancestors.each do |klass|
        status = EXIT_CODES[klass.name]
        return status if status
      end
      1
    end

    # ---- options ----

    def parse(command)
      options = {}
      parser = OptionParser.new do |o|
        o.banner = "Usage: tenant_kit #{command} [options]"
        send(:"#{command}_options", o, options)
        o.on("--json", "events and the result as JSON lines on stdout") { options[:json] = true }
        o.on("-h", "--help", "this help") do
          @out.puts(o)
          return nil
        end
      end
      rest = parser.parse(@argv)
      raise ArgumentError, "unexpected argument #{rest.first.inspect}" unless rest.empty?

      missing = REQUIRED.fetch(command).reject { |key| options.key?(key) }
      unless missing.empty?
        flags = missing.map { |key| "--#{key.to_s.tr('_', '-')}" }.join(", ")
        raise ArgumentError, "#{command} needs #{flags} (see tenant_kit #{command} --help)"
      end
      options
    end

    def database_options(o, options)
      o.on("--database PATH", "the app's SQLite file (required)") { |v| options[:database] = v }
      o.on("--tenant-id ID", "the tenant: an integer, or text (UUIDs too)") { |v| options[:tenant_id] = tenant_id(v) }
      o.on("--storage-root DIR", "ActiveStorage Disk service root") { |v| options[:storage_root] = v }
      o.on("--tenant-column NAME", "default tenant_id") { |v| options[:tenant_column] = v }
      o.on("--tenant-table NAME", "the tenants table, when not found by convention") { |v| options[:tenant_table] = v }
      o.on("--busy-timeout SECONDS", Float, "wait for other connections' locks (default 5)") do |v|
        options[:busy_timeout] = v
      end
    end

    # The scope: a config file (JSON or YAML with the keys of
    # TenantKit::Config) or flags, not both.
    def config_options(o, options)
      o.on("--config FILE", "scope rules: a .json or .yml file with the keys of TenantKit::Config") do |v|
        options[:config] = config_file(v)
      end
      o.on("--skip-table NAME", "a table that is not tenant data (repeatable)") do |v|
        (options[:skip_tables] ||= []) << v
      end
    end

    def config_file(path)
      text = File.read(path)
      data = if File.extname(path).match?(/\A\.ya?ml\z/i)
               YAML.safe_load(text, aliases: false)
             else
               JSON.parse(text)
             end
      raise ArgumentError, "--config #{path}: expected an object of TenantKit::Config options" unless data.is_a?(Hash)

      Config.new(**data.transform_keys(&:to_sym))
    rescue JSON::ParserError, Psych::SyntaxError => e
      raise ArgumentError, "--config #{path}: not valid #{File.extname(path).delete('.')}: #{e.message}"
    rescue ArgumentError => e
      raise ArgumentError, "--config #{path}: #{e.message}"
    rescue SystemCallError => e
      raise FileError, "--config #{path}: #{e.message}"
    end

    def explain_options(o, options)
      o.on("--database PATH", "the app's SQLite file (required)") { |v| options[:database] = v }
      o.on("--tenant-column NAME", "default tenant_id") { |v| options[:tenant_column] = v }
      o.on("--tenant-table NAME", "the tenants table, when not found by convention") { |v| options[:tenant_table] = v }
      config_options(o, options)
      o.on("--busy-timeout SECONDS", Float, "wait for other connections' locks (default 5)") do |v|
        options[:busy_timeout] = v
      end
    end

    def backup_options(o, options)
      database_options(o, options)
      config_options(o, options)
      o.on("--output-dir DIR", "where the archive goes (required)") { |v| options[:output_dir] = v }
      o.on("--recipient KEY", "encrypt to this age public key (age1...; repeatable): .tar.gz.age") do |v|
        (options[:recipients] ||= []) << v
      end
      passphrase_option(o, options, "encrypt with the passphrase in the environment variable VAR")
    end

    # Keys to decrypt with. A passphrase is read from the environment, never
    # taken on the command line, where `ps` would show it.
    def decryption_options(o, options)
      o.on("--identity-file FILE", "decrypt with the age identities in FILE") { |v| options[:identity_file] = v }
      passphrase_option(o, options, "decrypt with the passphrase in the environment variable VAR")
    end

    def passphrase_option(o, options, help)
      o.on("--passphrase-env VAR", help) do |v|
        options[:passphrase] = ENV.fetch(v) { raise ::ArgumentError, "--passphrase-env: #{v} is not set" }
      end
    end

    def restore_options(o, options)
      database_options(o, options)
      config_options(o, options)
      o.on("--archive PATH", "the archive to restore (required)") { |v| options[:archive] = v }
      o.on("--dry-run", "plan and report, change nothing") { options[:dry_run] = true }
      o.on("--purge", "delete the tenant's rows first") { options[:purge] = true }
      o.on("--no-restore", "with --purge: only purge") { options[:restore] = false }
      o.on("--remap", "the archive may hold another tenant") { options[:remap] = true }
      o.on("--new-ids", "a copy: new keys for every row; without --tenant-id, into a new tenant") do
        options[:new_ids] = true
        options[:tenant_id] = nil unless options.key?(:tenant_id)
      end
      o.on("--id-map PATH", "with --new-ids: write old -> new keys as JSON lines") { |v| options[:id_map] = v }
      o.on("--only SELECTION", "only these tables (a,b), or a subtree: table=key,key") do |v|
        options[:only] = selection(v)
      end
      o.on("--except TABLES", "every table but these (a,b)") { |v| options[:except] = v.split(",") }
      o.on("--tmp-dir DIR", "where the archive is unpacked while checked") { |v| options[:tmp_dir] = v }
      decryption_options(o, options)
    end

    def verify_options(o, options)
      o.on("--archive PATH", "the archive to check (required)") { |v| options[:archive] = v }
      o.on("--tmp-dir DIR", "where the archive is unpacked while checked") { |v| options[:tmp_dir] = v }
      o.on("--config FILE", "also check the archive is of this config's tenant column") do |v|
        options[:config] = config_file(v)
      end
      decryption_options(o, options)
    end

    def prune_options(o, options)
      o.on("--output-dir DIR", "where the archives are (required)") { |v| options[:output_dir] = v }
      o.on("--keep-last N", Integer, "keep the newest N per tenant") { |v| options[:keep_last] = v }
      o.on("--older-than AGE", "delete archives older than AGE: seconds, or 12h, 30d") do |v|
        options[:older_than] = age(v)
      end
      o.on("--tenant-id ID", "only this tenant's archives") { |v| options[:tenant_id] = tenant_id(v) }
      o.on("--dry-run", "list what would be deleted") { options[:dry_run] = true }
    end

    # "tags,users" -> tables; "projects=17,18" -> the subtree of those keys.
    def selection(text)
      table, keys = text.split("=", 2)
      keys ? { table => keys.split(",").map { |k| tenant_id(k) } } : text.split(",")
    end

    def tenant_id(text)
      text.match?(/\A-?\d+\z/) ? Integer(text, 10) : text
    end

    def age(text)
      match = text.match(/\A(\d+)([smhd]?)\z/) or raise ArgumentError, "--older-than: expected seconds or 30d/12h/15m, got #{text.inspect}"
      match[1].to_i * { "" => 1, "s" => 1, "m" => 60, "h" => 3600, "d" => 86_400 }.fetch(match[2])
    end

    # Progress on stderr: a bar redrawn in place on a terminal, a line per
    # step or table elsewhere; or every event as a JSON line (--json).
    class Progress
      WIDTH = 30

      def initialize(io, json_out: nil)
        @io = io
        @json_out = json_out
        @tty = io.respond_to?(:tty?) && io.tty?
        @last = nil
      end

      def event(event)
        if @json_out
          @json_out.puts(JSON.generate(event))
          @json_out.flush
        elsif @io
          @tty ? draw(event) : line(event)
        end
      end

      def finish
        return unless @tty && @drawn

        @io.print("\n")
        @drawn = false
      end

      private

      def label(event)
        [event[:step], event[:table]].compact.join(" ")
      end

      def draw(event)
        processed = event[:processed]
        total = event[:total]
        fraction = total.to_i.positive? ? processed.to_f / total : nil
        bar = fraction ? ("#" * (fraction * WIDTH).round).ljust(WIDTH, ".") : "." * WIDTH
        percent = fraction ? format("%3d%%", (fraction * 100).round) : "    "
        counts = total ? " #{processed}/#{total}" : ""
        @io.print("\r[#{bar}] #{percent} #{label(event)}#{counts}".ljust(100)[0, 100])
        @drawn = true
      end

      # One line per step or table, not per tick.
      def line(event)
        key = label(event)
        return if key == @last

        @last = key
        @io.puts("#{event[:at]} #{key}")
      end
    end
  end
end
