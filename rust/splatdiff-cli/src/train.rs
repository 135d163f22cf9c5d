//! `splatdiff train` and `splatdiff render`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use glam::Vec3;
use serde_json::json;
use splatdiff_pipeline::points::{back_project, PointsConfig};
use splatdiff_pipeline::render::render_views;
use splatdiff_pipeline::{Job, PipelineError};
use splatdiff_render::gpu::GpuContext;
use splatdiff_render::Splats;
use splatdiff_scene::transforms::{find_transforms, read_transforms_unchecked};
use splatdiff_scene::{read_splats, write_splats, Camera};
use splatdiff_train::{init, load_dataset, TrainConfig, Trainer};

use crate::follow;

/// The `train` command's arguments.
pub struct TrainArgs {
    pub data: PathBuf,
    pub steps: u64,
    pub out: PathBuf,
    pub max_side: Option<u32>,
    pub max_splats: Option<usize>,
    pub init: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub checkpoint: PathBuf,
}

/// A transforms.json given directly, or found in a folder.
fn transforms_path(data: &Path) -> Result<PathBuf> {
    Ok(find_transforms(data, &["transforms_train.json", "transforms.json"])?)
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: invalid settings", path.display()))
}

fn err(e: impl std::fmt::Display) -> PipelineError {
    PipelineError::Internal(e.to_string())
}

pub fn train(args: TrainArgs) -> Result<()> {
    let transforms = transforms_path(&args.data)?;
    let mut config: TrainConfig = match &args.config {
        Some(path) => read_json(path)?,
        None => TrainConfig::default(),
    };
    config.steps = args.steps;
    config.max_side = args.max_side.or(config.max_side);
    if let Some(cap) = args.max_splats {
        config.max_splats = cap;
    }
    let out = args.out.clone();
    let job = Job::spawn("train", move |ctx| {
        ctx.set_stage("load", (0.0, 0.05));
        let images = load_dataset(&transforms, config.max_side)
            .map_err(|e| PipelineError::invalid(&transforms, e.to_string()))?;
        let gpu = GpuContext::new().map_err(err)?;
        ctx.log(format!(
            "{} training images of {}x{} on {}",
            images.len(),
            images[0].width,
            images[0].height,
            gpu.adapter_name()
        ));
        let resumable = args.checkpoint.join("checkpoint.json").is_file();
        let mut trainer = if resumable {
            let trainer = Trainer::resume(&gpu, images, &args.checkpoint).map_err(err)?;
            ctx.log(format!("resuming from step {} in {}", trainer.step_count(), args.checkpoint.display()));
            trainer
        } else {
            let start = initial_splats(&args, &transforms, &images, &config, ctx)?;
            ctx.log(format!("{} initial splats", start.len()));
            Trainer::new(&gpu, images, start, config.clone()).map_err(err)?
        };
        trainer.set_checkpoint_dir(Some(args.checkpoint.clone()));
        ctx.set_stage("train", (0.05, 1.0));
        let steps = trainer.config().steps as usize;
        let started = std::time::Instant::now();
        let first = trainer.step_count();
        let outcome = trainer
            .train(
                |s| {
                    let rate = (s.step - first) as f64 / started.elapsed().as_secs_f64().max(1e-9);
                    ctx.set_steps(s.step as usize, steps, 0.0, 1.0, "step");
                    if s.step % 100 == 0 {
                        ctx.log(format!("step {} loss {:.4} splats {} ({rate:.2} steps/s)", s.step, s.loss, s.splats));
                    }
                },
                || ctx.is_cancelled(),
            )
            .map_err(err)?;
        write_splats(&args.out, &trainer.splats().to_gaussians())?;
        Ok(
            json!({ "steps": outcome.step, "splats": trainer.splat_count(), "seconds": started.elapsed().as_secs_f64() }),
        )
    });
    let result = follow(job)?;
    println!(
        "wrote {} splats to {} ({} steps in {:.1} s)",
        result["splats"],
        out.display(),
        result["steps"],
        result["seconds"].as_f64().unwrap_or(0.0)
    );
    Ok(())
}

/// The splats training starts from: a given PLY, the frames' depth
/// back-projected, or random points around what the cameras look at.
fn initial_splats(
    args: &TrainArgs,
    transforms: &Path,
    images: &[splatdiff_train::TrainImage],
    config: &TrainConfig,
    ctx: &splatdiff_pipeline::JobContext,
) -> splatdiff_pipeline::Result<Splats> {
    if let Some(path) = &args.init {
        return init::from_points(&read_splats(path)?).map_err(err);
    }
    let dataset = read_transforms_unchecked(transforms)?;
    if dataset.frames.iter().all(|f| f.depth_path.as_ref().is_some_and(|p| p.is_file())) {
        ctx.log("initialising from the frames' depth maps");
        let points = PointsConfig { max_points: config.max_splats.min(100_000), ..PointsConfig::default() };
        return init::from_points(&back_project(transforms, &points, ctx)?).map_err(err);
    }
    let cameras: Vec<Camera> = images.iter().map(|i| i.camera).collect();
    let (centre, half) = looked_at_box(&cameras);
    ctx.log(format!("initialising from random points in a {:.2} m box", 2.0 * half));
    Ok(init::random(
        centre - Vec3::splat(half),
        centre + Vec3::splat(half),
        config.max_splats.min(100_000) / 2,
        config.seed,
    ))
}

/// A box around what the cameras look at: centred where their view axes
/// pass closest to each other (least squares), half as wide as their mean distance to it.
fn looked_at_box(cameras: &[Camera]) -> (Vec3, f32) {
    let (mut a, mut b) = (glam::Mat3::ZERO, Vec3::ZERO);
    for cam in cameras {
        let d = cam.forward();
        let p = glam::Mat3::IDENTITY - glam::Mat3::from_cols(d * d.x, d * d.y, d * d.z);
        a += p;
        b += p * cam.position();
    }
    let centre = if a.determinant().abs() > 1e-6 {
        a.inverse() * b
    } else {
        cameras.iter().map(Camera::position).sum::<Vec3>() / cameras.len() as f32
    };
    let distance = cameras.iter().map(|c| (c.position() - centre).length()).sum::<f32>() / cameras.len() as f32;
    (centre, 0.5 * distance)
}

pub fn render(model: &Path, cameras: &Path, out: &Path, max_side: Option<u32>) -> Result<()> {
    let frames = read_transforms_unchecked(cameras)?.frames;
    let (model, out_dir) = (model.to_path_buf(), out.to_path_buf());
    let job = Job::spawn("render", move |ctx| {
        ctx.set_stage("render", (0.0, 1.0));
        let images = render_views(&model, &frames, &out_dir, max_side, ctx)?;
        Ok(json!({ "views": images.len() }))
    });
    let result = follow(job)?;
    println!("rendered {} views into {}", result["views"], out.display());
    Ok(())
}
