//! The geometry passes of a capture: depth, normals and object mask for
//! every frame, rasterized from the captured mesh (see
//! [`splatdiff_scene::raster`] for why they do not come from the renderer).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;
use serde_json::{json, Value};
use splatdiff_scene::maps::{write_depth_exr, write_mask_png, write_normal_exr, FloatMap};
use splatdiff_scene::raster::{rasterize, TriangleMesh};
use splatdiff_scene::transforms::read_transforms_unchecked;

use crate::error::{PipelineError, Result};
use crate::job::JobContext;

/// Writes the depth, normal and mask files named by every frame of the
/// `transforms.json` at `transforms_path`. Frames without a path for a pass
/// do not get that pass. Returns `{"frames": N}`.
pub fn render_passes(transforms_path: &Path, mesh: &TriangleMesh, ctx: &JobContext) -> Result<Value> {
    ctx.set_stage("passes", (0.0, 1.0));
    if let Some(problem) = mesh.problem() {
        return Err(PipelineError::invalid(transforms_path, format!("cannot render passes: {problem}")));
    }
    let dataset = read_transforms_unchecked(transforms_path)?;
    let total = dataset.frames.len();
    let finished = AtomicUsize::new(0);
    dataset.frames.par_iter().try_for_each(|frame| -> Result<()> {
        ctx.check_cancel()?;
        let passes = rasterize(mesh, &frame.camera);
        let (w, h) = (passes.width, passes.height);
        for path in [&frame.depth_path, &frame.normal_path, &frame.mask_path].into_iter().flatten() {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| PipelineError::io(parent, e))?;
            }
        }
        if let Some(path) = &frame.depth_path {
            write_depth_exr(path, &FloatMap { width: w, height: h, channels: 1, data: passes.depth })?;
        }
        if let Some(path) = &frame.normal_path {
            let data = passes.normal.into_iter().flatten().collect();
            write_normal_exr(path, &FloatMap { width: w, height: h, channels: 3, data })?;
        }
        if let Some(path) = &frame.mask_path {
            write_mask_png(path, w, h, &passes.mask)?;
        }
        let done = finished.fetch_add(1, Ordering::Relaxed) + 1;
        ctx.set_steps(done, total, 0.0, 1.0, "frame");
        Ok(())
    })?;
    Ok(json!({ "frames": total }))
}
