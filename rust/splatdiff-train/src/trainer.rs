//! The training loop: one image per step, rendered and differentiated on the
//! GPU ([`splatdiff_render::gpu`]), the loss and its image gradient on the CPU
//! ([`crate::loss`]), Adam on the GPU, and the densification strategy
//! ([`crate::strategy::Mcmc`]) on the host every so often.
//!
//! Each step takes the next image of a seeded shuffled order (reshuffled
//! every epoch, as 3DGS's viewpoint stack). With `random_background` the
//! render and the ground truth (through its alpha) are both composited over
//! a random colour, so the only way to match every step is to leave the
//! transparent background empty; without it, over `background`.
//!
//! # Checkpoints
//!
//! [`Trainer::save_checkpoint`] writes into a folder, each file atomically:
//! `state-<step>.bin` (the parameters and Adam moments, binary little-endian:
//! see [`write_state`]), `model.ply` (the splats as a standard 3DGS file), and
//! last `checkpoint.json` (step, config, active SH degree, random state,
//! image order, the state file's name); older state files are removed after.
//! The json only ever names a complete state file, so a run that fails or is
//! cancelled at any moment leaves the last good checkpoint, and
//! [`Trainer::resume`] restores it exactly: the resumed run computes the same
//! next step as the uninterrupted one.

use std::path::{Path, PathBuf};

use glam::Vec3;
use serde::{Deserialize, Serialize};
use splatdiff_render::gpu::{AdamConfig, GpuAdam, GpuContext, GpuGrads, GpuRenderer, GpuSplats};
use splatdiff_render::{Image, Splats, View, MAX_SH_DEGREE};
use splatdiff_scene::atomic::write_atomic;
use splatdiff_scene::write_splats;

use crate::dataset::TrainImage;
use crate::error::{Result, TrainError};
use crate::init::{scene_extent, with_sh_degree};
use crate::loss::photometric_loss;
use crate::rng::Rng;
use crate::strategy::{Mcmc, McmcConfig, Moments, Strategy};

/// Learning rates (3DGS's, with MCMC's opacity rate) and Adam's constants.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LearningRates {
    /// Position rate at the first step, times the scene extent.
    pub means: f32,
    /// Position rate at the last step, times the scene extent (exponential decay between).
    pub means_final: f32,
    pub log_scales: f32,
    pub quats: f32,
    pub opacity: f32,
    pub sh_dc: f32,
    pub sh_rest: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
}

impl Default for LearningRates {
    fn default() -> Self {
        Self {
            means: 1.6e-4,
            means_final: 1.6e-6,
            log_scales: 5e-3,
            quats: 1e-3,
            opacity: 5e-2,
            sh_dc: 2.5e-3,
            sh_rest: 2.5e-3 / 20.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-15,
        }
    }
}

/// Settings of a training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Optimisation steps (one image each).
    pub steps: u64,
    /// Hard cap on the number of splats.
    pub max_splats: usize,
    /// SH storage degree, 0..=3.
    pub sh_degree: u32,
    /// Raise the active SH degree every this many steps; `None`: 1000, or
    /// `steps / 4` for runs shorter than 4000 steps.
    pub sh_interval: Option<u64>,
    pub lr: LearningRates,
    /// λ of the loss `(1 − λ)·L1 + λ·(1 − SSIM)`.
    pub ssim_weight: f32,
    /// Composite render and ground truth over a random colour each step.
    pub random_background: bool,
    /// Background when `random_background` is off.
    pub background: [f32; 3],
    pub seed: u64,
    /// Longer image side for training (used by whoever loads the dataset).
    pub max_side: Option<u32>,
    /// Write a checkpoint every this many steps (0: only at the end or on cancel).
    pub checkpoint_every: u64,
    pub mcmc: McmcConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 30_000,
            max_splats: 500_000,
            sh_degree: 3,
            sh_interval: None,
            lr: LearningRates::default(),
            ssim_weight: 0.2,
            random_background: true,
            background: [1.0; 3],
            seed: 0,
            max_side: None,
            checkpoint_every: 0,
            mcmc: McmcConfig::default(),
        }
    }
}

impl TrainConfig {
    /// Why the settings are unusable, if they are.
    pub fn problem(&self) -> Option<String> {
        if self.steps == 0 {
            return Some("steps must be at least 1".into());
        }
        if self.max_splats == 0 {
            return Some("max_splats must be at least 1".into());
        }
        if self.sh_degree > MAX_SH_DEGREE {
            return Some(format!("sh_degree {} is above {MAX_SH_DEGREE}", self.sh_degree));
        }
        if self.sh_interval == Some(0) {
            return Some("sh_interval must be at least 1".into());
        }
        let l = &self.lr;
        let rates = [
            ("lr.means", l.means),
            ("lr.means_final", l.means_final),
            ("lr.log_scales", l.log_scales),
            ("lr.quats", l.quats),
            ("lr.opacity", l.opacity),
            ("lr.sh_dc", l.sh_dc),
            ("lr.sh_rest", l.sh_rest),
        ];
        if let Some((name, v)) = rates.iter().find(|(_, v)| !(v.is_finite() && *v >= 0.0)) {
            return Some(format!("{name} = {v} must be a non-negative number"));
        }
        if l.means > 0.0 && l.means_final <= 0.0 {
            return Some("lr.means_final must be positive when lr.means is".into());
        }
        if !((0.0..1.0).contains(&l.beta1) && (0.0..1.0).contains(&l.beta2) && l.eps > 0.0 && l.eps.is_finite()) {
            return Some("Adam needs 0 ≤ beta1, beta2 < 1 and eps > 0".into());
        }
        if !(0.0..=1.0).contains(&self.ssim_weight) {
            return Some(format!("ssim_weight {} must be between 0 and 1", self.ssim_weight));
        }
        if self.background.iter().any(|v| !v.is_finite()) {
            return Some("background must be finite".into());
        }
        if self.max_side == Some(0) {
            return Some("max_side must be at least 1".into());
        }
        self.mcmc.problem()
    }

    /// The resolved SH interval.
    pub fn sh_interval(&self) -> u64 {
        self.sh_interval.unwrap_or(if self.steps < 4000 { (self.steps / 4).max(1) } else { 1000 })
    }

    /// Position learning rate (not yet times the extent) for step index `step`
    /// (0-based): exponential from `lr.means` to `lr.means_final`.
    pub fn lr_means_at(&self, step: u64) -> f32 {
        let t = (step as f64 / self.steps.max(1) as f64).clamp(0.0, 1.0);
        let (a, b) = (self.lr.means as f64, self.lr.means_final as f64);
        if a <= 0.0 || b <= 0.0 {
            return 0.0;
        }
        (a.ln() * (1.0 - t) + b.ln() * t).exp() as f32
    }
}

/// What one step did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    /// Steps done, this one included.
    pub step: u64,
    pub loss: f32,
    /// Splats after the step.
    pub splats: usize,
}

/// Cumulative wall time of the parts of [`Trainer::step`], in seconds. GPU
/// work is queued, so its time shows where the host next waits for it
/// (usually the following render's read-back).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timings {
    pub render: f64,
    pub loss: f64,
    pub backward_adam: f64,
    /// Downloads, strategy edits and uploads.
    pub host: f64,
}

/// How [`Trainer::train`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Steps done.
    pub step: u64,
    /// Stopped early by the cancel callback.
    pub cancelled: bool,
}

/// Training state: the GPU splats, their optimiser, the strategy and the
/// random state; see the module documentation.
pub struct Trainer<'a> {
    ctx: &'a GpuContext,
    images: Vec<TrainImage>,
    config: TrainConfig,
    extent: f32,
    renderer: GpuRenderer,
    splats: GpuSplats,
    grads: GpuGrads,
    adam: GpuAdam,
    strategy: Mcmc,
    rng: Rng,
    order: Vec<usize>,
    order_pos: usize,
    step: u64,
    active_sh_degree: u32,
    checkpoint_dir: Option<PathBuf>,
    timings: Timings,
}

/// What `checkpoint.json` holds.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointInfo {
    format: u32,
    step: u64,
    config: TrainConfig,
    active_sh_degree: u32,
    adam_steps: u32,
    extent: f32,
    rng: Rng,
    order: Vec<usize>,
    order_pos: usize,
    splats: usize,
    images: usize,
    state_file: String,
}

const CHECKPOINT_FORMAT: u32 = 1;
const STATE_MAGIC: &[u8; 8] = b"SPLDCKPT";

impl<'a> Trainer<'a> {
    /// Starts training `init` (any SH degree; brought to `config.sh_degree`)
    /// on `images`. Errors on bad settings, images or splats (non-finite
    /// values, more splats than `max_splats`).
    pub fn new(ctx: &'a GpuContext, images: Vec<TrainImage>, init: Splats, config: TrainConfig) -> Result<Self> {
        if let Some(p) = config.problem() {
            return Err(TrainError::invalid(format!("training settings: {p}")));
        }
        check_images(&images)?;
        if let Some(p) = init.problem() {
            return Err(TrainError::invalid(format!("initial splats: {p}")));
        }
        if init.is_empty() {
            return Err(TrainError::invalid("initial splats: there are none"));
        }
        if init.len() > config.max_splats {
            return Err(TrainError::invalid(format!(
                "initial splats: {} are more than max_splats = {}",
                init.len(),
                config.max_splats
            )));
        }
        let extent = scene_extent(&images.iter().map(|i| i.camera).collect::<Vec<_>>());
        let splats = with_sh_degree(&init, config.sh_degree);
        let gpu = GpuSplats::upload(ctx, &splats)?;
        let grads = GpuGrads::try_new(ctx, gpu.len(), gpu.sh_degree())?;
        let adam = GpuAdam::try_new(ctx, &gpu)?;
        let strategy = Mcmc::new(config.mcmc.clone(), config.max_splats, config.steps);
        Ok(Self {
            ctx,
            renderer: GpuRenderer::new(ctx)?,
            rng: Rng::new(config.seed),
            images,
            extent,
            splats: gpu,
            grads,
            adam,
            strategy,
            order: Vec::new(),
            order_pos: 0,
            step: 0,
            active_sh_degree: 0,
            checkpoint_dir: None,
            timings: Timings::default(),
            config,
        })
    }

    /// Where [`Trainer::train`] writes checkpoints (none when `None`).
    pub fn set_checkpoint_dir(&mut self, dir: Option<PathBuf>) {
        self.checkpoint_dir = dir;
    }

    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Steps done.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// The SH degree renders use now.
    pub fn active_sh_degree(&self) -> u32 {
        self.active_sh_degree
    }

    /// 3DGS's scene extent of the training cameras (scales the position rate).
    pub fn extent(&self) -> f32 {
        self.extent
    }

    /// Where step time went so far.
    pub fn timings(&self) -> Timings {
        self.timings
    }

    pub fn splat_count(&self) -> usize {
        self.splats.len()
    }

    /// The current splats, copied from the GPU (panics only if the device is lost;
    /// see [`Trainer::try_splats`]).
    pub fn splats(&self) -> Splats {
        self.splats.download(self.ctx)
    }

    pub fn try_splats(&self) -> Result<Splats> {
        Ok(self.splats.try_download(self.ctx)?)
    }

    /// Renders the current splats.
    pub fn render(&mut self, view: &View) -> Result<Image> {
        Ok(self.renderer.render(self.ctx, &self.splats, view)?)
    }

    fn next_image(&mut self) -> usize {
        if self.order_pos >= self.order.len() {
            self.order = self.rng.permutation(self.images.len());
            self.order_pos = 0;
        }
        self.order_pos += 1;
        self.order[self.order_pos - 1]
    }

    fn adam_config(&self) -> AdamConfig {
        let l = &self.config.lr;
        AdamConfig {
            lr_means: self.config.lr_means_at(self.step) * self.extent,
            lr_log_scales: l.log_scales,
            lr_quats: l.quats,
            lr_opacity: l.opacity,
            lr_sh_dc: l.sh_dc,
            lr_sh_rest: l.sh_rest,
            beta1: l.beta1,
            beta2: l.beta2,
            eps: l.eps,
        }
    }

    /// One optimisation step on the next image.
    pub fn step(&mut self) -> Result<StepStats> {
        let index = self.next_image();
        let background = if self.config.random_background {
            [self.rng.uniform_f32(), self.rng.uniform_f32(), self.rng.uniform_f32()]
        } else {
            self.config.background
        };
        let image = &self.images[index];
        let view =
            View { camera: image.camera, active_sh_degree: self.active_sh_degree, background: Vec3::from(background) };
        let clock = std::time::Instant::now();
        let rendered = self.renderer.render(self.ctx, &self.splats, &view)?;
        let t_render = clock.elapsed().as_secs_f64();
        let target = image.over(background);
        let (loss, d_color) =
            photometric_loss(&rendered.color, &target, image.width, image.height, self.config.ssim_weight)?;
        let t_loss = clock.elapsed().as_secs_f64();
        if !loss.is_finite() {
            return Err(TrainError::Diverged {
                step: self.step,
                message: format!("the loss on image {} is {loss}", image.name),
            });
        }
        let d_alpha = vec![0.0; d_color.len()];
        self.renderer.backward(self.ctx, &self.splats, &view, &d_color, &d_alpha, &mut self.grads)?;
        let adam = self.adam_config();
        self.adam.try_step(self.ctx, &mut self.splats, &self.grads, &adam)?;
        self.step += 1;
        let t_backward = clock.elapsed().as_secs_f64();
        self.timings.render += t_render;
        self.timings.loss += t_loss - t_render;
        self.timings.backward_adam += t_backward - t_loss;

        if self.step % self.config.sh_interval() == 0 && self.active_sh_degree < self.config.sh_degree {
            self.active_sh_degree += 1;
        }
        let refine = self.strategy.refine_due(self.step);
        let perturb = self.strategy.perturb_due(self.step);
        if refine || perturb {
            let mut splats = self.splats.try_download(self.ctx)?;
            if refine {
                let (m, v) = self.adam.try_download_moments(self.ctx)?;
                let mut moments = Moments { m, v };
                self.strategy.refine(self.step, &mut splats, &mut moments, &mut self.rng);
                self.adam.upload_moments(self.ctx, &moments.m, &moments.v)?;
            }
            if perturb {
                self.strategy.perturb(&mut splats, adam.lr_means, &mut self.rng);
            }
            if let Some(p) = splats.problem() {
                return Err(TrainError::Diverged { step: self.step, message: p });
            }
            self.splats = GpuSplats::upload(self.ctx, &splats)?;
            self.timings.host += clock.elapsed().as_secs_f64() - t_backward;
        }
        Ok(StepStats { step: self.step, loss, splats: self.splats.len() })
    }

    /// Trains until `config.steps`, calling `progress` after every step.
    /// `cancel` is polled before each step; when it returns true, training
    /// stops there. A checkpoint is written (when a folder is set) every
    /// `checkpoint_every` steps, at the end and on cancel; on an error none is
    /// written, so the folder keeps the last good one.
    pub fn train(&mut self, mut progress: impl FnMut(&StepStats), cancel: impl Fn() -> bool) -> Result<Outcome> {
        while self.step < self.config.steps {
            if cancel() {
                self.checkpoint()?;
                return Ok(Outcome { step: self.step, cancelled: true });
            }
            let stats = self.step()?;
            progress(&stats);
            let every = self.config.checkpoint_every;
            if every > 0 && self.step % every == 0 && self.step < self.config.steps {
                self.checkpoint()?;
            }
        }
        self.checkpoint()?;
        Ok(Outcome { step: self.step, cancelled: false })
    }

    fn checkpoint(&mut self) -> Result<()> {
        match self.checkpoint_dir.clone() {
            Some(dir) => self.save_checkpoint(&dir),
            None => Ok(()),
        }
    }

    /// Writes a checkpoint into `dir` (created if needed); see the module documentation.
    pub fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::file(dir, format!("cannot create the folder: {e}")))?;
        let splats = self.splats.try_download(self.ctx)?;
        if let Some(p) = splats.problem() {
            return Err(TrainError::Diverged { step: self.step, message: format!("not saving a broken model: {p}") });
        }
        let (m, v) = self.adam.try_download_moments(self.ctx)?;
        let state_file = format!("state-{:08}.bin", self.step);
        write_state(&dir.join(&state_file), self.step, &splats, &m, &v)?;
        write_splats(&dir.join("model.ply"), &splats.to_gaussians())?;
        let info = CheckpointInfo {
            format: CHECKPOINT_FORMAT,
            step: self.step,
            config: self.config.clone(),
            active_sh_degree: self.active_sh_degree,
            adam_steps: self.adam.steps(),
            extent: self.extent,
            rng: self.rng.clone(),
            order: self.order.clone(),
            order_pos: self.order_pos,
            splats: splats.len(),
            images: self.images.len(),
            state_file: state_file.clone(),
        };
        let json_path = dir.join("checkpoint.json");
        let json = serde_json::to_vec_pretty(&info).map_err(|e| TrainError::file(&json_path, e.to_string()))?;
        write_atomic(&json_path, |w| std::io::Write::write_all(w, &json))?;
        // Older state files are no longer named by the json.
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with("state-") && name.ends_with(".bin") && name != state_file {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(())
    }

    /// Continues the run checkpointed in `dir` on the same `images`.
    pub fn resume(ctx: &'a GpuContext, images: Vec<TrainImage>, dir: &Path) -> Result<Self> {
        let json_path = dir.join("checkpoint.json");
        let text = std::fs::read(&json_path).map_err(|e| TrainError::file(&json_path, format!("cannot read: {e}")))?;
        let info: CheckpointInfo = serde_json::from_slice(&text)
            .map_err(|e| TrainError::file(&json_path, format!("not a valid checkpoint: {e}")))?;
        if info.format != CHECKPOINT_FORMAT {
            return Err(TrainError::file(
                &json_path,
                format!("checkpoint format {} is not {CHECKPOINT_FORMAT}", info.format),
            ));
        }
        if info.images != images.len() || info.order.iter().any(|&i| i >= images.len()) {
            return Err(TrainError::file(
                &json_path,
                format!("the checkpoint was made with {} images, {} were given", info.images, images.len()),
            ));
        }
        if info.state_file.contains(['/', '\\']) {
            return Err(TrainError::file(&json_path, "state_file must be a file name in the same folder"));
        }
        let state_path = dir.join(&info.state_file);
        let (step, splats, m, v) = read_state(&state_path)?;
        if step != info.step || splats.len() != info.splats || splats.sh_degree != info.config.sh_degree {
            return Err(TrainError::file(&state_path, "does not match checkpoint.json"));
        }
        let mut trainer = Self::new(ctx, images, splats, info.config)?;
        trainer.adam.upload_moments(ctx, &m, &v)?;
        trainer.adam.set_steps(info.adam_steps);
        trainer.step = info.step;
        trainer.active_sh_degree = info.active_sh_degree.min(trainer.config.sh_degree);
        trainer.extent = info.extent;
        trainer.rng = info.rng;
        trainer.order = info.order;
        trainer.order_pos = info.order_pos;
        Ok(trainer)
    }
}

fn check_images(images: &[TrainImage]) -> Result<()> {
    if images.is_empty() {
        return Err(TrainError::invalid("no training images"));
    }
    for image in images {
        if let Some(p) = image.problem() {
            return Err(TrainError::invalid(p));
        }
    }
    Ok(())
}

fn groups(s: &Splats) -> [&[f32]; 5] {
    [s.means.as_flattened(), s.log_scales.as_flattened(), s.quats.as_flattened(), &s.opacity_logits, &s.sh]
}

/// Writes the optimiser state: `SPLDCKPT`, then little-endian `u32` version
/// (1), `u64` step, `u64` splat count, `u32` SH degree, then three blocks
/// (parameters, Adam `m`, Adam `v`), each the `f32` groups means,
/// log-scales, quaternions, opacity logits and SH in the [`Splats`] layout.
pub fn write_state(path: &Path, step: u64, splats: &Splats, m: &Splats, v: &Splats) -> Result<()> {
    for s in [m, v] {
        if s.len() != splats.len() || s.sh_degree != splats.sh_degree || s.sh.len() != splats.sh.len() {
            return Err(TrainError::file(path, "Adam moments do not match the splats"));
        }
    }
    write_atomic(path, |w| {
        use std::io::Write;
        w.write_all(STATE_MAGIC)?;
        w.write_all(&1u32.to_le_bytes())?;
        w.write_all(&step.to_le_bytes())?;
        w.write_all(&(splats.len() as u64).to_le_bytes())?;
        w.write_all(&splats.sh_degree.to_le_bytes())?;
        for s in [splats, m, v] {
            for g in groups(s) {
                let bytes: Vec<u8> = g.iter().flat_map(|x| x.to_le_bytes()).collect();
                w.write_all(&bytes)?;
            }
        }
        Ok(())
    })?;
    Ok(())
}

/// Reads what [`write_state`] wrote: (step, parameters, m, v).
pub fn read_state(path: &Path) -> Result<(u64, Splats, Splats, Splats)> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::file(path, format!("cannot read: {e}")))?;
    let bad = |m: &str| TrainError::file(path, m.to_string());
    if bytes.len() < 32 || &bytes[..8] != STATE_MAGIC {
        return Err(bad("not a splatdiff training state file"));
    }
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
    if u32_at(8) != 1 {
        return Err(bad("unknown state file version"));
    }
    let (step, n, degree) = (u64_at(12), u64_at(20) as usize, u32_at(28));
    if degree > MAX_SH_DEGREE {
        return Err(bad("SH degree above 3"));
    }
    let k3 = splatdiff_render::sh_coeffs(degree) * 3;
    let per = 3 + 3 + 4 + 1 + k3;
    if (bytes.len() - 32) as u128 != 3 * 4 * per as u128 * n as u128 {
        return Err(bad("the file's length does not match its splat count (truncated?)"));
    }
    let mut floats = bytes[32..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()));
    let mut block = || {
        let mut take = |count: usize| floats.by_ref().take(count).collect::<Vec<f32>>();
        let means = take(3 * n);
        let log_scales = take(3 * n);
        let quats = take(4 * n);
        let opacity_logits = take(n);
        let sh = take(k3 * n);
        Splats {
            means: means.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect(),
            log_scales: log_scales.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect(),
            quats: quats.chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]).collect(),
            opacity_logits,
            sh,
            sh_degree: degree,
        }
    };
    let (s, m, v) = (block(), block(), block());
    if let Some(p) = s.problem() {
        return Err(TrainError::file(path, p));
    }
    Ok((step, s, m, v))
}
