# frozen_string_literal: true

module TenantKit
  # Base class of every error tenant_kit raises on purpose. Bad arguments
  # raise plain ::ArgumentError instead, as Ruby code expects.
  class Error < StandardError; end

  # The archive is unreadable, malformed or hostile (bad entry names, links,
  # bombs, unknown format version). Nothing was changed.
  class ArchiveError < Error; end

  # A checksum or a count does not match the manifest. Nothing was changed.
  class IntegrityError < Error; end

  # The archive's tables or columns do not fit the database's schema.
  class SchemaError < Error; end

  # The restore would touch rows that belong to another tenant.
  class ConflictError < Error; end

  # SQLite refused (busy past the timeout, constraint, corrupt file...).
  # When SQLite itself reported the failure, #code is its primary result code
  # (Integer: 5 SQLITE_BUSY, 11 SQLITE_CORRUPT, 26 SQLITE_NOTADB...) and
  # #extended_code the extended one (517 SQLITE_BUSY_SNAPSHOT...); both are
  # nil otherwise. See https://sqlite.org/rescode.html.
  class DatabaseError < Error
    BUSY = 5
    CORRUPT = 11
    NOTADB = 26

    attr_reader :code, :extended_code

    # Another connection held a lock past the busy timeout: worth retrying later.
    def busy?
      code == BUSY
    end

    # The file is damaged or is not a SQLite database: retrying will not help.
    def corrupt?
      code == CORRUPT || code == NOTADB
    end
  end

  # The file system failed: disk full, permission denied, missing directory.
  class FileError < Error; end

  # The work was stopped from outside (a C caller's callback, an interrupt).
  # A Ruby block that raises or breaks gets its own exception back instead.
  class Cancelled < Error; end

  # An encrypted archive and a key that does not open it: no identity given
  # matches a recipient, or the passphrase is wrong. Nothing was changed.
  class DecryptionError < Error; end

  # A bug inside tenant_kit (a Rust panic caught at the boundary).
  class InternalError < Error; end
end
