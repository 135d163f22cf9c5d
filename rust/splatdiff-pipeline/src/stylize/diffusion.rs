//! Keyframes restyled by Stable Diffusion img2img with ControlNets made
//! from the capture's passes, natively (splatdiff-diffusion on candle).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use image::RgbImage;
use serde::{Deserialize, Serialize};
use splatdiff_diffusion::control::{
    canny_control, depth_control, lineart_control, normal_control, CannyParams, ControlKind, LineartParams,
};
use splatdiff_diffusion::controlnet::{ControlNetModel, MultiControlNet};
use splatdiff_diffusion::loader::LoadOptions;
use splatdiff_diffusion::model::{ModelOptions, StableDiffusion};
use splatdiff_diffusion::pipeline::{
    restyle, ConsistencyMode, ControlUnit, DiffusionConfig, Keyframe, Progress, RunControl, Stage,
};
use splatdiff_diffusion::scheduler::SchedulerKind;
use splatdiff_propagate::image::Image;
use splatdiff_scene::maps::read_float_exr;

use super::{KeyInput, StylizeContext, Stylized, Stylizer};
use crate::error::{PipelineError, Result};

/// One ControlNet of the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlNetSpec {
    /// What its image is made from: depth, normal, canny or lineart.
    pub kind: ControlKind,
    /// A diffusers ControlNet folder.
    pub model: PathBuf,
    #[serde(default = "one")]
    pub weight: f64,
    /// Fraction of the steps after which it starts / stops acting.
    #[serde(default)]
    pub start: f64,
    #[serde(default = "one")]
    pub end: f64,
}

fn one() -> f64 {
    1.0
}

/// How keyframes are kept consistent with each other while restyled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Consistency {
    /// Each keyframe alone.
    None,
    /// Tiled into one canvas (the AUTOMATIC1111 habit).
    Grid,
    /// One batch sharing the first keyframe's self-attention keys and values.
    CrossFrame,
}

/// Settings of the diffusion stylizer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiffusionStylizerConfig {
    /// A diffusers folder or a single-file SD 1.x / 2.x checkpoint.
    pub model: PathBuf,
    /// A diffusers folder whose configs and tokenizer go with a single file.
    pub config_from: Option<PathBuf>,
    pub prompt: String,
    pub negative_prompt: String,
    pub strength: f64,
    pub steps: usize,
    pub guidance_scale: f64,
    pub seed: u64,
    pub scheduler: SchedulerKind,
    pub consistency: Consistency,
    pub controlnets: Vec<ControlNetSpec>,
    /// Colour under the object where the render is transparent: SD models
    /// know objects on plain light backgrounds best.
    pub background: [f32; 3],
}

impl Default for DiffusionStylizerConfig {
    fn default() -> Self {
        let d = DiffusionConfig::default();
        Self {
            model: PathBuf::new(),
            config_from: None,
            prompt: String::new(),
            negative_prompt: String::new(),
            strength: d.strength,
            steps: d.steps,
            guidance_scale: d.guidance_scale,
            seed: 0,
            scheduler: d.scheduler,
            consistency: Consistency::CrossFrame,
            controlnets: Vec::new(),
            background: [1.0; 3],
        }
    }
}

impl DiffusionStylizerConfig {
    pub fn validate(&self) -> Result<()> {
        if self.model.as_os_str().is_empty() {
            return Err(PipelineError::invalid("stylize", "no diffusion model given: choose a model file or folder"));
        }
        if !self.model.exists() {
            return Err(PipelineError::invalid(&self.model, "the diffusion model does not exist"));
        }
        for c in &self.controlnets {
            if !c.model.is_dir() {
                return Err(PipelineError::invalid(
                    &c.model,
                    format!("the {} ControlNet folder does not exist", c.kind),
                ));
            }
        }
        self.diffusion_config(1).validate()?;
        Ok(())
    }

    fn diffusion_config(&self, count: usize) -> DiffusionConfig {
        DiffusionConfig {
            prompt: self.prompt.clone(),
            negative_prompt: self.negative_prompt.clone(),
            strength: self.strength,
            steps: self.steps,
            guidance_scale: self.guidance_scale,
            seed: self.seed,
            scheduler: self.scheduler,
            consistency: match self.consistency {
                Consistency::None => ConsistencyMode::None,
                Consistency::Grid => ConsistencyMode::Grid { cols: (count as f64).sqrt().ceil().max(1.0) as usize },
                Consistency::CrossFrame => ConsistencyMode::CrossFrame { anchors: vec![0] },
            },
            controlnets: self
                .controlnets
                .iter()
                .map(|c| ControlUnit {
                    kind: c.kind,
                    model: c.model.clone(),
                    weight: c.weight,
                    start: c.start,
                    end: c.end,
                })
                .collect(),
        }
    }
}

pub struct DiffusionStylizer {
    pub config: DiffusionStylizerConfig,
}

/// `image` composited over `background`, as 8-bit RGB.
fn over_background(image: &Image, background: [f32; 3]) -> RgbImage {
    RgbImage::from_fn(image.width as u32, image.height as u32, |x, y| {
        let p = image.pixel(x as usize, y as usize);
        let a = if image.channels == 4 { p[3] } else { 1.0 };
        let rgb = image.rgb(y as usize * image.width + x as usize);
        image::Rgb(std::array::from_fn(|c| {
            ((rgb[c] * a + background[c] * (1.0 - a)).clamp(0.0, 1.0) * 255.0).round() as u8
        }))
    })
}

impl DiffusionStylizer {
    /// The control image of `kind` for the keyframe at capture frame `index`.
    fn control(&self, kind: ControlKind, rgb: &RgbImage, index: usize, ctx: &StylizeContext) -> Result<RgbImage> {
        let frame = &ctx.capture.dataset.frames[index];
        let pass = |path: &'_ Option<PathBuf>, what: &str| -> Result<PathBuf> {
            path.clone().ok_or_else(|| {
                PipelineError::invalid(
                    &frame.image_path,
                    format!("frame {} has no {what} pass for the {kind} ControlNet", frame.name),
                )
            })
        };
        Ok(match kind {
            ControlKind::Depth => depth_control(&read_float_exr(&pass(&frame.depth_path, "depth")?)?)?,
            ControlKind::Normal => {
                normal_control(&read_float_exr(&pass(&frame.normal_path, "normal")?)?, &frame.camera)?
            }
            ControlKind::Canny => canny_control(rgb, &CannyParams::default())?,
            ControlKind::Lineart => lineart_control(rgb, &LineartParams::default())?,
        })
    }
}

impl Stylizer for DiffusionStylizer {
    fn stylize(&self, keys: &[KeyInput], ctx: &StylizeContext) -> Result<Stylized> {
        let job = ctx.job;
        let mut config = self.config.clone();
        config.strength = ctx.strength;
        // img2img runs floor(steps × strength) steps: a low strength in a
        // late iteration would leave none, so the schedule gets finer instead.
        if ctx.strength > 0.0 && (config.steps as f64 * ctx.strength) < 1.0 {
            let steps = (1.0 / ctx.strength).ceil() as usize;
            job.log(format!(
                "diffusion: strength {} runs no step of {}; using {steps} steps",
                ctx.strength, config.steps
            ));
            config.steps = steps;
        }
        config.validate()?;
        let diffusion = config.diffusion_config(keys.len());
        let keyframes = keys
            .iter()
            .map(|k| {
                let rgb = over_background(k.image, config.background);
                let controls = config
                    .controlnets
                    .iter()
                    .map(|c| self.control(c.kind, &rgb, k.index, ctx))
                    .collect::<Result<Vec<_>>>()?;
                Ok(Keyframe { image: rgb, controls })
            })
            .collect::<Result<Vec<_>>>()?;
        job.set_message(format!("loading {}", config.model.display()));
        let device = candle_core::Device::Cpu;
        let options = ModelOptions {
            load: LoadOptions { config_dir: config.config_from.clone(), prediction_type: None },
            ..Default::default()
        };
        let mut model = StableDiffusion::load(&config.model, &options, &device)?;
        let nets = config
            .controlnets
            .iter()
            .map(|c| ControlNetModel::from_folder(&c.model, model.unet.config(), model.dtype, &device))
            .collect::<splatdiff_diffusion::Result<Vec<_>>>()?;
        job.check_cancel()?;
        let cancel = AtomicBool::new(false);
        let mut on_progress = |p: Progress| {
            if job.is_cancelled() {
                cancel.store(true, Ordering::Relaxed);
            }
            if p.stage == Stage::Denoising {
                job.set_steps(p.step, p.total, 0.0, 1.0, "denoising step");
            }
        };
        let mut control = RunControl { progress: Some(&mut on_progress), cancel: Some(&cancel) };
        let out = restyle(&mut model, &MultiControlNet::new(nets), &diffusion, &keyframes, &mut control)?;
        for m in &out.messages {
            job.log(format!("diffusion: {m}"));
        }
        let images = out
            .images
            .iter()
            .map(|img| {
                let data = img.as_raw().iter().map(|&v| v as f32 / 255.0).collect();
                Ok(Image::from_data(img.width() as usize, img.height() as usize, 3, data)?)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Stylized::Images(images))
    }
}
