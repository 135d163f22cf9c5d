//! Keyframe propagation: carries the look of a few restyled keyframes to
//! every frame of a turntable, using the capture's geometry (cameras,
//! depth, normals, mask), and exemplar stylization of keyframes from any
//! style image. See [`propagate`] for the method and [`patchmatch`] for the
//! guided synthesis underneath.

pub mod error;
pub mod exemplar;
pub mod geometry;
pub mod image;
pub mod io;
pub mod metrics;
pub mod patchmatch;
pub mod poisson;
pub mod propagate;

pub use error::{PropagateError, Result};
pub use propagate::{propagate, FrameInput, Keyframe, Method, PropagateConfig, PropagatedFrame};
