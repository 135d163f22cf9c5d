//! The pipeline: a run's work folder and manifest, its stages, and the
//! background jobs that run them.
//!
//! Stages run in order: `capture` (the turntable, rendered by the Blender
//! add-on, which records it through [`WorkDir`]; its geometry passes come
//! from [`passes::render_passes`]), `points` (an initial point cloud from the
//! capture's depth), `stylize` and `propagate` (not built yet: the runner
//! reports them), and `train` (splats trained on the frames, on the GPU).

pub mod error;
pub mod job;
pub mod passes;
pub mod points;
pub mod stage;
pub mod train;
pub mod workdir;

pub use error::{PipelineError, Result};
pub use job::{Job, JobContext, JobStatus};
pub use stage::{run_pipeline, RunConfig, Stage, StageContext};
pub use workdir::{Manifest, StageRecord, StageState, WorkDir};
