//! img2img for keyframes: classifier-free guidance with a negative prompt,
//! strength, steps, seed; any number of ControlNets with their own weights
//! and step ranges; and three ways of keeping keyframes alike
//! ([`ConsistencyMode`]).
//!
//! The denoising recipe is diffusers' `StableDiffusion(ControlNet)Img2ImgPipeline`:
//! encode the image with the VAE (sampling its latent distribution), noise
//! it to the first timestep the strength leaves (see
//! [`crate::scheduler::img2img_start`]), then per step run the UNet on
//! `[latents, latents]` against `[negative, prompt]` embeddings, mix
//! `uncond + guidance * (cond - uncond)` and step the scheduler; finally
//! decode. All randomness comes from a [`NoiseSource`], normally a seeded
//! [`NoiseRng`], so a seed reproduces a result exactly.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Device, Tensor};
use image::imageops::{self, FilterType};
use image::{Rgb, RgbImage};
use serde::{Deserialize, Serialize};

use crate::control::ControlKind;
use crate::controlnet::MultiControlNet;
use crate::error::{DiffusionError, Result};
use crate::model::StableDiffusion;
use crate::rng::{NoiseRng, NoiseSource, NoiseUse};
use crate::scheduler::{build_scheduler, SchedulerKind};
use crate::unet::{AttentionMode, CrossFrameAttention};

/// Image sides must be multiples of this (the VAE's downscale factor).
const SIZE_MULTIPLE: u32 = 8;

/// How keyframes are kept consistent with each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum ConsistencyMode {
    /// Each keyframe is restyled on its own (plain per-frame img2img).
    None,
    /// The keyframes (and their control images) are tiled row by row into
    /// one canvas of `cols` columns, restyled as one image and split back,
    /// as artists do in the AUTOMATIC1111 web UI.
    Grid { cols: usize },
    /// All keyframes are denoised in one batch whose self-attention also
    /// reads the keys and values of the `anchors` keyframes (Pix2Video /
    /// Text2Video-Zero cross-frame attention).
    CrossFrame { anchors: Vec<usize> },
}

/// One ControlNet of a run: what its image is made from, where its weights
/// are, how strongly and during which part of the steps it acts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlUnit {
    pub kind: ControlKind,
    /// The diffusers ControlNet folder (recorded for the manifest).
    pub model: PathBuf,
    /// Conditioning scale (1.0 = as trained).
    pub weight: f64,
    /// Fraction of the steps run after which it starts acting (0 = from the first).
    pub start: f64,
    /// Fraction of the steps run after which it stops (1 = to the last).
    pub end: f64,
}

impl ControlUnit {
    /// Its conditioning scale at step `i` of `n` steps run: `weight` inside
    /// [start, end], 0 outside (diffusers' `controlnet_keep`).
    pub fn scale_at(&self, i: usize, n: usize) -> f64 {
        let off = (i as f64 / n as f64) < self.start || ((i + 1) as f64 / n as f64) > self.end;
        if off {
            0.0
        } else {
            self.weight
        }
    }
}

/// Everything that decides a restyling result besides the model and the
/// images; stored in the run's manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiffusionConfig {
    pub prompt: String,
    pub negative_prompt: String,
    /// Denoising strength in (0, 1]: how far from the input image to go.
    pub strength: f64,
    /// Inference steps of the full schedule; `floor(steps * strength)` run.
    pub steps: usize,
    /// Classifier-free guidance scale; at or below 1 guidance is off (one
    /// UNet pass per step, the negative prompt unused), as in diffusers.
    pub guidance_scale: f64,
    pub seed: u64,
    pub scheduler: SchedulerKind,
    pub consistency: ConsistencyMode,
    /// The ControlNets, in the order their images are given per keyframe.
    pub controlnets: Vec<ControlUnit>,
}

impl Default for DiffusionConfig {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            negative_prompt: String::new(),
            strength: 0.6,
            steps: 20,
            guidance_scale: 7.5,
            seed: 0,
            scheduler: SchedulerKind::DpmPP2MKarras,
            consistency: ConsistencyMode::None,
            controlnets: Vec::new(),
        }
    }
}

impl DiffusionConfig {
    /// Checks the settings that do not depend on the images.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(DiffusionError::Invalid(m));
        if !(self.strength > 0.0 && self.strength <= 1.0) {
            return bad(format!("strength {} must be in (0, 1]", self.strength));
        }
        if self.steps == 0 {
            return bad("steps must be at least 1".into());
        }
        if !(self.guidance_scale.is_finite() && self.guidance_scale >= 0.0) {
            return bad(format!("guidance scale {} must be a number >= 0", self.guidance_scale));
        }
        for (i, c) in self.controlnets.iter().enumerate() {
            if !c.weight.is_finite() {
                return bad(format!("ControlNet {i} ({}): weight {} is not a number", c.kind, c.weight));
            }
            if !(0.0 <= c.start && c.start < c.end && c.end <= 1.0) {
                return bad(format!(
                    "ControlNet {i} ({}): start {} and end {} must satisfy 0 <= start < end <= 1",
                    c.kind, c.start, c.end
                ));
            }
        }
        match &self.consistency {
            ConsistencyMode::Grid { cols: 0 } => bad("grid mode needs at least one column".into()),
            ConsistencyMode::CrossFrame { anchors } if anchors.is_empty() => {
                bad("cross-frame mode needs at least one anchor keyframe".into())
            }
            _ => Ok(()),
        }
    }

    fn guided(&self) -> bool {
        self.guidance_scale > 1.0
    }
}

/// A keyframe to restyle: its colour image and one control image per
/// ControlNet of the run, in [`DiffusionConfig::controlnets`] order. Control
/// images of another size are resized to the keyframe's.
#[derive(Debug, Clone)]
pub struct Keyframe {
    pub image: RgbImage,
    pub controls: Vec<RgbImage>,
}

/// What a run is doing, for progress reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Encoding images into latents (step = images done).
    Encoding,
    /// Denoising (step = denoising steps done over all batches).
    Denoising,
    /// Decoding latents into images (step = images done).
    Decoding,
}

/// A progress report: `step` of `total` done in `stage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub stage: Stage,
    pub step: usize,
    pub total: usize,
}

/// Progress reporting and cancellation of a run.
#[derive(Default)]
pub struct RunControl<'a> {
    /// Called after every step of every stage.
    pub progress: Option<&'a mut dyn FnMut(Progress)>,
    /// Checked between steps; when set the run stops with
    /// [`DiffusionError::Cancelled`].
    pub cancel: Option<&'a AtomicBool>,
}

impl RunControl<'_> {
    fn report(&mut self, stage: Stage, step: usize, total: usize) {
        if let Some(p) = self.progress.as_mut() {
            p(Progress { stage, step, total });
        }
    }

    fn check_cancel(&self) -> Result<()> {
        match self.cancel {
            Some(flag) if flag.load(Ordering::Relaxed) => Err(DiffusionError::Cancelled),
            _ => Ok(()),
        }
    }
}

/// The prompt and negative prompt encoded by the text encoder, kept so the
/// text encoder can be dropped before the UNet runs.
#[derive(Debug, Clone)]
pub struct PromptEmbeddings {
    negative: Tensor,
    positive: Tensor,
}

impl PromptEmbeddings {
    /// Encodes `prompt` and `negative` with the model's text encoder.
    pub fn encode(model: &StableDiffusion, prompt: &str, negative: &str) -> Result<Self> {
        let both = model.encode_prompts(&[negative, prompt])?;
        Ok(Self { negative: both.narrow(0, 0, 1)?, positive: both.narrow(0, 1, 1)? })
    }

    /// The UNet context for `batch` images: `[negative x batch, positive x
    /// batch]` with guidance, else `positive x batch`.
    fn context(&self, batch: usize, guided: bool) -> Result<Tensor> {
        let rep = |t: &Tensor| t.repeat((batch, 1, 1));
        Ok(if guided { Tensor::cat(&[rep(&self.negative)?, rep(&self.positive)?], 0)? } else { rep(&self.positive)? })
    }
}

/// The restyled keyframes, in input order, with notes for the user (e.g.
/// that an image was padded).
#[derive(Debug, Clone)]
pub struct Restyled {
    pub images: Vec<RgbImage>,
    pub messages: Vec<String>,
}

/// Encodes the prompts, drops the text encoder to save memory, and restyles
/// `keyframes` with noise from `config.seed`.
pub fn restyle(
    model: &mut StableDiffusion,
    controlnets: &MultiControlNet,
    config: &DiffusionConfig,
    keyframes: &[Keyframe],
    control: &mut RunControl,
) -> Result<Restyled> {
    config.validate()?;
    let prompts = PromptEmbeddings::encode(model, &config.prompt, &config.negative_prompt)?;
    model.drop_text_encoder();
    img2img(model, &prompts, controlnets, config, keyframes, &mut NoiseRng::new(config.seed), control)
}

/// Restyles `keyframes` with already-encoded prompts and the given noise.
pub fn img2img(
    model: &StableDiffusion,
    prompts: &PromptEmbeddings,
    controlnets: &MultiControlNet,
    config: &DiffusionConfig,
    keyframes: &[Keyframe],
    noise: &mut dyn NoiseSource,
    control: &mut RunControl,
) -> Result<Restyled> {
    config.validate()?;
    check_inputs(controlnets, config, keyframes)?;
    let runner = Runner { model, prompts, controlnets, config };
    let mut messages = Vec::new();
    let steps_run =
        build_scheduler(config.scheduler, &model.scheduler_config, config.steps, config.strength)?.timesteps().len();
    let images = match &config.consistency {
        ConsistencyMode::None => {
            let total = steps_run * keyframes.len();
            let mut out = Vec::with_capacity(keyframes.len());
            for (i, k) in keyframes.iter().enumerate() {
                let batch = Batch::new(std::slice::from_ref(k), vec![i], &mut messages)?;
                let mut progress = StepCounter { done: i * steps_run, total };
                out.extend(runner.run(batch, &AttentionMode::Plain, noise, control, &mut progress)?);
            }
            out
        }
        ConsistencyMode::Grid { cols } => {
            let grid = Grid::new(keyframes, *cols)?;
            let canvas = grid.tile(keyframes);
            let batch = Batch::new(std::slice::from_ref(&canvas), vec![0], &mut messages)?;
            let mut progress = StepCounter { done: 0, total: steps_run };
            let out = runner.run(batch, &AttentionMode::Plain, noise, control, &mut progress)?;
            grid.split(&out[0])
        }
        ConsistencyMode::CrossFrame { anchors } => {
            if let Some(a) = anchors.iter().find(|&&a| a >= keyframes.len()) {
                return Err(DiffusionError::Invalid(format!(
                    "cross-frame anchor keyframe {a} does not exist: there are {} keyframes",
                    keyframes.len()
                )));
            }
            same_size(keyframes, "cross-frame")?;
            let batch = Batch::new(keyframes, (0..keyframes.len()).collect(), &mut messages)?;
            let mode = AttentionMode::CrossFrame(CrossFrameAttention::with_anchors(keyframes.len(), anchors.clone()));
            let mut progress = StepCounter { done: 0, total: steps_run };
            runner.run(batch, &mode, noise, control, &mut progress)?
        }
    };
    Ok(Restyled { images, messages })
}

fn check_inputs(controlnets: &MultiControlNet, config: &DiffusionConfig, keyframes: &[Keyframe]) -> Result<()> {
    if keyframes.is_empty() {
        return Err(DiffusionError::Invalid("no keyframes to restyle".into()));
    }
    if controlnets.nets().len() != config.controlnets.len() {
        return Err(DiffusionError::Invalid(format!(
            "{} ControlNets loaded but the config lists {}",
            controlnets.nets().len(),
            config.controlnets.len()
        )));
    }
    for (i, k) in keyframes.iter().enumerate() {
        if k.image.width() == 0 || k.image.height() == 0 {
            return Err(DiffusionError::Invalid(format!("keyframe {i} is an empty image")));
        }
        if k.controls.len() != config.controlnets.len() {
            return Err(DiffusionError::Invalid(format!(
                "keyframe {i} has {} control images for {} ControlNets",
                k.controls.len(),
                config.controlnets.len()
            )));
        }
    }
    Ok(())
}

fn same_size(keyframes: &[Keyframe], mode: &str) -> Result<()> {
    let first = keyframes[0].image.dimensions();
    match keyframes.iter().position(|k| k.image.dimensions() != first) {
        Some(i) => Err(DiffusionError::Invalid(format!(
            "{mode} mode needs keyframes of one size: keyframe 0 is {}x{}, keyframe {i} is {}x{}",
            first.0,
            first.1,
            keyframes[i].image.width(),
            keyframes[i].image.height()
        ))),
        None => Ok(()),
    }
}

/// Denoising steps done so far out of the run's total, across batches.
struct StepCounter {
    done: usize,
    total: usize,
}

/// Images prepared for one denoising batch: padded to the size multiple,
/// as pixel data, with their control images.
struct Batch {
    /// Padded keyframe images.
    images: Vec<RgbImage>,
    /// Per ControlNet, the padded control image of each keyframe.
    controls: Vec<Vec<RgbImage>>,
    /// Noise image ids (keyframe index, or 0 for a grid canvas).
    ids: Vec<usize>,
    /// The size before padding, to crop back to.
    size: (u32, u32),
}

impl Batch {
    fn new(keyframes: &[Keyframe], ids: Vec<usize>, messages: &mut Vec<String>) -> Result<Self> {
        let (w, h) = keyframes[0].image.dimensions();
        let (pw, ph) = (w.div_ceil(SIZE_MULTIPLE) * SIZE_MULTIPLE, h.div_ceil(SIZE_MULTIPLE) * SIZE_MULTIPLE);
        if (pw, ph) != (w, h) {
            let note = format!(
                "image size {w}x{h} is not a multiple of {SIZE_MULTIPLE}: padded to {pw}x{ph} by repeating \
                 the edge pixels, and the result cropped back to {w}x{h}"
            );
            if !messages.contains(&note) {
                messages.push(note);
            }
        }
        let n_controls = keyframes[0].controls.len();
        let controls = (0..n_controls)
            .map(|c| {
                keyframes
                    .iter()
                    .map(|k| {
                        let img = &k.controls[c];
                        let img = if img.dimensions() == (w, h) {
                            img.clone()
                        } else {
                            imageops::resize(img, w, h, FilterType::Triangle)
                        };
                        pad_edge(&img, pw, ph)
                    })
                    .collect()
            })
            .collect();
        Ok(Self { images: keyframes.iter().map(|k| pad_edge(&k.image, pw, ph)).collect(), controls, ids, size: (w, h) })
    }
}

/// The model and settings shared by every batch of a run.
struct Runner<'a> {
    model: &'a StableDiffusion,
    prompts: &'a PromptEmbeddings,
    controlnets: &'a MultiControlNet,
    config: &'a DiffusionConfig,
}

impl Runner<'_> {
    /// Denoises one batch and returns its images, cropped back.
    fn run(
        &self,
        batch: Batch,
        attention: &AttentionMode,
        noise: &mut dyn NoiseSource,
        control: &mut RunControl,
        progress: &mut StepCounter,
    ) -> Result<Vec<RgbImage>> {
        let (device, dtype) = (&self.model.device, self.model.dtype);
        let images = images_to_tensor(&batch.images, -1.0, 1.0, dtype, device)?;
        let controls =
            batch.controls.iter().map(|c| images_to_tensor(c, 0.0, 1.0, dtype, device)).collect::<Result<Vec<_>>>()?;
        let decoded = self.denoise(&images, &controls, &batch.ids, attention, noise, control, progress)?;
        let (w, h) = batch.size;
        tensor_to_images(&decoded)?.into_iter().map(|img| Ok(imageops::crop_imm(&img, 0, 0, w, h).to_image())).collect()
    }

    /// The img2img loop on `images` `(B, 3, H, W)` in [-1, 1] with control
    /// images `(B, 3, H, W)` in [0, 1]; returns the decoded images in [0, 1].
    #[allow(clippy::too_many_arguments)]
    fn denoise(
        &self,
        images: &Tensor,
        controls: &[Tensor],
        ids: &[usize],
        attention: &AttentionMode,
        noise: &mut dyn NoiseSource,
        control: &mut RunControl,
        progress: &mut StepCounter,
    ) -> Result<Tensor> {
        let model = self.model;
        let config = self.config;
        let b = ids.len();
        let mut scheduler = build_scheduler(config.scheduler, &model.scheduler_config, config.steps, config.strength)?;
        let n = scheduler.timesteps().len();

        control.check_cancel()?;
        let dist = model.vae.encode(images)?;
        let latent_shape = dist.mean.dims().to_vec();
        let mut draw = |use_: NoiseUse| -> Result<Tensor> {
            let mut one = latent_shape.clone();
            one[0] = 1;
            let parts = ids
                .iter()
                .map(|&id| noise.noise(id, use_, &one, model.dtype, &model.device))
                .collect::<Result<Vec<_>>>()?;
            Ok(Tensor::cat(&parts, 0)?)
        };
        let init = model.vae.scale_latents(&dist.sample(&draw(NoiseUse::VaeSample)?)?)?;
        let mut latents = scheduler.add_noise(&init, &draw(NoiseUse::Initial)?, 0)?;
        control.report(Stage::Encoding, b, b);

        let guided = config.guided();
        let context = self.prompts.context(b, guided)?.to_dtype(model.dtype)?;
        let controls: Vec<Tensor> = controls
            .iter()
            .map(|c| if guided { Tensor::cat(&[c, c], 0) } else { Ok(c.clone()) })
            .collect::<candle_core::Result<_>>()?;
        for i in 0..n {
            control.check_cancel()?;
            let t = scheduler.timesteps()[i];
            let doubled = if guided { Tensor::cat(&[&latents, &latents], 0)? } else { latents.clone() };
            let input = scheduler.scale_model_input(&doubled, i)?;
            let residuals = if controls.is_empty() {
                None
            } else {
                let inputs: Vec<(&Tensor, f64)> =
                    controls.iter().zip(&config.controlnets).map(|(img, unit)| (img, unit.scale_at(i, n))).collect();
                self.controlnets.forward(&input, t, &context, &inputs)?
            };
            let out = model.unet.forward(&input, t, &context, residuals.as_ref(), attention)?;
            let prediction = if guided {
                let uncond = out.narrow(0, 0, b)?;
                let cond = out.narrow(0, b, b)?;
                (&uncond + ((cond - &uncond)? * config.guidance_scale)?)?
            } else {
                out
            };
            let step_noise = if scheduler.needs_noise() { Some(draw(NoiseUse::Step(i))?) } else { None };
            latents = scheduler.step(&prediction, i, &latents, step_noise.as_ref())?;
            progress.done += 1;
            control.report(Stage::Denoising, progress.done, progress.total);
        }

        control.check_cancel()?;
        let decoded = model.vae.decode(&model.vae.unscale_latents(&latents)?)?;
        control.report(Stage::Decoding, b, b);
        Ok(((decoded.to_dtype(DType::F32)? / 2.0)? + 0.5)?.clamp(0f32, 1f32)?)
    }
}

/// Pads `img` to `w x h` by repeating its last column and row.
fn pad_edge(img: &RgbImage, w: u32, h: u32) -> RgbImage {
    if img.dimensions() == (w, h) {
        return img.clone();
    }
    let (iw, ih) = img.dimensions();
    RgbImage::from_fn(w, h, |x, y| *img.get_pixel(x.min(iw - 1), y.min(ih - 1)))
}

/// Images of one size as a `(B, 3, H, W)` tensor mapping 0..255 to lo..hi.
fn images_to_tensor(images: &[RgbImage], lo: f32, hi: f32, dtype: DType, device: &Device) -> Result<Tensor> {
    let (w, h) = images[0].dimensions();
    let plane = (w * h) as usize;
    let mut data = vec![0f32; images.len() * 3 * plane];
    for (b, img) in images.iter().enumerate() {
        for (p, px) in img.pixels().enumerate() {
            for c in 0..3 {
                data[(b * 3 + c) * plane + p] = lo + (hi - lo) * px[c] as f32 / 255.0;
            }
        }
    }
    Ok(Tensor::from_vec(data, (images.len(), 3, h as usize, w as usize), &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)?)
}

/// A `(B, 3, H, W)` tensor in [0, 1] to 8-bit images, rounding as diffusers does.
fn tensor_to_images(t: &Tensor) -> Result<Vec<RgbImage>> {
    let (b, _, h, w) = t.dims4()?;
    let data = t.to_dtype(DType::F32)?.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
    let plane = h * w;
    Ok((0..b)
        .map(|k| {
            RgbImage::from_fn(w as u32, h as u32, |x, y| {
                let p = y as usize * w + x as usize;
                Rgb([0, 1, 2].map(|c| (data[(k * 3 + c) * plane + p] * 255.0).round().clamp(0.0, 255.0) as u8))
            })
        })
        .collect())
}

/// The layout of grid mode: keyframes of one size tiled row by row.
struct Grid {
    cols: u32,
    rows: u32,
    tile: (u32, u32),
    count: usize,
}

impl Grid {
    fn new(keyframes: &[Keyframe], cols: usize) -> Result<Self> {
        same_size(keyframes, "grid")?;
        let cols = cols.min(keyframes.len()) as u32;
        let rows = keyframes.len().div_ceil(cols as usize) as u32;
        Ok(Self { cols, rows, tile: keyframes[0].image.dimensions(), count: keyframes.len() })
    }

    /// One canvas keyframe: images and each control image tiled; cells past
    /// the last keyframe are mid grey (controls black).
    fn tile(&self, keyframes: &[Keyframe]) -> Keyframe {
        let (tw, th) = self.tile;
        let canvas = |fill: Rgb<u8>, pick: &dyn Fn(&Keyframe) -> &RgbImage| {
            let mut c = RgbImage::from_pixel(self.cols * tw, self.rows * th, fill);
            for (i, k) in keyframes.iter().enumerate() {
                let img = pick(k);
                let img = if img.dimensions() == (tw, th) {
                    img.clone()
                } else {
                    imageops::resize(img, tw, th, FilterType::Triangle)
                };
                let (x, y) = self.origin(i);
                imageops::replace(&mut c, &img, x as i64, y as i64);
            }
            c
        };
        let n_controls = keyframes[0].controls.len();
        Keyframe {
            image: canvas(Rgb([128, 128, 128]), &|k| &k.image),
            controls: (0..n_controls).map(|c| canvas(Rgb([0, 0, 0]), &|k| &k.controls[c])).collect(),
        }
    }

    fn origin(&self, i: usize) -> (u32, u32) {
        let i = i as u32;
        ((i % self.cols) * self.tile.0, (i / self.cols) * self.tile.1)
    }

    /// The keyframes cut back out of a restyled canvas.
    fn split(&self, canvas: &RgbImage) -> Vec<RgbImage> {
        (0..self.count)
            .map(|i| {
                let (x, y) = self.origin(i);
                imageops::crop_imm(canvas, x, y, self.tile.0, self.tile.1).to_image()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
