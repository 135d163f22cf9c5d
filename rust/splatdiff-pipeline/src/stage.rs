//! The stage abstraction and the runner that chains stages in a work folder.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::error::{PipelineError, Result};
use crate::job::JobContext;
use crate::points::{PointsConfig, PointsStage};
use crate::train::{TrainStage, TrainStageConfig};
use crate::workdir::{RecordStatus, StageState, WorkDir};

/// What a stage gets while it runs.
pub struct StageContext<'a> {
    pub work: &'a WorkDir,
    /// The empty staging folder the stage writes its outputs into.
    pub out: &'a Path,
    pub job: &'a JobContext,
}

/// One step of the pipeline. Its config is everything that determines its
/// outputs: a finished stage is reused while its config is unchanged.
pub trait Stage {
    fn name(&self) -> &'static str;
    /// The stage's typed config, serialised into the manifest.
    fn config(&self) -> Value;
    /// Does the work into `ctx.out` and returns what it produced.
    fn run(&self, ctx: &StageContext) -> Result<Value>;
}

/// Stages that come with later work (their own crates); the runner reports
/// them instead of pretending to run them.
pub const NOT_BUILT: [&str; 2] = ["stylize", "propagate"];

/// The config of a pipeline run after capture.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunConfig {
    pub points: PointsConfig,
    pub train: TrainStageConfig,
    /// Re-run this stage and those after it even if they finished with
    /// other settings. Without it, a finished stage whose settings changed
    /// is an error: results are never replaced silently.
    pub restart_from: Option<String>,
    /// Settings for stages that are not built yet (prompt, strength, seed,
    /// steps...), kept verbatim in the result so a run records what was asked.
    #[serde(flatten)]
    pub later: Map<String, Value>,
}

/// Runs every native stage after `capture` in `work`, reusing finished ones.
pub fn run_pipeline(work: &WorkDir, config: &RunConfig, job: &JobContext) -> Result<Value> {
    let manifest = work.manifest()?;
    if !manifest.stage("capture").is_some_and(|r| r.status == RecordStatus::Finished) {
        return Err(PipelineError::invalid(
            work.root(),
            "no finished capture in this folder: capture the turntable first",
        ));
    }
    // In pipeline order; `None` for a stage that is not built yet.
    let stages: Vec<(&str, Option<Box<dyn Stage>>)> = vec![
        ("points", Some(Box::new(PointsStage { config: config.points.clone() }))),
        (NOT_BUILT[0], None),
        (NOT_BUILT[1], None),
        ("train", Some(Box::new(TrainStage { config: config.train.clone() }))),
    ];
    let mut report = vec![json!({ "name": "capture", "status": "finished", "dir": work.stage_dir("capture") })];
    let mut result = Map::new();
    let mut restarting = false;
    for (name, stage) in &stages {
        job.check_cancel()?;
        let Some(stage) = stage else {
            job.log(format!("{name}: not built yet"));
            report.push(json!({ "name": name, "status": "not_built" }));
            continue;
        };
        restarting |= config.restart_from.as_deref() == Some(name);
        let stage_config = stage.config();
        let state = work.state(name, &stage_config)?;
        let reuse = match state {
            StageState::Finished(_) if !restarting => true,
            StageState::Stale(_) if !restarting => false, // begin() explains the change
            StageState::Finished(_) | StageState::Stale(_) => {
                job.log(format!("{name}: discarding the finished result to run it again"));
                work.discard(name)?;
                false
            }
            StageState::Pending => false,
        };
        let outputs = if reuse {
            job.log(format!("{name}: reusing the finished result"));
            work.manifest()?.stage(name).map(|r| r.outputs.clone()).unwrap_or(Value::Null)
        } else {
            job.set_stage(name);
            let staging = work.begin(name, &stage_config)?;
            let outputs = stage.run(&StageContext { work, out: &staging, job })?;
            work.commit(name, outputs.clone())?;
            outputs
        };
        let dir = work.stage_dir(name);
        collect_paths(&dir, &outputs, &mut result);
        report.push(json!({
            "name": name,
            "status": if reuse { "reused" } else { "done" },
            "dir": dir,
            "outputs": outputs,
        }));
    }
    result.insert("work_dir".into(), json!(work.root()));
    result.insert("stages".into(), Value::Array(report));
    result.insert("settings".into(), Value::Object(config.later.clone()));
    Ok(Value::Object(result))
}

/// Lifts well-known outputs (`points`, `splats`) to absolute paths in the result.
fn collect_paths(dir: &Path, outputs: &Value, into: &mut Map<String, Value>) {
    for key in ["points", "splats"] {
        if let Some(rel) = outputs.get(key).and_then(Value::as_str) {
            into.insert(key.into(), json!(dir.join(rel)));
        }
    }
}
