//! The error type of training: every message names the file or the setting at fault.

use std::path::{Path, PathBuf};

use splatdiff_render::RenderError;
use splatdiff_scene::SceneError;

/// What went wrong while loading data, training or checkpointing.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A dataset, model or checkpoint file could not be read or written.
    #[error(transparent)]
    Scene(#[from] SceneError),
    /// The GPU renderer failed (no adapter, out of memory, invalid splats, …).
    #[error(transparent)]
    Render(#[from] RenderError),
    /// A file was read but is not usable; the path says which.
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    /// Bad settings or inputs that are not files (config values, splats, images).
    #[error("{0}")]
    Invalid(String),
    /// Training diverged (a non-finite loss or parameter).
    #[error("training diverged at step {step}: {message}")]
    Diverged { step: u64, message: String },
}

impl TrainError {
    pub fn file(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Self::File { path: path.as_ref().to_path_buf(), message: message.into() }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;
