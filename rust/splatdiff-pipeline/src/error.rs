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
    /// A stage failed for a reason its own crate explains (the message names
    /// the file or setting at fault).
    #[error("{stage}: {message}")]
    Stage { stage: &'static str, message: String },
    /// Not a failure: the run waits for the user (external edits in
    /// `folder`); finished stages are kept and a resume goes on.
    #[error("{message}")]
    Paused { folder: PathBuf, message: String },
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

impl From<splatdiff_propagate::PropagateError> for PipelineError {
    fn from(e: splatdiff_propagate::PropagateError) -> Self {
        match e {
            splatdiff_propagate::PropagateError::Cancelled => Self::Cancelled,
            splatdiff_propagate::PropagateError::Scene(e) => Self::Scene(e),
            other => Self::Stage { stage: "propagate", message: other.to_string() },
        }
    }
}

impl From<splatdiff_diffusion::DiffusionError> for PipelineError {
    fn from(e: splatdiff_diffusion::DiffusionError) -> Self {
        match e {
            splatdiff_diffusion::DiffusionError::Cancelled => Self::Cancelled,
            other => Self::Stage { stage: "stylize", message: other.to_string() },
        }
    }
}

pub type Result<T, E = PipelineError> = std::result::Result<T, E>;
