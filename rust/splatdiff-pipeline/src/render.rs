//! Rendering trained splats at a capture's cameras, and the `render-N`
//! stage: iteration N's splats seen from every turntable view, which is
//! what the next iteration restyles, what its metrics measure, and what the
//! user looks at (a contact sheet and a turntable GIF).

use std::path::Path;

use glam::Vec3;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use splatdiff_propagate::image::Image;
use splatdiff_propagate::io::Capture;
use splatdiff_render::gpu::{GpuContext, GpuRenderer, GpuSplats};
use splatdiff_render::{Splats, View};
use splatdiff_scene::maps::{write_depth_exr, FloatMap};
use splatdiff_scene::transforms::{write_transforms, Dataset, Frame};
use splatdiff_scene::{read_splats, Camera};
use splatdiff_train::dataset::training_size;

use crate::error::{PipelineError, Result};
use crate::job::JobContext;
use crate::media::{contact_sheet, write_turntable_gif};
use crate::metrics::{neighbour_pairs, reprojection_error, similarity};
use crate::stage::{Stage, StageContext};

fn gpu_err(e: impl std::fmt::Display) -> PipelineError {
    PipelineError::Stage { stage: "render", message: e.to_string() }
}

/// Renders the splats in `model` at every frame of `frames` (longer side at
/// most `max_side` when given) into `out`: `NAME.png` (straight RGBA),
/// `depth/NAME.exr` and a `transforms.json` of the rendered views.
/// Returns the renders as RGBA images, in frame order.
pub fn render_views(
    model: &Path,
    frames: &[Frame],
    out: &Path,
    max_side: Option<u32>,
    job: &JobContext,
) -> Result<Vec<Image>> {
    let splats = Splats::from_gaussians(&read_splats(model)?);
    let gpu = GpuContext::new().map_err(gpu_err)?;
    let gpu_splats = GpuSplats::upload(&gpu, &splats).map_err(gpu_err)?;
    let mut renderer = GpuRenderer::new(&gpu).map_err(gpu_err)?;
    let depth_dir = out.join("depth");
    std::fs::create_dir_all(&depth_dir).map_err(|e| PipelineError::io(&depth_dir, e))?;
    let mut rendered = Vec::with_capacity(frames.len());
    let mut images = Vec::with_capacity(frames.len());
    for (i, frame) in frames.iter().enumerate() {
        job.check_cancel()?;
        job.set_steps(i, frames.len(), 0.0, 1.0, "view");
        let k = frame.camera.intrinsics;
        let (w, h) = training_size(k.width, k.height, max_side);
        let camera = Camera::new(frame.camera.cam_to_world, k.scaled(w, h));
        let view = View { camera, active_sh_degree: splats.sh_degree, background: Vec3::ZERO };
        let image = renderer.render(&gpu, &gpu_splats, &view).map_err(gpu_err)?;
        let rgba: Vec<f32> = image.straight_rgba(Vec3::ZERO).into_iter().flatten().collect();
        let rgba = Image::from_data(w as usize, h as usize, 4, rgba)?;
        let image_path = out.join(format!("{}.png", frame.name));
        let depth_path = depth_dir.join(format!("{}.exr", frame.name));
        rgba.write_png(&image_path)?;
        write_depth_exr(&depth_path, &FloatMap { width: w, height: h, channels: 1, data: image.depth })?;
        rendered.push(Frame {
            name: frame.name.clone(),
            file_path: format!("{}.png", frame.name),
            image_path,
            camera,
            depth_path: Some(depth_path),
            normal_path: None,
            mask_path: None,
        });
        images.push(rgba);
    }
    let dataset = Dataset { root: out.to_path_buf(), frames: rendered, warnings: vec![], extra: Default::default() };
    write_transforms(&out.join("transforms.json"), &dataset)?;
    Ok(images)
}

/// Settings of the `render` stages' pictures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RenderStageConfig {
    /// Longer side of the turntable GIF's frames.
    pub gif_side: usize,
    pub gif_fps: u32,
    /// Side of one view in the contact sheet.
    pub sheet_side: usize,
}

impl Default for RenderStageConfig {
    fn default() -> Self {
        Self { gif_side: 256, gif_fps: 12, sheet_side: 128 }
    }
}

/// The `render-N` stage.
pub struct RenderStage<'a> {
    pub capture: &'a Capture,
    pub iteration: usize,
    pub held_out: Vec<String>,
    pub config: RenderStageConfig,
}

impl Stage for RenderStage<'_> {
    fn name(&self) -> String {
        format!("render-{}", self.iteration)
    }

    fn config(&self) -> Value {
        json!({ "model": format!("train-{}", self.iteration), "held_out": self.held_out, "pictures": self.config })
    }

    fn run(&self, ctx: &StageContext) -> Result<Value> {
        let n = self.iteration;
        let model = ctx.work.stage_dir(&format!("train-{n}")).join("model.ply");
        let images_dir = ctx.out.join("images");
        let frames = &self.capture.dataset.frames;
        // At the capture's size: the metrics compare with its passes pixel for pixel.
        let renders = render_views(&model, frames, &images_dir, None, ctx.job)?;
        ctx.job.set_message("metrics and pictures");
        let geoms: Vec<_> = self.capture.frames.iter().map(|f| &f.geometry).collect();
        let refs: Vec<&Image> = renders.iter().collect();
        let splat_reprojection = reprojection_error(&geoms, &refs, &neighbour_pairs(refs.len()));

        let propagated_dir = ctx.work.stage_dir(&format!("propagate-{n}")).join("images");
        let held: Vec<usize> =
            frames.iter().enumerate().filter(|(_, f)| self.held_out.contains(&f.name)).map(|(i, _)| i).collect();
        let truth = held
            .iter()
            .map(|&i| Ok(Image::read(&propagated_dir.join(format!("{}.png", frames[i].name)))?))
            .collect::<Result<Vec<_>>>()?;
        let masks: Vec<&[f32]> = held.iter().map(|&i| self.capture.frames[i].geometry.mask.as_slice()).collect();
        let refit = similarity(
            &held.iter().map(|&i| &renders[i]).collect::<Vec<_>>(),
            &truth.iter().collect::<Vec<_>>(),
            &masks,
        );

        let originals: Vec<&Image> = self.capture.frames.iter().map(|f| &f.render).collect();
        let all_masks: Vec<&[f32]> = self.capture.frames.iter().map(|f| f.geometry.mask.as_slice()).collect();
        let change = similarity(&refs, &originals, &all_masks);

        let cols = (refs.len() as f64).sqrt().ceil() as usize;
        contact_sheet(&refs, cols.max(1), self.config.sheet_side)?.write_png(&ctx.out.join("contact.png"))?;
        write_turntable_gif(&ctx.out.join("turntable.gif"), &renders, self.config.gif_side, self.config.gif_fps)?;
        Ok(json!({
            "images": "images",
            "sheet": "contact.png",
            "turntable": "turntable.gif",
            "splat_reprojection": splat_reprojection,
            "refit_psnr": refit.map(|s| s.psnr),
            "refit_ssim": refit.map(|s| s.ssim),
            "refit_frames": held.len(),
            "change_psnr": change.map(|s| s.psnr),
            "change_ssim": change.map(|s| s.ssim),
        }))
    }
}
