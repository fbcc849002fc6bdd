//! The one error type of the core. Every binding maps its variants to its own
//! world: Ruby exception classes (`lib/tenant_kit/errors.rb`), C `tk_status`.

use std::fmt;

/// What went wrong, by the caller's point of view: each kind asks for a
/// different reaction (fix an argument, reject an upload, migrate a schema…).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A bad argument: unknown path, missing option, wrong type.
    Argument,
    /// Unreadable, hostile or malformed archive.
    Archive,
    /// Checksum or count mismatch.
    Integrity,
    /// Archive and database disagree on tables or columns.
    Schema,
    /// The restore would touch rows of another tenant, or make the tenant's rows
    /// point at them.
    Conflict,
    /// SQLite reported an error (busy, corrupt, constraint…).
    Database,
    /// The file system failed us (disk full, permissions…).
    Io,
    /// The progress callback asked to stop.
    Cancelled,
    /// An encrypted archive and a key that does not open it (no matching
    /// identity, wrong passphrase).
    Decryption,
    /// A bug: a panic caught at the boundary.
    Internal,
}

impl ErrorKind {
    /// Stable lower-case name, used in progress events and JSON results.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Argument => "argument",
            ErrorKind::Archive => "archive",
            ErrorKind::Integrity => "integrity",
            ErrorKind::Schema => "schema",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Database => "database",
            ErrorKind::Io => "io",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Decryption => "decryption",
            ErrorKind::Internal => "internal",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    /// SQLite's own code when SQLite reported the failure, so a caller can
    /// tell busy from corrupt without reading the message.
    sqlite: Option<SqliteCode>,
}

/// SQLite's result code of a failure: the primary code (`SQLITE_BUSY` = 5)
/// and the extended one that refines it (`SQLITE_BUSY_SNAPSHOT` = 517); see
/// <https://sqlite.org/rescode.html>. The primary code is the extended one's
/// low byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqliteCode {
    pub primary: i32,
    pub extended: i32,
}

impl SqliteCode {
    /// Another connection holds a lock we needed (past the busy timeout).
    pub const BUSY: i32 = 5;
    /// A lock conflict inside this process (shared cache, nested statement).
    pub const LOCKED: i32 = 6;
    /// The database file is damaged.
    pub const CORRUPT: i32 = 11;
    /// The file is not a database (or is encrypted).
    pub const NOTADB: i32 = 26;

    pub fn from_extended(extended: i32) -> Self {
        SqliteCode {
            primary: extended & 0xff,
            extended,
        }
    }

    /// The code of a rusqlite error that came from SQLite itself (errors
    /// rusqlite makes up on its own, a type mismatch, have none).
    pub fn of(err: &rusqlite::Error) -> Option<Self> {
        err.sqlite_error()
            .map(|e| Self::from_extended(e.extended_code))
    }

    pub fn is_busy(self) -> bool {
        self.primary == Self::BUSY
    }

    pub fn is_corrupt(self) -> bool {
        self.primary == Self::CORRUPT || self.primary == Self::NOTADB
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            sqlite: None,
        }
    }
    pub fn argument(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Argument, message)
    }
    pub fn archive(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Archive, message)
    }
    pub fn integrity(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Integrity, message)
    }
    pub fn schema(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Schema, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }
    pub fn database(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Database, message)
    }
    /// A database error worded by the caller, keeping the code of the
    /// SQLite error it reports.
    pub fn sqlite(message: impl Into<String>, err: &rusqlite::Error) -> Self {
        let mut error = Self::database(message);
        error.sqlite = SqliteCode::of(err);
        error
    }
    pub fn io(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Io, message)
    }
    pub fn decryption(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Decryption, message)
    }
    pub fn cancelled() -> Self {
        Self::new(ErrorKind::Cancelled, "cancelled by the progress callback")
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    pub fn message(&self) -> &str {
        &self.message
    }
    /// SQLite's code when SQLite reported this error.
    pub fn sqlite_code(&self) -> Option<SqliteCode> {
        self.sqlite
    }

    /// Prefix the message with where it happened ("table tasks: …").
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// Turn a caught panic payload into an error that says it is a bug.
    pub fn from_panic(payload: &(dyn std::any::Any + Send)) -> Self {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        Error::internal(format!(
            "internal error (a bug in tenant_kit, please report it): {what}"
        ))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<rusqlite::Error> for Error {
    fn from(err: rusqlite::Error) -> Self {
        Error::sqlite(format!("SQLite: {err}"), &err)
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        Error::io(err.to_string())
    }
}

/// Attach context to foreign errors in one call: `.at("reading manifest")?`.
pub trait ResultExt<T> {
    fn at(self, context: impl fmt::Display) -> Result<T>;
}

impl<T, E: Into<Error>> ResultExt<T> for std::result::Result<T, E> {
    fn at(self, context: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.into().context(context))
    }
}
