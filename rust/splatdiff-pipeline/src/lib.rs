//! The pipeline: a run's work folder and manifest, its stages, and the
//! background jobs that run them.
//!
//! Stages run in order: `capture` (the turntable, rendered by the Blender
//! add-on, which records it through [`WorkDir`]; its geometry passes come
//! from [`passes::render_passes`]), `points` (an initial point cloud from the
//! capture's depth), then per iteration N: `stylize-N` (keyframes restyled
//! by a swappable [`stylize::Stylizer`]), `propagate-N` (their look carried
//! to every frame), `train-N` (splats trained on those frames, on the GPU)
//! and `render-N` (the splats seen from every view, with the metrics of
//! [`metrics`]); finally the run's [`report`].

pub mod error;
pub mod job;
pub mod media;
pub mod metrics;
pub mod passes;
pub mod points;
pub mod propagate;
pub mod render;
pub mod report;
pub mod stage;
pub mod stylize;
pub mod train;
pub mod workdir;

pub use error::{PipelineError, Result};
pub use job::{Job, JobContext, JobStatus};
pub use stage::{run_pipeline, RunConfig, Stage, StageContext};
pub use workdir::{Manifest, StageRecord, StageState, WorkDir};
