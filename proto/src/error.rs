//! The filesystem error every daemon returns over gRPC, and the one place it becomes an errno.

use tonic::{Code, Status};

/// Metadata key carrying the error kind, so the errno survives the trip over gRPC exactly.
pub(crate) const KIND_KEY: &str = "elkfs-error";
pub(crate) const DETAIL_KEY: &str = "elkfs-detail";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    /// An inode a request names (not a name) no longer exists: the caller's handle is stale.
    #[error("stale file handle")]
    Gone,
    #[error("file exists")]
    Exists,
    #[error("directory not empty")]
    NotEmpty,
    #[error("is a directory")]
    IsDir,
    #[error("not a directory")]
    NotDir,
    #[error("name too long")]
    NameTooLong,
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("permission denied")]
    Access,
    #[error("operation not permitted")]
    Perm,
    #[error("no space left")]
    NoSpace,
    #[error("file too large")]
    TooBig,
    #[error("too many links")]
    TooManyLinks,
    #[error("operation not supported")]
    NotSupported,
    /// A chunk copy whose version differs from the one asked for: never served.
    #[error("stale chunk copy: {0}")]
    Stale(String),
    /// A block failed its CRC check: the copy is damaged, another copy may be fine.
    #[error("damaged data: {0}")]
    Damaged(String),
    /// A peer could not be reached or went away mid-request.
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("I/O error: {0}")]
    Io(String),
}

impl FsError {
    /// The POSIX errno for this error. This is the only errno mapping in elkfs.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::Gone => libc::ESTALE,
            FsError::Exists => libc::EEXIST,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::IsDir => libc::EISDIR,
            FsError::NotDir => libc::ENOTDIR,
            FsError::NameTooLong => libc::ENAMETOOLONG,
            FsError::Invalid(_) => libc::EINVAL,
            FsError::Access => libc::EACCES,
            FsError::Perm => libc::EPERM,
            FsError::NoSpace => libc::ENOSPC,
            FsError::TooBig => libc::EFBIG,
            FsError::TooManyLinks => libc::EMLINK,
            FsError::NotSupported => libc::EOPNOTSUPP,
            FsError::Stale(_) | FsError::Damaged(_) | FsError::Unavailable(_) | FsError::Io(_) => {
                libc::EIO
            }
        }
    }

    /// True when another copy or another try may succeed (the client should retry).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            FsError::Stale(_) | FsError::Damaged(_) | FsError::Unavailable(_)
        )
    }

    fn kind(&self) -> &'static str {
        match self {
            FsError::NotFound => "not-found",
            FsError::Gone => "gone",
            FsError::Exists => "exists",
            FsError::NotEmpty => "not-empty",
            FsError::IsDir => "is-dir",
            FsError::NotDir => "not-dir",
            FsError::NameTooLong => "name-too-long",
            FsError::Invalid(_) => "invalid",
            FsError::Access => "access",
            FsError::Perm => "perm",
            FsError::NoSpace => "no-space",
            FsError::TooBig => "too-big",
            FsError::TooManyLinks => "too-many-links",
            FsError::NotSupported => "not-supported",
            FsError::Stale(_) => "stale",
            FsError::Damaged(_) => "damaged",
            FsError::Unavailable(_) => "unavailable",
            FsError::Io(_) => "io",
        }
    }

    fn detail(&self) -> String {
        match self {
            FsError::Invalid(s)
            | FsError::Stale(s)
            | FsError::Damaged(s)
            | FsError::Unavailable(s)
            | FsError::Io(s) => s.clone(),
            _ => String::new(),
        }
    }

    fn from_kind(kind: &str, detail: String) -> Option<FsError> {
        Some(match kind {
            "not-found" => FsError::NotFound,
            "gone" => FsError::Gone,
            "exists" => FsError::Exists,
            "not-empty" => FsError::NotEmpty,
            "is-dir" => FsError::IsDir,
            "not-dir" => FsError::NotDir,
            "name-too-long" => FsError::NameTooLong,
            "invalid" => FsError::Invalid(detail),
            "access" => FsError::Access,
            "perm" => FsError::Perm,
            "no-space" => FsError::NoSpace,
            "too-big" => FsError::TooBig,
            "too-many-links" => FsError::TooManyLinks,
            "not-supported" => FsError::NotSupported,
            "stale" => FsError::Stale(detail),
            "damaged" => FsError::Damaged(detail),
            "unavailable" => FsError::Unavailable(detail),
            "io" => FsError::Io(detail),
            _ => return None,
        })
    }

    fn code(&self) -> Code {
        match self {
            FsError::NotFound | FsError::Gone => Code::NotFound,
            FsError::Exists => Code::AlreadyExists,
            FsError::Access | FsError::Perm => Code::PermissionDenied,
            FsError::NoSpace => Code::ResourceExhausted,
            FsError::Unavailable(_) => Code::Unavailable,
            FsError::Damaged(_) => Code::DataLoss,
            FsError::Stale(_) => Code::FailedPrecondition,
            FsError::Io(_) => Code::Internal,
            FsError::NotSupported => Code::Unimplemented,
            _ => Code::InvalidArgument,
        }
    }
}

impl From<FsError> for Status {
    fn from(e: FsError) -> Status {
        let mut status = Status::new(e.code(), e.to_string());
        if let Ok(v) = e.kind().parse() {
            status.metadata_mut().insert(KIND_KEY, v);
        }
        if let Ok(v) = e.detail().parse() {
            status.metadata_mut().insert(DETAIL_KEY, v);
        }
        status
    }
}

impl From<Status> for FsError {
    fn from(s: Status) -> FsError {
        let detail = s
            .metadata()
            .get(DETAIL_KEY)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_else(|| s.message().to_owned());
        if let Some(e) = s
            .metadata()
            .get(KIND_KEY)
            .and_then(|v| v.to_str().ok())
            .and_then(|k| FsError::from_kind(k, detail.clone()))
        {
            return e;
        }
        // No elkfs error kind: the failure happened in the transport, not in our handler.
        match s.code() {
            Code::Unavailable | Code::Cancelled | Code::DeadlineExceeded | Code::Unknown => {
                FsError::Unavailable(format!("{:?}: {}", s.code(), s.message()))
            }
            Code::ResourceExhausted => FsError::Invalid(s.message().to_owned()),
            _ => FsError::Io(format!("{:?}: {}", s.code(), s.message())),
        }
    }
}

impl From<std::io::Error> for FsError {
    fn from(e: std::io::Error) -> FsError {
        match e.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => FsError::NoSpace,
            Some(libc::ENOENT) => FsError::NotFound,
            _ => FsError::Io(e.to_string()),
        }
    }
}

impl From<tonic::transport::Error> for FsError {
    fn from(e: tonic::transport::Error) -> FsError {
        FsError::Unavailable(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_survives_a_status_round_trip() {
        let all = [
            FsError::NotFound,
            FsError::Gone,
            FsError::Exists,
            FsError::NotEmpty,
            FsError::IsDir,
            FsError::NotDir,
            FsError::NameTooLong,
            FsError::Invalid("x".into()),
            FsError::Access,
            FsError::Perm,
            FsError::NoSpace,
            FsError::TooBig,
            FsError::TooManyLinks,
            FsError::NotSupported,
            FsError::Stale("s".into()),
            FsError::Damaged("d".into()),
            FsError::Unavailable("u".into()),
            FsError::Io("i".into()),
        ];
        for e in all {
            let back = FsError::from(Status::from(e.clone()));
            assert_eq!(back, e);
        }
    }

    #[test]
    fn transport_failures_are_retryable() {
        let e = FsError::from(Status::unavailable("connection refused"));
        assert!(e.is_retryable());
        assert_eq!(e.errno(), libc::EIO);
    }
}
