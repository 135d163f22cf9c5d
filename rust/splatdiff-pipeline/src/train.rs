//! The `train-N` stage: Gaussian splats trained on iteration N's propagated
//! frames, starting from the `points` stage's cloud (the capture's depth
//! back-projected), which trains faster and better than random points.
//! A few frames are held out, so the refit quality is measured on views
//! the splats were not trained on.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use splatdiff_render::gpu::GpuContext;
use splatdiff_scene::read_splats;
use splatdiff_train::{init, load_dataset, TrainConfig, TrainError, Trainer};

use crate::error::{PipelineError, Result};
use crate::stage::{Stage, StageContext};

/// Settings of the `train` stages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainStageConfig {
    /// Longer side of the training images (the frames are downscaled to it).
    pub max_side: u32,
    /// Every `holdout_every`-th frame that is not a keyframe is held out of
    /// training to measure the refit; 0 trains on every frame.
    pub holdout_every: usize,
    /// Everything about the optimisation.
    #[serde(flatten)]
    pub train: TrainConfig,
}

impl Default for TrainStageConfig {
    fn default() -> Self {
        Self {
            max_side: 256,
            holdout_every: 6,
            train: TrainConfig { steps: 3000, max_splats: 100_000, ..TrainConfig::default() },
        }
    }
}

impl TrainStageConfig {
    /// Names of the frames held out of training: every `holdout_every`-th
    /// non-keyframe, starting half a period in.
    pub fn held_out(&self, names: &[String], keyframes: &[usize]) -> Vec<String> {
        if self.holdout_every == 0 {
            return Vec::new();
        }
        let others: Vec<usize> = (0..names.len()).filter(|i| !keyframes.contains(i)).collect();
        others.iter().skip(self.holdout_every / 2).step_by(self.holdout_every).map(|&i| names[i].clone()).collect()
    }
}

/// Trains splats on the frames of the `data` stage.
pub struct TrainStage {
    pub iteration: usize,
    pub config: TrainStageConfig,
    /// Stage whose `transforms.json` holds the training frames.
    pub data: String,
    pub held_out: Vec<String>,
}

fn train_err(e: TrainError) -> PipelineError {
    PipelineError::Stage { stage: "train", message: e.to_string() }
}

impl Stage for TrainStage {
    fn name(&self) -> String {
        format!("train-{}", self.iteration)
    }

    fn config(&self) -> Value {
        json!({ "data": self.data, "held_out": self.held_out, "train": self.config })
    }

    fn run(&self, ctx: &StageContext) -> Result<Value> {
        let job = ctx.job;
        let transforms = ctx.work.stage_dir(&self.data).join("transforms.json");
        let images: Vec<_> = load_dataset(&transforms, Some(self.config.max_side))
            .map_err(train_err)?
            .into_iter()
            .filter(|i| !self.held_out.contains(&i.name))
            .collect();
        let points = ctx.work.stage_dir("points").join("points.ply");
        let init = init::from_points(&read_splats(&points)?).map_err(train_err)?;
        job.log(format!(
            "{}: {} images ({} held out), {} initial points",
            self.name(),
            images.len(),
            self.held_out.len(),
            init.len()
        ));
        let gpu = GpuContext::new().map_err(|e| PipelineError::Stage { stage: "train", message: e.to_string() })?;
        job.log(format!("{}: GPU adapter {}", self.name(), gpu.adapter_name()));
        // Checkpoints live outside the staging folder (which a rerun empties),
        // so a cancelled or failed run resumes from its last good step.
        let checkpoints = ctx.work.root().join(format!(".{}.checkpoint", self.name()));
        let resumed =
            Trainer::resume(&gpu, images.clone(), &checkpoints).ok().filter(|t| t.config() == &self.config.train);
        let mut trainer = match resumed {
            Some(trainer) => {
                job.log(format!("{}: resuming from step {}", self.name(), trainer.step_count()));
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
            "trained_on": self.data,
        }))
    }
}
