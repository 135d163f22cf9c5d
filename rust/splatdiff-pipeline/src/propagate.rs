//! The `propagate-N` stage: the restyled keyframes' look carried to every
//! frame through the capture's geometry (splatdiff-propagate), written as a
//! dataset the trainer reads.

use std::sync::atomic::AtomicBool;

use serde_json::{json, Value};
use splatdiff_propagate::image::Image;
use splatdiff_propagate::io::{read_keyframes, write_frames, Capture};
use splatdiff_propagate::{propagate, FrameInput, PropagateConfig};

use crate::error::Result;
use crate::metrics::{neighbour_pairs, reprojection_error};
use crate::stage::{Stage, StageContext};
use crate::stylize::source_images;

pub struct PropagateStage<'a> {
    pub capture: &'a Capture,
    pub iteration: usize,
    /// The stage whose images guide synthesis where no keyframe sees
    /// (`capture` or the previous `render-N`).
    pub source: String,
    pub config: PropagateConfig,
}

impl Stage for PropagateStage<'_> {
    fn name(&self) -> String {
        format!("propagate-{}", self.iteration)
    }

    fn config(&self) -> Value {
        json!({ "keys": format!("stylize-{}", self.iteration), "source": self.source, "propagate": self.config })
    }

    fn run(&self, ctx: &StageContext) -> Result<Value> {
        let job = ctx.job;
        let keys_dir = ctx.work.stage_dir(&format!("stylize-{}", self.iteration)).join("keys");
        let keys = read_keyframes(&keys_dir, self.capture)?;
        let sources = source_images(self.capture, ctx.work.root(), &self.source)?;
        let frames: Vec<FrameInput> = self
            .capture
            .frames
            .iter()
            .zip(sources)
            .map(|(f, render)| FrameInput { geometry: f.geometry.clone(), render })
            .collect();
        // The job's cancel flag is polled by progress; propagate reads its own.
        let cancel = AtomicBool::new(false);
        let progress = |done: usize, total: usize| {
            if job.is_cancelled() {
                cancel.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            job.set_steps(done, total, 0.0, 1.0, "frame");
        };
        let started = std::time::Instant::now();
        let (propagated, warnings) = propagate(&frames, &keys, &self.config, &progress, &cancel)?;
        job.check_cancel()?;
        let seconds = started.elapsed().as_secs_f64();
        for w in &warnings {
            job.log(format!("{}: warning: {w}", self.name()));
        }
        write_frames(ctx.out, self.capture, &propagated)?;
        let geoms: Vec<_> = self.capture.frames.iter().map(|f| &f.geometry).collect();
        let images: Vec<&Image> = propagated.iter().map(|p| &p.image).collect();
        let consistency = reprojection_error(&geoms, &images, &neighbour_pairs(images.len()));
        let coverage = propagated.iter().map(|p| p.coverage as f64).sum::<f64>() / propagated.len().max(1) as f64;
        job.log(format!(
            "{}: {} frames in {seconds:.1} s, keyframes see {:.1}% of the object",
            self.name(),
            propagated.len(),
            100.0 * coverage
        ));
        Ok(json!({
            "transforms": "transforms.json",
            "frames": propagated.len(),
            "coverage": coverage,
            "warnings": warnings,
            "seconds": seconds,
            "propagated_reprojection": consistency,
        }))
    }
}
