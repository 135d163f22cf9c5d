//! Errors of the propagation stage: every one names the file or the input
//! at fault and the problem, so a bad keyframe folder never ends in a panic.

use std::path::PathBuf;

/// What went wrong while propagating keyframes or stylizing by exemplar.
#[derive(Debug, thiserror::Error)]
pub enum PropagateError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error("cancelled")]
    Cancelled,
    #[error(transparent)]
    Scene(#[from] splatdiff_scene::SceneError),
}

impl PropagateError {
    pub fn file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::File { path: path.into(), message: message.into() }
    }
}

pub type Result<T> = std::result::Result<T, PropagateError>;
