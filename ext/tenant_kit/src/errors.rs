//! Core errors to Ruby exceptions. The classes themselves are defined in
//! Ruby (`lib/tenant_kit/errors.rb`) so they can be documented and rescued
//! without loading the extension; here we only look them up by name.

use magnus::{prelude::*, Error as RbError, ExceptionClass, RModule, Ruby};
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
        Ok(class) => RbError::new(class, message),
        // lib/tenant_kit/errors.rb not loaded: still raise something useful.
        Err(_) => RbError::new(
            ruby.exception_runtime_error(),
            format!("TenantKit::{name}: {message}"),
        ),
    }
}
