//! Errors of the pipeline: bad input (naming the file), cancellation, and
//! failures of a stage.

use std::path::{Path, PathBuf};

use splatdiff_scene::SceneError;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A file could not be read or written, or its content is wrong.
    #[error(transparent)]
    Scene(#[from] SceneError),
    /// A folder or file of the run is in a state the pipeline cannot use.
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    /// The user cancelled; finished stages are kept.
    #[error("cancelled")]
    Cancelled,
    /// A bug: the job panicked. Reported rather than crashing the host (Blender).
    #[error("internal error: {0}")]
    Internal(String),
}

impl PipelineError {
    pub fn invalid(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Self::Invalid { path: path.as_ref().to_path_buf(), message: message.into() }
    }

    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Self::Scene(SceneError::io(path, source))
    }
}

pub type Result<T, E = PipelineError> = std::result::Result<T, E>;
