//! The `points` stage: an initial point cloud for splat training, made by
//! back-projecting every captured frame's depth through its camera.
//!
//! 3DGS initialises from a structure-from-motion point cloud; a turntable
//! capture has something better, exact depth, so every object pixel of every
//! view becomes a candidate point with the colour it was rendered with.
//! Candidates are thinned to `max_points` by a hash of (frame, pixel), which
//! keeps the result identical whatever the thread count.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use glam::Vec2;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use splatdiff_scene::maps::{read_float_exr, read_mask_png};
use splatdiff_scene::ply::{write_splats, GaussianSplats};
use splatdiff_scene::transforms::{read_transforms, Frame};
use splatdiff_scene::SceneError;

use crate::error::{PipelineError, Result};
use crate::job::JobContext;
use crate::stage::{Stage, StageContext};

/// Zeroth-order spherical harmonic constant, 1 / (2·sqrt(pi)).
const SH_C0: f32 = 0.282_094_8;

/// Settings of the `points` stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PointsConfig {
    /// Upper bound on the number of points kept.
    pub max_points: usize,
    /// Initial opacity of every point (3DGS uses 0.1).
    pub opacity: f32,
}

impl Default for PointsConfig {
    fn default() -> Self {
        Self { max_points: 30_000, opacity: 0.1 }
    }
}

/// Builds the initial point cloud from the `capture` stage's folder.
pub struct PointsStage {
    pub config: PointsConfig,
}

impl Stage for PointsStage {
    fn name(&self) -> String {
        "points".into()
    }

    fn config(&self) -> Value {
        serde_json::to_value(&self.config).expect("config serialises")
    }

    fn run(&self, ctx: &StageContext) -> Result<Value> {
        let transforms = ctx.work.stage_dir("capture").join("transforms.json");
        let splats = back_project(&transforms, &self.config, ctx.job)?;
        let path = ctx.out.join("points.ply");
        write_splats(&path, &splats)?;
        Ok(json!({ "points": "points.ply", "count": splats.len() }))
    }
}

/// One frame's candidate points, before thinning to the budget.
struct FramePoints {
    points: Vec<([f32; 3], [f32; 3], f32)>, // position, sRGB colour, footprint radius
}

/// Back-projects the depth of every frame of `transforms` into coloured points.
pub fn back_project(transforms: &Path, config: &PointsConfig, job: &JobContext) -> Result<GaussianSplats> {
    if config.max_points == 0 || !(config.opacity > 0.0 && config.opacity < 1.0) {
        return Err(PipelineError::invalid(transforms, "points: max_points must be > 0 and opacity in (0, 1)"));
    }
    let dataset = read_transforms(transforms)?;
    let frames: Vec<&Frame> = dataset.frames.iter().filter(|f| f.depth_path.is_some()).collect();
    if frames.is_empty() {
        return Err(PipelineError::invalid(transforms, "no frame has a depth map to build points from"));
    }
    let done = AtomicUsize::new(0);
    let per_frame: Vec<FramePoints> = frames
        .par_iter()
        .map(|frame| {
            job.check_cancel()?;
            let points = frame_points(frame)?;
            job.set_steps(done.fetch_add(1, Ordering::Relaxed) + 1, frames.len(), 0.0, 0.9, "frame");
            Ok(points)
        })
        .collect::<Result<_>>()?;

    let candidates: usize = per_frame.iter().map(|f| f.points.len()).sum();
    if candidates == 0 {
        return Err(PipelineError::invalid(transforms, "the object is not visible in any frame (empty masks)"));
    }
    let keep = (config.max_points as f64 / candidates as f64).min(1.0);
    // Kept points sit about 1/sqrt(keep) pixels apart on the surface.
    let spacing = (1.0 / keep).sqrt() as f32;
    let opacity_logit = (config.opacity / (1.0 - config.opacity)).ln();
    let mut splats = GaussianSplats::default();
    for (index, frame) in per_frame.iter().enumerate() {
        for (k, (position, colour, footprint)) in frame.points.iter().enumerate() {
            if unit_hash(index as u32, k as u32) >= keep {
                continue;
            }
            splats.positions.push(*position);
            splats.sh_dc.push(colour.map(|c| (c - 0.5) / SH_C0));
            splats.opacity.push(opacity_logit);
            splats.scales.push([(footprint * spacing).ln(); 3]);
            splats.rotations.push([1.0, 0.0, 0.0, 0.0]);
        }
    }
    job.set_progress(1.0, format!("{} points from {} frames", splats.len(), frames.len()));
    Ok(splats)
}

fn frame_points(frame: &Frame) -> Result<FramePoints> {
    let depth_path = frame.depth_path.as_ref().expect("filtered on depth");
    let depth = read_float_exr(depth_path)?;
    let k = frame.camera.intrinsics;
    if (depth.width, depth.height) != (k.width, k.height) || depth.channels != 1 {
        return Err(SceneError::invalid(
            depth_path,
            format!(
                "depth is {}x{}x{}, expected {}x{}x1",
                depth.width, depth.height, depth.channels, k.width, k.height
            ),
        )
        .into());
    }
    let image = image::open(&frame.image_path)
        .map_err(|e| SceneError::invalid(&frame.image_path, format!("cannot read image: {e}")))?
        .to_rgba8();
    if image.dimensions() != (k.width, k.height) {
        return Err(SceneError::invalid(
            &frame.image_path,
            format!("image is {}x{}, the camera says {}x{}", image.width(), image.height(), k.width, k.height),
        )
        .into());
    }
    let mask = match &frame.mask_path {
        Some(path) => Some(read_mask_png(path)?.2),
        None => None,
    };
    let mut points = Vec::new();
    for y in 0..k.height {
        for x in 0..k.width {
            let i = (y * k.width + x) as usize;
            let d = depth.data[i];
            let covered = mask.as_ref().is_none_or(|m| m.get(i).is_some_and(|&v| v >= 128));
            if !(d.is_finite() && d > 0.0 && covered) {
                continue;
            }
            let px = image.get_pixel(x, y).0;
            if px[3] == 0 {
                continue;
            }
            let world = frame.camera.unproject(Vec2::new(x as f32 + 0.5, y as f32 + 0.5), d);
            let colour = [px[0], px[1], px[2]].map(|c| c as f32 / 255.0);
            points.push((world.to_array(), colour, d / k.fx));
        }
    }
    Ok(FramePoints { points })
}

/// A number in [0, 1) that depends only on (frame, candidate), so thinning
/// is the same on every run and thread count (splitmix64 finaliser).
fn unit_hash(frame: u32, candidate: u32) -> f64 {
    let mut z = ((frame as u64) << 32 | candidate as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}
