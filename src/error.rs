//! The library's error type: every failure names what was asked for and why it failed.

use std::fmt;

/// Errors returned by crosspool's library API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No GPU (or software) adapter matched the request.
    #[error("no GPU adapter found for backend '{backend}'{detail}")]
    NoAdapter {
        /// The backend the user asked for.
        backend: String,
        /// Which adapters were seen and rejected, or how to get one.
        detail: String,
    },
    /// The adapter refused to create a device.
    #[error("could not open device on adapter '{adapter}': {reason}")]
    RequestDevice {
        /// Adapter name.
        adapter: String,
        /// wgpu's reason (kept in the message rather than as a source, so it prints once).
        reason: wgpu::RequestDeviceError,
    },
    /// A shape or hyper-parameter is invalid for the operation.
    #[error("invalid shape for {op}: {reason}")]
    Shape {
        /// Operation that rejected the shape.
        op: &'static str,
        /// Why.
        reason: String,
    },
    /// Work does not fit the device's limits even after splitting.
    #[error("{what} needs {needed} bytes but the device allows at most {limit} bytes ({limit_name}); {hint}")]
    DeviceLimit {
        /// What was being allocated or bound.
        what: String,
        /// Bytes required.
        needed: u64,
        /// Bytes allowed.
        limit: u64,
        /// Name of the wgpu limit.
        limit_name: &'static str,
        /// What the user can do about it.
        hint: &'static str,
    },
    /// The GPU reported an error (validation, out of memory, lost device).
    #[error("GPU error during {during}: {message}")]
    Gpu {
        /// What crosspool was doing.
        during: String,
        /// wgpu's message.
        message: String,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// The OS error (in the message rather than as a source, so it prints once).
        reason: std::io::Error,
    },
    /// A file or directory could not be written.
    #[error("cannot write {path}: {reason}")]
    Write {
        /// The file.
        path: String,
        /// The OS error.
        reason: std::io::Error,
    },
    /// An image could not be decoded.
    #[error("cannot decode image {path}: {reason}")]
    Image {
        /// The file.
        path: String,
        /// The decoder's reason.
        reason: String,
    },
    /// A weights file is malformed or does not fit the architecture.
    #[error("weights file {path}: {message}")]
    Weights {
        /// The file.
        path: String,
        /// What is wrong, naming the tensor and both shapes where it applies.
        message: String,
    },
    /// A file crosspool wrote (a feature shard, an index) is malformed or does not fit.
    #[error("{what} {path}: {message}")]
    BadFile {
        /// The file.
        path: String,
        /// What kind of file it is ("feature shard", "index").
        what: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A setting (flag or environment variable) has an invalid value.
    #[error("{0}")]
    Config(String),
    /// A setting asks for more memory than the device has, found before any work: a
    /// command line no run can use (the binary exits 64).
    #[error("{0}")]
    TooLarge(String),
    /// A WGSL shader failed to parse or validate (a bug in crosspool, not user input).
    #[error("shader {name} is invalid: {message}")]
    Shader {
        /// File name under shaders/.
        name: &'static str,
        /// naga's diagnostic.
        message: String,
    },
}

/// Convenience alias used across the crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps an I/O failure on `path`, for `map_err`.
    pub fn io(path: &std::path::Path) -> impl Fn(std::io::Error) -> Error + '_ {
        move |reason| Error::Io {
            path: path.display().to_string(),
            reason,
        }
    }

    /// Maps an I/O error while writing `path` to [`Error::Write`].
    pub fn write(path: &std::path::Path) -> impl Fn(std::io::Error) -> Error + '_ {
        move |reason| Error::Write {
            path: path.display().to_string(),
            reason,
        }
    }

    /// A shape error for `op`.
    pub fn shape(op: &'static str, reason: impl fmt::Display) -> Self {
        Error::Shape {
            op,
            reason: reason.to_string(),
        }
    }
}
