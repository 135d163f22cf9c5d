//! The crate's error type: every failure names the file, key or setting at
//! fault so a user can fix their input instead of reading a panic.

use std::path::PathBuf;

/// Errors from loading models, encoding prompts and running the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum DiffusionError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder concerned.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file exists but its contents are not what was expected.
    #[error("{path}: {message}")]
    Format {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A tensor (or other keyed entry) that a model needs is absent.
    #[error("{file}: missing key `{key}`")]
    MissingKey {
        /// The file (or folder) that should have held the key.
        file: PathBuf,
        /// The missing key.
        key: String,
    },
    /// Input of a kind this crate deliberately does not support (e.g. SDXL).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// An error from candle (shape mismatch, device error, ...).
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// The caller cancelled a long-running operation.
    #[error("cancelled")]
    Cancelled,
    /// An argument or setting is invalid.
    #[error("invalid: {0}")]
    Invalid(String),
}

impl DiffusionError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DiffusionError::Io { path: path.into(), source }
    }

    /// A format error about `path`.
    pub fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        DiffusionError::Format { path: path.into(), message: message.into() }
    }

    /// A missing-key error for `key` in `file`.
    pub fn missing_key(file: impl Into<PathBuf>, key: impl Into<String>) -> Self {
        DiffusionError::MissingKey { file: file.into(), key: key.into() }
    }
}

/// The crate's result type.
pub type Result<T, E = DiffusionError> = std::result::Result<T, E>;
