//! `splatdiff run --config run.json`: the whole loop from the command line,
//! on a work folder whose capture came from Blender, or on a capture
//! (transforms.json with depth, normal and mask passes) imported into it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};
use splatdiff_pipeline::{run_pipeline, Job, RunConfig, WorkDir};
use splatdiff_scene::transforms::{find_transforms, read_transforms, write_transforms};

use crate::follow;

#[derive(Args)]
pub struct RunArgs {
    /// Run config as JSON: the pipeline's settings (see README), plus
    /// optional "work" and "capture" paths. Relative paths in it (these,
    /// the model, ControlNets, style image) are taken from the file's folder.
    #[arg(long)]
    pub config: PathBuf,
    /// The run's work folder (overrides "work" in the config).
    #[arg(long)]
    pub work: Option<PathBuf>,
    /// A capture to import as the run's `capture` stage: a folder or
    /// transforms.json whose frames have depth (and ideally normal and mask)
    /// passes (overrides "capture" in the config).
    #[arg(long)]
    pub capture: Option<PathBuf>,
    /// Iterations wanted (overrides the config); finished ones are reused.
    #[arg(long)]
    pub iterations: Option<usize>,
    /// The external edits are done: go on from the pause.
    #[arg(long)]
    pub resume: bool,
    /// Re-run this stage and those after it even if their settings changed.
    #[arg(long)]
    pub restart_from: Option<String>,
}

/// A path from the config file, relative to the file's folder.
fn config_path(value: Option<Value>, base: &Path, key: &str) -> Result<Option<PathBuf>> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(base.join(s))),
        Some(other) => bail!("\"{key}\" must be a path string, not {other}"),
    }
}

pub fn run(args: RunArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.config).with_context(|| format!("{}", args.config.display()))?;
    let mut value: Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", args.config.display()))?;
    let base = args.config.parent().unwrap_or(Path::new(".")).to_path_buf();
    let object = value.as_object_mut().with_context(|| format!("{}: expected a JSON object", args.config.display()))?;
    let work = config_path(object.remove("work"), &base, "work")?;
    let capture = config_path(object.remove("capture"), &base, "capture")?;
    let mut config: RunConfig =
        serde_json::from_value(value).with_context(|| format!("{}: invalid run config", args.config.display()))?;
    if let Some(stylizer) = config.stylize.as_mut() {
        stylizer.resolve_paths(&base);
    }
    let Some(work) = args.work.or(work) else {
        bail!("{}: no work folder: give --work DIR or \"work\" in the config", args.config.display());
    };
    if let Some(n) = args.iterations {
        config.iterations = n;
    }
    config.resume |= args.resume;
    if args.restart_from.is_some() {
        config.restart_from = args.restart_from;
    }
    let work = WorkDir::open(&work)?;
    if let Some(capture) = args.capture.or(capture) {
        import_capture(&work, &capture)?;
    }
    let job = Job::spawn("pipeline", move |ctx| run_pipeline(&work, &config, ctx));
    let result = follow(job)?;
    print_result(&result);
    Ok(())
}

/// Copies a capture into the work folder's `capture` stage (reused when the
/// same capture was imported before).
fn import_capture(work: &WorkDir, source: &Path) -> Result<()> {
    let transforms = find_transforms(source, &["transforms.json", "transforms_train.json"])?;
    let transforms = std::path::absolute(&transforms)?;
    let mut dataset = read_transforms(&transforms)?;
    let config = json!({ "imported_from": transforms, "frames": dataset.frames.len() });
    match work.state("capture", &config)? {
        splatdiff_pipeline::StageState::Finished(_) => return Ok(()),
        splatdiff_pipeline::StageState::Stale(_) => {
            bail!("{}: this work folder holds another capture; use a new work folder", work.root().display())
        }
        splatdiff_pipeline::StageState::Pending => {}
    }
    let staging = work.begin("capture", &config)?;
    let copy = |from: &Path, sub: &str, name: &str| -> Result<PathBuf> {
        let ext = from.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default();
        let to = staging.join(sub).join(format!("{name}.{ext}"));
        std::fs::create_dir_all(to.parent().expect("has a parent"))?;
        std::fs::copy(from, &to).with_context(|| format!("cannot copy {}", from.display()))?;
        Ok(to)
    };
    for frame in &mut dataset.frames {
        let name = frame.name.clone();
        frame.image_path = copy(&frame.image_path, "images", &name)?;
        frame.file_path =
            frame.image_path.strip_prefix(&staging).expect("inside staging").to_string_lossy().into_owned();
        for (path, sub) in
            [(&mut frame.depth_path, "depth"), (&mut frame.normal_path, "normal"), (&mut frame.mask_path, "mask")]
        {
            if let Some(p) = path.as_mut() {
                *p = copy(p, sub, &name)?;
            }
        }
    }
    dataset.root = staging.clone();
    write_transforms(&staging.join("transforms.json"), &dataset)?;
    work.commit("capture", json!({ "transforms": "transforms.json", "frames": dataset.frames.len() }))?;
    Ok(())
}

fn print_result(result: &Value) {
    for stage in result["stages"].as_array().into_iter().flatten() {
        println!("{:>12}: {}", stage["name"].as_str().unwrap_or("?"), stage["status"].as_str().unwrap_or("?"));
    }
    let f = |v: &Value, d: usize| v.as_f64().map(|x| format!("{x:.d$}")).unwrap_or_else(|| "-".into());
    println!("capture reprojection error: {}", f(&result["capture_reprojection"], 4));
    println!("iteration  strength  keyframes  propagated  splats  refit PSNR  refit SSIM  PSNR vs original");
    for it in result["iterations"].as_array().into_iter().flatten() {
        let m = &it["metrics"];
        println!(
            "{:>9}  {:>8}  {:>9}  {:>10}  {:>6}  {:>10}  {:>10}  {:>16}",
            it["index"],
            f(&it["strength"], 2),
            f(&m["keyframe_reprojection"], 4),
            f(&m["propagated_reprojection"], 4),
            f(&m["splat_reprojection"], 4),
            f(&m["refit_psnr"], 2),
            f(&m["refit_ssim"], 3),
            f(&m["change_psnr"], 2),
        );
    }
    if let Some(p) = result["paused"].as_object() {
        println!("paused: {}", p["message"].as_str().unwrap_or(""));
        println!("when the edits are done: splatdiff run --config ... --resume");
    }
    if let Some(report) = result["report"]["html"].as_str() {
        println!("report: {report}");
    }
    if let Some(splats) = result["splats"].as_str() {
        println!("splats: {splats}");
    }
}
