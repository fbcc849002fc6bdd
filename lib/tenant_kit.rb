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

require_relative "tenant_kit/steps"
require_relative "tenant_kit/native_call"
require_relative "tenant_kit/arguments"
require_relative "tenant_kit/config"
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
    # The scope (which rows are the tenant's) is config: (a TenantKit::Config)
    # or its options as keywords (tenant_column:, tenant_table:, relations:,
    # polymorphic:, tables:, skip_tables:), never both. skip_tables: tables
    # that are never tenant data although they carry the tenant column (a
    # job progress table): left out here, never purged by a restore given
    # the same list.
    # Progress events (Hashes with :step and :at) go to the block; raising or
    # breaking in it cancels the backup and leaves no archive behind.
    # recipients: (age public keys) or passphrase: encrypts it (age format,
    # ….tar.gz.age).
    def backup(database:, tenant_id:, output_dir:, config: nil, storage_root: nil, compression_level: 2,
               busy_timeout: 5, recipients: nil, passphrase: nil, **scope, &block)
      options = {
        database: Arguments.path(:database, database),
        tenant_id: Arguments.tenant_id(:tenant_id, tenant_id),
        output_dir: Arguments.path(:output_dir, output_dir),
        storage_root: Arguments.path(:storage_root, storage_root, allow_nil: true),
        compression_level: Arguments.non_negative_integer(:compression_level, compression_level, allow_nil: false),
        busy_timeout_ms: Arguments.milliseconds(:busy_timeout, busy_timeout),
        **Arguments.encryption(recipients, passphrase)
      }.merge(scope_options(config, scope))
      BackupResult.from_native(NativeCall.call(:backup, JSON.generate(options), &block))
    end

    # Restore an archive into tenant_id. Defaults: restore only (no purge, no
    # dry run). A dry run reports conflicts in the result; a real restore
    # raises TenantKit::ConflictError for them and changes nothing.
    # new_ids: true makes a copy: every row gets a new key and every known
    # reference follows; tenant_id: nil then makes a new tenant (its id is
    # the result's tenant_id), and id_map: a path writes old -> new keys.
    def restore(database:, archive:, tenant_id:, config: nil, storage_root: nil, dry_run: false, purge: false,
                restore: true, remap: false, busy_timeout: 5, tmp_dir: nil, new_ids: false, id_map: nil,
                only: nil, except: nil, identities: nil, identity_file: nil, passphrase: nil,
                **scope, &block)
      new_ids = Arguments.boolean(:new_ids, new_ids)
      options = {
        database: Arguments.path(:database, database),
        archive: Arguments.path(:archive, archive),
        tenant_id: Arguments.target_tenant_id(tenant_id, new_ids),
        new_ids: new_ids,
        id_map: Arguments.path(:id_map, id_map, allow_nil: true),
        storage_root: Arguments.path(:storage_root, storage_root, allow_nil: true),
        dry_run: Arguments.boolean(:dry_run, dry_run),
        purge: Arguments.boolean(:purge, purge),
        restore: Arguments.boolean(:restore, restore),
        remap: Arguments.boolean(:remap, remap),
        busy_timeout_ms: Arguments.milliseconds(:busy_timeout, busy_timeout),
        tmp_dir: Arguments.path(:tmp_dir, tmp_dir, allow_nil: true),
        only: Arguments.only(only),
        except: Arguments.except(except),
        **Arguments.decryption(identities, identity_file, passphrase)
      }.merge(scope_options(config, scope))
      RestoreResult.from_native(NativeCall.call(:restore, JSON.generate(options), &block))
    end

    # Check an archive's every hash and count, without a database. Raises
    # TenantKit::ArchiveError / IntegrityError naming the entry when broken.
    # With config:, the archive must also be of the config's tenant column
    # (an ArchiveError otherwise): a check that it suits the app it is for.
    # An encrypted archive needs identities:, identity_file: or passphrase:.
    def verify(archive:, tmp_dir: nil, config: nil, identities: nil, identity_file: nil, passphrase: nil, &block)
      config = Config.for_call(config, {}) unless config.nil?
      options = {
        archive: Arguments.path(:archive, archive),
        tmp_dir: Arguments.path(:tmp_dir, tmp_dir, allow_nil: true),
        **Arguments.decryption(identities, identity_file, passphrase)
      }
      result = VerifyResult.from_native(NativeCall.call(:verify, JSON.generate(options), &block))
      if config && result.tenant_column != config.tenant_column
        raise ArchiveError,
              "#{options[:archive]}: an archive of tenant column #{result.tenant_column.inspect}, " \
              "the config's is #{config.tenant_column.inspect}"
      end
      result
    end

    # What a backup of this database takes and why, before the first one:
    # per table its class and reason, every reference followed and where it
    # comes from, and the naming guesses the config does not confirm.
    def explain(database:, config: nil, busy_timeout: 5, **scope)
      options = {
        database: Arguments.path(:database, database),
        busy_timeout_ms: Arguments.milliseconds(:busy_timeout, busy_timeout)
      }.merge(scope_options(config, scope))
      ExplainReport.from_native(NativeCall.call(:explain, JSON.generate(options)))
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

    private

    # The scope options of a call as native JSON keys: config: or the loose
    # keywords (tenant_column:, relations:, ...), checked by Config. A
    # keyword that is neither is refused as Ruby refuses unknown keywords.
    def scope_options(config, scope)
      unknown = scope.keys - Config::OPTIONS
      unless unknown.empty?
        raise ArgumentError, "unknown keyword#{'s' if unknown.size > 1}: #{unknown.map(&:inspect).join(', ')}"
      end

      Config.for_call(config, scope).to_native
    end
  end
end
require_relative "tenant_kit/settings"
