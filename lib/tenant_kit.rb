# frozen_string_literal: true

require "json"
require "date"
require_relative "tenant_kit/version"
require_relative "tenant_kit/errors"

# Load the native extension: a precompiled gem may carry one per Ruby minor
# version, a source install builds exactly one.
begin
  ruby_minor = RUBY_VERSION[/\A\d+\.\d+/]
  require_relative "tenant_kit/#{ruby_minor}/tenant_kit_ext"
rescue LoadError
  require_relative "tenant_kit/tenant_kit_ext"
end

require_relative "tenant_kit/native_call"
require_relative "tenant_kit/arguments"
require_relative "tenant_kit/results"

# Back up, restore and resolve settings for one tenant of a multi-tenant
# Rails app on SQLite. See README.md for the whole interface.
module TenantKit
  class << self
    # Version of the SQLite library the extension uses at run time. Inside a
    # Rails process it must equal the sqlite3 gem's (one SQLite per process).
    def sqlite_version
      Native.sqlite_version
    end

    # Back up one tenant into output_dir/tenant_<id>_<UTC yyyymmddHHMMSS>.tar.gz.
    # skip_tables: tables that are never tenant data although they carry the
    # tenant column (a job progress table): left out here, never purged by a
    # restore given the same list.
    # Progress events (Hashes with :step and :at) go to the block; raising or
    # breaking in it cancels the backup and leaves no archive behind.
    # recipients: (age public keys) or passphrase: encrypts it (age format,
    # ….tar.gz.age).
    def backup(database:, tenant_id:, output_dir:, storage_root: nil, tenant_column: "tenant_id",
               tenant_table: nil, relations: [], polymorphic: {}, tables: {}, skip_tables: [], compression_level: 2,
               busy_timeout: 5, recipients: nil, passphrase: nil, &block)
      options = {
        database: Arguments.path(:database, database),
        tenant_id: Arguments.tenant_id(:tenant_id, tenant_id),
        output_dir: Arguments.path(:output_dir, output_dir),
        storage_root: Arguments.path(:storage_root, storage_root, allow_nil: true),
        tenant_column: Arguments.identifier(:tenant_column, tenant_column),
        tenant_table: tenant_table && Arguments.identifier(:tenant_table, tenant_table),
        relations: Arguments.relations(relations),
        polymorphic: Arguments.polymorphic(polymorphic),
        tables: Arguments.tables(tables, skip_tables),
        compression_level: Arguments.non_negative_integer(:compression_level, compression_level, allow_nil: false),
        busy_timeout_ms: Arguments.milliseconds(:busy_timeout, busy_timeout),
        **Arguments.encryption(recipients, passphrase)
      }
      BackupResult.from_native(NativeCall.call(:backup, JSON.generate(options), &block))
    end

    # Restore an archive into tenant_id. Defaults: restore only (no purge, no
    # dry run). A dry run reports conflicts in the result; a real restore
    # raises TenantKit::ConflictError for them and changes nothing.
    def restore(database:, archive:, tenant_id:, storage_root: nil, dry_run: false, purge: false,
                restore: true, remap: false, tenant_column: "tenant_id", tenant_table: nil,
                relations: [], polymorphic: {}, tables: {}, skip_tables: [], busy_timeout: 5, tmp_dir: nil,
                identities: nil, identity_file: nil, passphrase: nil, &block)
      options = {
        database: Arguments.path(:database, database),
        archive: Arguments.path(:archive, archive),
        tenant_id: Arguments.tenant_id(:tenant_id, tenant_id),
        storage_root: Arguments.path(:storage_root, storage_root, allow_nil: true),
        dry_run: Arguments.boolean(:dry_run, dry_run),
        purge: Arguments.boolean(:purge, purge),
        restore: Arguments.boolean(:restore, restore),
        remap: Arguments.boolean(:remap, remap),
        tenant_column: Arguments.identifier(:tenant_column, tenant_column),
        tenant_table: tenant_table && Arguments.identifier(:tenant_table, tenant_table),
        relations: Arguments.relations(relations),
        polymorphic: Arguments.polymorphic(polymorphic),
        tables: Arguments.tables(tables, skip_tables),
        busy_timeout_ms: Arguments.milliseconds(:busy_timeout, busy_timeout),
        tmp_dir: Arguments.path(:tmp_dir, tmp_dir, allow_nil: true),
        **Arguments.decryption(identities, identity_file, passphrase)
      }
      RestoreResult.from_native(NativeCall.call(:restore, JSON.generate(options), &block))
    end

    # Check an archive's every hash and count, without a database. Raises
    # TenantKit::ArchiveError / IntegrityError naming the entry when broken.
    # An encrypted archive needs identities:, identity_file: or passphrase:.
    def verify(archive:, tmp_dir: nil, identities: nil, identity_file: nil, passphrase: nil, &block)
      options = {
        archive: Arguments.path(:archive, archive),
        tmp_dir: Arguments.path(:tmp_dir, tmp_dir, allow_nil: true),
        **Arguments.decryption(identities, identity_file, passphrase)
      }
      VerifyResult.from_native(NativeCall.call(:verify, JSON.generate(options), &block))
    end

    # A new age key pair: { identity: "AGE-SECRET-KEY-1...", recipient: "age1..." }.
    # Keep the identity secret; give the recipient to backup(recipients:).
    def generate_key
      JSON.parse(Native.generate_key, symbolize_names: true)
    end

    # Delete old archives in output_dir (only files named
    # tenant_<id>_<yyyymmddHHMMSS>.tar.gz or .tar.gz.age). keep_last: newest N per tenant
    # survive; older_than: a Time, or an age in seconds (30.days works).
    # With both, an archive goes only when both say so. Returns the deleted
    # paths.
    def prune(output_dir:, keep_last: nil, older_than: nil, tenant_id: nil, dry_run: false)
      cutoff =
        case older_than
        when nil then nil
        when Time, DateTime then older_than.to_time.utc.strftime("%Y%m%d%H%M%S")
        when Date then raise ArgumentError, "older_than: pass a Time (a Date has no time of day), got #{older_than.inspect}"
        when Numeric, ->(v) { v.respond_to?(:to_i) && !v.is_a?(String) }
          seconds = older_than.to_i
          raise ArgumentError, "older_than: an age must not be negative, got #{older_than.inspect}" if seconds.negative?

          (Time.now.utc - seconds).strftime("%Y%m%d%H%M%S")
        else raise ArgumentError, "older_than: expected a Time or seconds, got #{older_than.inspect}"
        end
      options = {
        output_dir: Arguments.path(:output_dir, output_dir),
        keep_last: Arguments.non_negative_integer(:keep_last, keep_last),
        older_than: cutoff,
        tenant_id: tenant_id && Arguments.tenant_id(:tenant_id, tenant_id),
        dry_run: Arguments.boolean(:dry_run, dry_run)
      }
      JSON.parse(NativeCall.call(:prune, JSON.generate(options))).fetch("deleted")
    end
  end
end
require_relative "tenant_kit/settings"
