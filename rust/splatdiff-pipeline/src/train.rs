//! The `train` stage: Gaussian splats trained on the run's frames, starting
//! from the `points` stage's cloud (the capture's depth back-projected),
//! which trains faster and better than random points.
//!
//! Until `stylize` and `propagate` exist, the frames are the capture's own
//! renders, so the stage reconstructs the object as it looks; the result
//! says so.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use splatdiff_render::gpu::GpuContext;
use splatdiff_scene::read_splats;
use splatdiff_train::{init, load_dataset, TrainConfig, TrainError, Trainer};

use crate::error::{PipelineError, Result};
use crate::stage::{Stage, StageContext};

/// Settings of the `train` stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainStageConfig {
    /// Longer side of the training images (the capture's are downscaled to it).
    pub max_side: u32,
    /// Everything about the optimisation.
    #[serde(flatten)]
    pub train: TrainConfig,
}

impl Default for TrainStageConfig {
    fn default() -> Self {
        Self { max_side: 256, train: TrainConfig { steps: 3000, max_splats: 100_000, ..TrainConfig::default() } }
    }
}

/// Trains splats on the capture's frames.
pub struct TrainStage {
    pub config: TrainStageConfig,
}

fn train_err(e: TrainError) -> PipelineError {
    PipelineError::invalid("train", e.to_string())
}

impl Stage for TrainStage {
    fn name(&self) -> &'static str {
        "train"
    }

    fn config(&self) -> Value {
        serde_json::to_value(&self.config).expect("config serialises")
    }

    fn run(&self, ctx: &StageContext) -> Result<Value> {
        let job = ctx.job;
        let transforms = ctx.work.stage_dir("capture").join("transforms.json");
        let images = load_dataset(&transforms, Some(self.config.max_side)).map_err(train_err)?;
        let points = ctx.work.stage_dir("points").join("points.ply");
        let init = init::from_points(&read_splats(&points)?).map_err(train_err)?;
        job.log(format!("train: {} images, {} initial points", images.len(), init.len()));
        let gpu = GpuContext::new().map_err(|e| PipelineError::invalid("train", e.to_string()))?;
        job.log(format!("train: GPU adapter {}", gpu.adapter_name()));
        // Checkpoints live outside the staging folder (which a rerun empties),
        // so a cancelled or failed run resumes from its last good step.
        let checkpoints = ctx.work.root().join(".train.checkpoint");
        let resumed =
            Trainer::resume(&gpu, images.clone(), &checkpoints).ok().filter(|t| t.config() == &self.config.train);
        let mut trainer = match resumed {
            Some(trainer) => {
                job.log(format!("train: resuming from step {}", trainer.step_count()));
                trainer
            }
            None => Trainer::new(&gpu, images, init, self.config.train.clone()).map_err(train_err)?,
        };
        trainer.set_checkpoint_dir(Some(checkpoints.clone()));
        let steps = self.config.train.steps as usize;
        let started = std::time::Instant::now();
        let outcome = trainer
            .train(
                |stats| {
                    if stats.step % 10 == 0 || stats.step as usize == steps {
                        job.set_steps(stats.step as usize, steps, 0.0, 1.0, "step");
                    }
                },
                || job.is_cancelled(),
            )
            .map_err(train_err)?;
        if outcome.cancelled {
            return Err(PipelineError::Cancelled);
        }
        let model = ctx.out.join("model.ply");
        std::fs::copy(checkpoints.join("model.ply"), &model).map_err(|e| PipelineError::io(&model, e))?;
        let _ = std::fs::remove_dir_all(&checkpoints);
        Ok(json!({
            "splats": "model.ply",
            "count": trainer.splat_count(),
            "steps": outcome.step,
            "seconds": started.elapsed().as_secs_f64(),
            "adapter": gpu.adapter_name(),
            "trained_on": "capture renders (stylize and propagate are not built yet)",
        }))
    }
}
