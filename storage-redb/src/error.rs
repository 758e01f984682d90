//! Turning redb's errors and our own checks into `rafter::StorageError`.

use rafter::StorageError;

/// Maps any redb error met while doing `operation`.
///
/// redb's own corruption findings (page checksums, a table of the wrong
/// type) become `Corrupt`; a database another handle holds becomes `Locked`;
/// everything else is `Io`, after which the store stops (fail-stop).
pub(crate) fn from_redb(operation: &'static str, err: impl Into<redb::Error>) -> StorageError {
    let err: redb::Error = err.into();
    match err {
        redb::Error::Corrupted(message) => StorageError::Corrupt {
            location: format!("redb file ({operation})"),
            message,
        },
        redb::Error::UpgradeRequired(version) => StorageError::Corrupt {
            location: format!("redb file ({operation})"),
            message: format!("redb file format {version} needs a manual upgrade"),
        },
        err @ redb::Error::TableTypeMismatch { .. } => StorageError::Corrupt {
            location: format!("redb file ({operation})"),
            message: format!("not a rafter-redb store: {err}"),
        },
        redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch => {
            StorageError::Locked(format!("redb refused to open the database: {err}"))
        }
        err => StorageError::Io {
            operation,
            message: err.to_string(),
        },
    }
}

/// A `Corrupt` error for a value stored under `location`.
pub(crate) fn corrupt(
    location: impl Into<String>,
    message: impl std::fmt::Display,
) -> StorageError {
    StorageError::Corrupt {
        location: location.into(),
        message: message.to_string(),
    }
}

/// An `Io` error for a failure of the filesystem (not of redb).
pub(crate) fn io(operation: &'static str, err: std::io::Error) -> StorageError {
    StorageError::Io {
        operation,
        message: err.to_string(),
    }
}
