//! One error type for everything that reads or writes files in this crate.
//!
//! Every variant names the file it is about, so a message shown in Blender's
//! panel or on the command line tells the user which file to look at.

use std::path::{Path, PathBuf};

/// An error about one file: its path and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum SceneError {
    /// The operating system refused to read or write the file.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file was read but its content is not what the format requires.
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl SceneError {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Self::Io { path: path.as_ref().to_path_buf(), source }
    }

    pub fn invalid(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Self::Invalid { path: path.as_ref().to_path_buf(), message: message.into() }
    }

    /// The file this error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Io { path, .. } | Self::Invalid { path, .. } => path,
        }
    }
}

pub type Result<T, E = SceneError> = std::result::Result<T, E>;
