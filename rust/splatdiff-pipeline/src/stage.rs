//! The stage abstraction and the runner that chains a run's stages in its
//! work folder: `points`, then for every iteration N `stylize-N`,
//! `propagate-N`, `train-N` and `render-N`, then the report.
//!
//! Iteration 1 restyles the capture's renders; iteration N > 1 restyles
//! iteration N−1's splat renders at a lower strength (`strength ×
//! strength_falloff^(N−1)`), so the splats make neighbouring views agree
//! and the stylizer restores detail.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use splatdiff_propagate::image::Image;
use splatdiff_propagate::io::read_capture;
use splatdiff_propagate::PropagateConfig;

use crate::error::{PipelineError, Result};
use crate::job::JobContext;
use crate::metrics::{neighbour_pairs, reprojection_error};
use crate::points::{PointsConfig, PointsStage};
use crate::propagate::PropagateStage;
use crate::render::{RenderStage, RenderStageConfig};
use crate::report::{write_report, IterationMetrics, IterationSummary, ReportInput};
use crate::stylize::{KeyframeConfig, StylizeStage, StylizerConfig};
use crate::train::{TrainStage, TrainStageConfig};
use crate::workdir::{RecordStatus, StageState, WorkDir};

/// What a stage gets while it runs.
pub struct StageContext<'a> {
    pub work: &'a WorkDir,
    /// The empty staging folder the stage writes its outputs into.
    pub out: &'a std::path::Path,
    pub job: &'a JobContext,
}

/// One step of the pipeline. Its config is everything that determines its
/// outputs: a finished stage is reused while its config is unchanged.
pub trait Stage {
    fn name(&self) -> String;
    /// The stage's typed config, serialised into the manifest.
    fn config(&self) -> Value;
    /// Does the work into `ctx.out` and returns what it produced.
    fn run(&self, ctx: &StageContext) -> Result<Value>;
}

/// The config of a pipeline run after capture.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    pub points: PointsConfig,
    pub keyframes: KeyframeConfig,
    /// How keyframes are restyled; a run needs one.
    pub stylize: Option<StylizerConfig>,
    /// Iterations wanted; finished ones are reused, so raising it continues a run.
    pub iterations: usize,
    /// Strength of iteration N is the stylizer's strength × this^(N−1).
    pub strength_falloff: f64,
    pub propagate: PropagateConfig,
    pub train: TrainStageConfig,
    pub render: RenderStageConfig,
    /// The user says the external edits are done (external stylizer).
    pub resume: bool,
    /// Re-run this stage and those after it even if they finished with
    /// other settings. Without it, a finished stage whose settings changed
    /// is an error: results are never replaced silently.
    pub restart_from: Option<String>,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            points: PointsConfig::default(),
            keyframes: KeyframeConfig::default(),
            stylize: None,
            iterations: 1,
            strength_falloff: 0.5,
            propagate: PropagateConfig::default(),
            train: TrainStageConfig::default(),
            render: RenderStageConfig::default(),
            resume: false,
            restart_from: None,
        }
    }
}

impl RunConfig {
    /// The stylizer's strength in iteration `n` (1-based).
    pub fn strength(&self, stylizer: &StylizerConfig, n: usize) -> f64 {
        // Rounded: settings from Blender are f32 (0.6 arrives as 0.6000000238).
        let s = stylizer.strength() * self.strength_falloff.powi(n as i32 - 1);
        (s * 1e6).round() / 1e6
    }

    fn validate(&self, work: &WorkDir) -> Result<&StylizerConfig> {
        let stylizer = self.stylize.as_ref().ok_or_else(|| {
            PipelineError::invalid(work.root(), "the run config names no stylizer (\"stylize\": {\"kind\": ...})")
        })?;
        stylizer.validate()?;
        if self.iterations == 0 {
            return Err(PipelineError::invalid(work.root(), "iterations must be at least 1"));
        }
        if !(self.strength_falloff > 0.0 && self.strength_falloff <= 1.0) {
            return Err(PipelineError::invalid(
                work.root(),
                format!("strength_falloff {} is not within (0, 1]", self.strength_falloff),
            ));
        }
        Ok(stylizer)
    }
}

/// Runs stages in order, reusing finished ones; keeps the result's stage list.
struct Runner<'a> {
    work: &'a WorkDir,
    job: &'a JobContext,
    restart_from: Option<&'a str>,
    restarting: bool,
    stages: Vec<Value>,
}

impl Runner<'_> {
    /// Runs (or reuses) `stage` while the job's progress covers `span`.
    fn stage(&mut self, stage: &dyn Stage, span: (f32, f32)) -> Result<Value> {
        let (job, work) = (self.job, self.work);
        job.check_cancel()?;
        let name = stage.name();
        self.restarting |= self.restart_from == Some(name.as_str());
        let config = stage.config();
        let reuse = match work.state(&name, &config)? {
            StageState::Finished(_) if !self.restarting => true,
            StageState::Stale(_) if !self.restarting => false, // begin() explains the change
            StageState::Finished(_) | StageState::Stale(_) => {
                job.log(format!("{name}: discarding the finished result to run it again"));
                work.discard(&name)?;
                false
            }
            StageState::Pending => false,
        };
        let outputs = if reuse {
            job.log(format!("{name}: reusing the finished result"));
            work.manifest()?.stage(&name).map(|r| r.outputs.clone()).unwrap_or(Value::Null)
        } else {
            job.set_stage(&name, span);
            let staging = work.begin(&name, &config)?;
            match stage.run(&StageContext { work, out: &staging, job }) {
                Ok(outputs) => {
                    work.commit(&name, outputs.clone())?;
                    outputs
                }
                Err(PipelineError::Paused { folder, message }) => {
                    // Nothing of the stage is finished: forget its record and staging.
                    work.discard(&name)?;
                    self.stages.push(json!({ "name": name, "status": "paused" }));
                    return Err(PipelineError::Paused { folder, message });
                }
                Err(e) => return Err(e),
            }
        };
        self.stages.push(json!({
            "name": name,
            "status": if reuse { "reused" } else { "done" },
            "dir": work.stage_dir(&name),
            "outputs": outputs,
        }));
        Ok(outputs)
    }
}

/// Runs every native stage after `capture` in `work`, reusing finished
/// ones, and writes the report. A run whose stylizer waits for the user
/// (external edits) returns normally with `"paused"` set.
pub fn run_pipeline(work: &WorkDir, config: &RunConfig, job: &JobContext) -> Result<Value> {
    let manifest = work.manifest()?;
    if !manifest.stage("capture").is_some_and(|r| r.status == RecordStatus::Finished) {
        return Err(PipelineError::invalid(
            work.root(),
            "no finished capture in this folder: capture the turntable first",
        ));
    }
    let stylizer = config.validate(work)?;
    job.set_stage("load", (0.0, 0.01));
    let capture_dir = work.stage_dir("capture");
    let capture = read_capture(&capture_dir)?;
    for w in &capture.warnings {
        job.log(format!("capture: warning: {w}"));
    }
    let names: Vec<String> = capture.dataset.frames.iter().map(|f| f.name.clone()).collect();
    let keyframes = config.keyframes.pick(names.len(), &capture_dir)?;
    let held_out = config.train.held_out(&names, &keyframes);

    let mut runner = Runner {
        work,
        job,
        restart_from: config.restart_from.as_deref(),
        restarting: false,
        stages: vec![json!({ "name": "capture", "status": "finished", "dir": capture_dir })],
    };
    let points = runner.stage(&PointsStage { config: config.points.clone() }, (0.01, 0.03))?;
    let per = 0.97 / config.iterations as f32;
    let mut iterations = Vec::new();
    let mut paused = Value::Null;
    for n in 1..=config.iterations {
        let base = 0.03 + per * (n - 1) as f32;
        let span = |a: f32, b: f32| (base + per * a, base + per * b);
        let strength = config.strength(stylizer, n);
        let source = if n == 1 { "capture".to_string() } else { format!("render-{}", n - 1) };
        let stylize = StylizeStage {
            capture: &capture,
            iteration: n,
            source: source.clone(),
            keyframes: keyframes.clone(),
            stylizer: stylizer.with_strength(strength),
            resume: config.resume,
        };
        let styled = match runner.stage(&stylize, span(0.0, 0.3)) {
            Err(PipelineError::Paused { folder, message }) => {
                job.log(message.clone());
                paused = json!({
                    "stage": format!("stylize-{n}"),
                    "iteration": n,
                    "folder": folder,
                    "keyframes": keyframes.iter().map(|&i| &names[i]).collect::<Vec<_>>(),
                    "message": message,
                });
                break;
            }
            other => other?,
        };
        let propagated = runner.stage(
            &PropagateStage { capture: &capture, iteration: n, source, config: config.propagate.clone() },
            span(0.3, 0.4),
        )?;
        runner.stage(
            &TrainStage {
                iteration: n,
                config: config.train.clone(),
                data: format!("propagate-{n}"),
                held_out: held_out.clone(),
            },
            span(0.4, 0.9),
        )?;
        let rendered = runner.stage(
            &RenderStage { capture: &capture, iteration: n, held_out: held_out.clone(), config: config.render.clone() },
            span(0.9, 1.0),
        )?;
        let number = |v: &Value, key: &str| v.get(key).and_then(Value::as_f64);
        iterations.push(IterationSummary {
            index: n,
            strength,
            keyframes: keyframes.iter().map(|&i| names[i].clone()).collect(),
            metrics: IterationMetrics {
                keyframe_reprojection: number(&styled, "keyframe_reprojection"),
                propagated_reprojection: number(&propagated, "propagated_reprojection"),
                splat_reprojection: number(&rendered, "splat_reprojection"),
                refit_psnr: number(&rendered, "refit_psnr"),
                refit_ssim: number(&rendered, "refit_ssim"),
                change_psnr: number(&rendered, "change_psnr"),
                change_ssim: number(&rendered, "change_ssim"),
            },
            keyframe_sheet: format!("stylize-{n}/keyframes.png"),
            contact_sheet: format!("render-{n}/contact.png"),
            turntable: format!("render-{n}/turntable.gif"),
            splats: format!("train-{n}/model.ply"),
        });
    }

    job.set_progress(1.0, "writing the report");
    let geoms: Vec<_> = capture.frames.iter().map(|f| &f.geometry).collect();
    let renders: Vec<&Image> = capture.frames.iter().map(|f| &f.render).collect();
    let capture_reprojection = reprojection_error(&geoms, &renders, &neighbour_pairs(renders.len()));
    let settings = serde_json::to_value(config).expect("config serialises");
    let title = work.root().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let report = write_report(
        work.root(),
        &ReportInput { title: &title, settings: &settings, capture_reprojection, iterations: &iterations },
    )?;

    let root = work.root();
    let abs = |rel: &str| json!(root.join(rel));
    let mut result = Map::new();
    result.insert("work_dir".into(), json!(root));
    result.insert("stages".into(), Value::Array(runner.stages));
    result.insert("paused".into(), paused);
    result.insert("points".into(), abs(&format!("points/{}", points["points"].as_str().unwrap_or("points.ply"))));
    result.insert("capture_reprojection".into(), json!(capture_reprojection));
    result.insert(
        "iterations".into(),
        Value::Array(
            iterations
                .iter()
                .map(|it| {
                    json!({
                        "index": it.index,
                        "strength": it.strength,
                        "keyframes": it.keyframes,
                        "metrics": it.metrics,
                        "splats": abs(&it.splats),
                        "keyframes_before": abs(&format!("stylize-{}/before", it.index)),
                        "keyframes_after": abs(&format!("stylize-{}/keys", it.index)),
                        "keyframe_sheet": abs(&it.keyframe_sheet),
                        "contact_sheet": abs(&it.contact_sheet),
                        "turntable": abs(&it.turntable),
                    })
                })
                .collect(),
        ),
    );
    if let Some(last) = iterations.last() {
        result.insert("splats".into(), abs(&last.splats));
    }
    result.insert("report".into(), report);
    Ok(Value::Object(result))
}
