//! Core errors to Ruby exceptions. The classes themselves are defined in
//! Ruby (`lib/tenant_kit/errors.rb`) so they can be documented and rescued
//! without loading the extension; here we only look them up by name.

use magnus::{prelude::*, Error as RbError, Exception, ExceptionClass, RModule, Ruby, Value};
use tenant_kit::ErrorKind;

fn class_name(kind: ErrorKind) -> Option<&'static str> {
    Some(match kind {
        ErrorKind::Argument => return None, // plain ::ArgumentError
        ErrorKind::Archive => "ArchiveError",
        ErrorKind::Integrity => "IntegrityError",
        ErrorKind::Schema => "SchemaError",
        ErrorKind::Conflict => "ConflictError",
        ErrorKind::Database => "DatabaseError",
        ErrorKind::Io => "FileError",
        ErrorKind::Cancelled => "Cancelled",
        ErrorKind::Internal => "InternalError",
        ErrorKind::Decryption => "DecryptionError",
    })
}

pub fn to_ruby(ruby: &Ruby, error: &tenant_kit::Error) -> RbError {
    let message = error.message().to_string();
    let Some(name) = class_name(error.kind()) else {
        return RbError::new(ruby.exception_arg_error(), message);
    };
    let class = ruby
        .class_object()
        .const_get::<_, RModule>("TenantKit")
        .and_then(|m| m.const_get::<_, ExceptionClass>(name));
    match class {
        Ok(class) => match error.sqlite_code() {
            Some(code) => with_sqlite_code(class, message, code),
            None => RbError::new(class, message),
        },
        // lib/tenant_kit/errors.rb not loaded: still raise something useful.
        Err(_) => RbError::new(
            ruby.exception_runtime_error(),
            format!("TenantKit::{name}: {message}"),
        ),
    }
}

/// The exception with SQLite's codes in `@code` / `@extended_code`, which
/// `TenantKit::DatabaseError#code`, `#extended_code` and `#busy?` read.
fn with_sqlite_code(
    class: ExceptionClass,
    message: String,
    code: tenant_kit::SqliteCode,
) -> RbError {
    let build = || -> Result<Exception, RbError> {
        let exception = class.new_instance((message.as_str(),))?;
        let _: Value = exception.funcall("instance_variable_set", ("@code", code.primary))?;
        let _: Value =
            exception.funcall("instance_variable_set", ("@extended_code", code.extended))?;
        Ok(exception)
    };
    match build() {
        Ok(exception) => exception.into(),
        Err(_) => RbError::new(class, message),
    }
}
