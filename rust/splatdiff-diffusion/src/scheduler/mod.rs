//! Noise schedulers for img2img: DDIM, Euler ancestral, DPM++ 2M with Karras
//! sigmas and LCM, numerically matching diffusers' implementations.
//!
//! Every scheduler reads the same diffusers `scheduler/scheduler_config.json`
//! ([`SchedulerConfig`]) and is built for a number of inference steps and an
//! img2img strength with [`build_scheduler`]. The strength truncates the
//! schedule exactly as diffusers' img2img pipeline does (`get_timesteps`, see
//! [`img2img_start`]): [`Scheduler::timesteps`] returns only the steps that
//! will actually run, and every `step_index` taken by the trait is an index
//! into that list (0 = the first step run, whose timestep the input image is
//! noised to with [`Scheduler::add_noise`]).
//!
//! Stochastic schedulers (Euler ancestral, LCM) never draw random numbers
//! themselves: the caller passes the noise for each step, so a run is
//! reproducible from a seed (see `crate::rng`) and reference runs recorded
//! with diffusers can be replayed exactly.

mod ddim;
mod dpmpp_2m;
mod euler_ancestral;
mod lcm;

use std::path::Path;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{DiffusionError, Result};

pub use ddim::DdimScheduler;
pub use dpmpp_2m::DpmPp2mScheduler;
pub use euler_ancestral::EulerAncestralScheduler;
pub use lcm::LcmScheduler;

/// One denoising scheduler, set up for a fixed list of timesteps.
///
/// The img2img loop is:
/// ```text
/// latents = s.add_noise(image_latents, noise, 0)
/// for i in 0..s.timesteps().len():
///     input = s.scale_model_input(latents, i)
///     eps   = unet(input, s.timesteps()[i], ...)
///     latents = s.step(eps, i, latents, needs_noise ? Some(fresh_noise) : None)
/// ```
pub trait Scheduler: Send {
    /// The timesteps that will be run, in order (descending), already
    /// truncated by the img2img strength. These are the values given to the
    /// UNet's timestep embedding; Euler-type schedules may be fractional.
    fn timesteps(&self) -> &[f64];

    /// Standard deviation of pure noise at the start of a full (strength 1)
    /// schedule: what text-to-image multiplies its initial noise by (1 for
    /// variance-preserving schedulers, larger for sigma-parameterised ones).
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    /// Scales the latents before they go into the UNet at step `step_index`
    /// (the identity except for sigma-parameterised schedulers such as Euler).
    fn scale_model_input(&self, sample: &Tensor, step_index: usize) -> Result<Tensor> {
        check_index(step_index, self.timesteps().len())?;
        Ok(sample.clone())
    }

    /// Noises clean latents `original` to the noise level of step
    /// `step_index` with the given standard-normal `noise`; img2img starts
    /// from `add_noise(image_latents, noise, 0)`.
    fn add_noise(&self, original: &Tensor, noise: &Tensor, step_index: usize) -> Result<Tensor>;

    /// One denoising step: from the latents `sample` at step `step_index` and
    /// the model's prediction `model_output` (epsilon or v, as configured)
    /// to the latents of the next step. Schedulers for which
    /// [`needs_noise`](Self::needs_noise) is true take the standard-normal
    /// noise for this step in `noise` (same shape as `sample`) and report an
    /// error when it is missing; the others ignore it. Multistep schedulers
    /// keep history between calls, so steps must be taken in order.
    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor>;

    /// Whether [`step`](Self::step) needs fresh noise.
    fn needs_noise(&self) -> bool;
}

/// Which scheduler a run uses; stored in the run's manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SchedulerKind {
    /// DDIM, deterministic (eta = 0).
    Ddim,
    /// Euler ancestral ("Euler a" in the web UIs).
    #[serde(rename = "euler-a")]
    EulerAncestral,
    /// DPM-Solver++ 2M with Karras sigmas ("DPM++ 2M Karras").
    #[serde(rename = "dpmpp-2m")]
    DpmPP2MKarras,
    /// Latent consistency model scheduler, for LCM / LCM-LoRA weights.
    Lcm,
}

impl SchedulerKind {
    /// All kinds, in the order the CLI lists them.
    pub const ALL: [SchedulerKind; 4] = [Self::Ddim, Self::EulerAncestral, Self::DpmPP2MKarras, Self::Lcm];

    /// The name used on the command line and in manifests.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ddim => "ddim",
            Self::EulerAncestral => "euler-a",
            Self::DpmPP2MKarras => "dpmpp-2m",
            Self::Lcm => "lcm",
        }
    }
}

impl std::fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for SchedulerKind {
    type Err = DiffusionError;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            let names: Vec<_> = Self::ALL.iter().map(|k| k.name()).collect();
            DiffusionError::Invalid(format!("unknown scheduler {s:?}; expected one of {}", names.join(", ")))
        })
    }
}

/// How the training noise schedule's betas are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BetaSchedule {
    /// Betas linear from `beta_start` to `beta_end`.
    Linear,
    /// Square roots of the betas linear (Stable Diffusion's schedule).
    ScaledLinear,
    /// The cosine schedule ("squaredcos_cap_v2" in diffusers).
    #[serde(rename = "squaredcos_cap_v2")]
    SquaredcosCapV2,
}

/// What the model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictionType {
    /// The added noise (SD 1.x, SD 2.x base 512).
    Epsilon,
    /// The velocity `alpha * noise - sigma * x0` (SD 2.x 768).
    VPrediction,
    /// The clean sample itself.
    Sample,
}

/// How inference timesteps are picked from the training timesteps
/// (table 2 of "Common Diffusion Noise Schedules and Sample Steps are Flawed").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSpacing {
    Leading,
    Trailing,
    Linspace,
}

/// The fields of a diffusers `scheduler_config.json` that our schedulers
/// use. Unknown keys (e.g. `_class_name`, `skip_prk_steps`) are ignored;
/// keys left out take the default of the scheduler being built, as when
/// diffusers loads that scheduler class from the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchedulerConfig {
    #[serde(default = "default_num_train_timesteps")]
    pub num_train_timesteps: usize,
    #[serde(default = "default_beta_start")]
    pub beta_start: f64,
    #[serde(default = "default_beta_end")]
    pub beta_end: f64,
    /// Absent: linear for DDIM/Euler/DPM, scaled_linear for LCM (diffusers' defaults).
    #[serde(default)]
    pub beta_schedule: Option<BetaSchedule>,
    /// Explicit betas, overriding the schedule when present.
    #[serde(default)]
    pub trained_betas: Option<Vec<f64>>,
    #[serde(default)]
    pub steps_offset: Option<usize>,
    #[serde(default = "default_prediction_type")]
    pub prediction_type: PredictionType,
    #[serde(default)]
    pub timestep_spacing: Option<TimestepSpacing>,
    /// Absent: true for DDIM, false for LCM (diffusers' defaults).
    #[serde(default)]
    pub clip_sample: Option<bool>,
    #[serde(default = "default_clip_sample_range")]
    pub clip_sample_range: f64,
    /// Absent: true (DDIM and LCM default).
    #[serde(default)]
    pub set_alpha_to_one: Option<bool>,
    #[serde(default)]
    pub rescale_betas_zero_snr: bool,
    /// LCM: the number of steps of the distillation schedule.
    #[serde(default)]
    pub original_inference_steps: Option<usize>,
    /// LCM: scale of the timestep in the boundary-condition scalings.
    #[serde(default)]
    pub timestep_scaling: Option<f64>,
    #[serde(default)]
    pub thresholding: bool,
}

fn default_num_train_timesteps() -> usize {
    1000
}
fn default_beta_start() -> f64 {
    0.0001
}
fn default_beta_end() -> f64 {
    0.02
}
fn default_prediction_type() -> PredictionType {
    PredictionType::Epsilon
}
fn default_clip_sample_range() -> f64 {
    1.0
}

impl Default for SchedulerConfig {
    /// Stable Diffusion 1.5's scheduler settings.
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: Some(BetaSchedule::ScaledLinear),
            trained_betas: None,
            steps_offset: Some(1),
            prediction_type: PredictionType::Epsilon,
            timestep_spacing: None,
            clip_sample: Some(false),
            clip_sample_range: 1.0,
            set_alpha_to_one: Some(false),
            rescale_betas_zero_snr: false,
            original_inference_steps: None,
            timestep_scaling: None,
            thresholding: false,
        }
    }
}

impl SchedulerConfig {
    /// Parses a diffusers `scheduler_config.json` text; `origin` names the
    /// file in error messages.
    pub fn from_json(text: &str, origin: &Path) -> Result<Self> {
        let config: Self = serde_json::from_str(text).map_err(|e| DiffusionError::Format {
            path: origin.to_path_buf(),
            message: format!("not a scheduler config: {e}"),
        })?;
        config.validate().map_err(|message| DiffusionError::Format { path: origin.to_path_buf(), message })?;
        Ok(config)
    }

    /// Reads a diffusers `scheduler_config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|source| DiffusionError::Io { path: path.to_path_buf(), source })?;
        Self::from_json(&text, path)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.num_train_timesteps < 2 {
            return Err(format!("num_train_timesteps is {}, must be at least 2", self.num_train_timesteps));
        }
        if let Some(betas) = &self.trained_betas {
            if betas.len() != self.num_train_timesteps {
                return Err(format!(
                    "trained_betas has {} values but num_train_timesteps is {}",
                    betas.len(),
                    self.num_train_timesteps
                ));
            }
        }
        let betas_ok = |b: f64| b.is_finite() && b > 0.0 && b < 1.0;
        if self.trained_betas.is_none() && !(betas_ok(self.beta_start) && betas_ok(self.beta_end)) {
            return Err(format!("beta_start {} and beta_end {} must lie in (0, 1)", self.beta_start, self.beta_end));
        }
        Ok(())
    }

    /// `alphas_cumprod[t]` for every training timestep, computed in f32 the
    /// way diffusers computes it in torch so schedules match bit for bit as
    /// far as possible. `default_schedule` applies when the config names none.
    fn alphas_cumprod(&self, default_schedule: BetaSchedule) -> Vec<f64> {
        let n = self.num_train_timesteps;
        let betas: Vec<f32> = match (&self.trained_betas, self.beta_schedule.unwrap_or(default_schedule)) {
            (Some(b), _) => b.iter().map(|&b| b as f32).collect(),
            (None, BetaSchedule::Linear) => torch_linspace_f32(self.beta_start as f32, self.beta_end as f32, n),
            (None, BetaSchedule::ScaledLinear) => {
                torch_linspace_f32(self.beta_start.sqrt() as f32, self.beta_end.sqrt() as f32, n)
                    .into_iter()
                    .map(|b| b * b)
                    .collect()
            }
            (None, BetaSchedule::SquaredcosCapV2) => {
                let alpha_bar = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2);
                (0..n)
                    .map(|i| {
                        let t1 = i as f64 / n as f64;
                        let t2 = (i + 1) as f64 / n as f64;
                        (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
                    })
                    .collect()
            }
        };
        let betas = if self.rescale_betas_zero_snr { rescale_zero_terminal_snr(&betas) } else { betas };
        let mut acc = 1.0f32;
        betas
            .iter()
            .map(|&b| {
                acc *= 1.0 - b;
                acc as f64
            })
            .collect()
    }

    fn clip_range(&self, default_clip: bool) -> Option<f64> {
        self.clip_sample.unwrap_or(default_clip).then_some(self.clip_sample_range)
    }

    /// Errors for settings that none of our schedulers implements.
    fn check_supported(&self, kind: SchedulerKind) -> Result<()> {
        if self.thresholding {
            return Err(DiffusionError::Unsupported(format!(
                "scheduler config sets thresholding (dynamic thresholding), which the {kind} scheduler here does not implement"
            )));
        }
        Ok(())
    }
}

/// torch.linspace(start, end, n, dtype=float32) on the CPU: the step is
/// computed in f32 and the second half counts back from the end.
fn torch_linspace_f32(start: f32, end: f32, n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f32;
    let half = n / 2;
    (0..n).map(|i| if i < half { start + step * i as f32 } else { end - step * (n - 1 - i) as f32 }).collect()
}

/// Rescales betas to zero terminal SNR (Lin et al. 2023, algorithm 1).
fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let mut acc = 1.0f64;
    let sqrt_ac: Vec<f64> = betas
        .iter()
        .map(|&b| {
            acc *= 1.0 - b as f64;
            acc.sqrt()
        })
        .collect();
    let first = sqrt_ac[0];
    let last = sqrt_ac[sqrt_ac.len() - 1];
    let scaled: Vec<f64> = sqrt_ac.iter().map(|&s| (s - last) * first / (first - last)).collect();
    let alphas_bar: Vec<f64> = scaled.iter().map(|s| s * s).collect();
    let mut out = Vec::with_capacity(betas.len());
    for (i, &ab) in alphas_bar.iter().enumerate() {
        let alpha = if i == 0 { ab } else { ab / alphas_bar[i - 1] };
        out.push((1.0 - alpha) as f32);
    }
    out
}

/// Index of the first inference step that img2img runs at `strength`, as in
/// diffusers' `StableDiffusionImg2ImgPipeline.get_timesteps`:
/// `steps - min(floor(steps * strength), steps)`. Strength 1 runs every step;
/// a strength so small that no step remains is rejected by [`build_scheduler`].
pub fn img2img_start(steps: usize, strength: f64) -> usize {
    let init = ((steps as f64 * strength).floor() as usize).min(steps);
    steps - init
}

/// Builds a scheduler of `kind` for `steps` inference steps, truncated for
/// img2img at `strength` in (0, 1] (see [`img2img_start`]).
pub fn build_scheduler(
    kind: SchedulerKind,
    config: &SchedulerConfig,
    steps: usize,
    strength: f64,
) -> Result<Box<dyn Scheduler>> {
    if steps == 0 {
        return Err(DiffusionError::Invalid("the number of steps must be at least 1".into()));
    }
    if !(strength > 0.0 && strength <= 1.0) {
        return Err(DiffusionError::Invalid(format!("strength {strength} must be in (0, 1]")));
    }
    let start = img2img_start(steps, strength);
    if start >= steps {
        return Err(DiffusionError::Invalid(format!(
            "strength {strength} with {steps} steps leaves no step to run (needs steps * strength >= 1)"
        )));
    }
    if steps > config.num_train_timesteps {
        return Err(DiffusionError::Invalid(format!(
            "{steps} steps is more than the {} training timesteps of the scheduler",
            config.num_train_timesteps
        )));
    }
    config.check_supported(kind)?;
    Ok(match kind {
        SchedulerKind::Ddim => Box::new(DdimScheduler::new(config, steps, start)?),
        SchedulerKind::EulerAncestral => Box::new(EulerAncestralScheduler::new(config, steps, start)?),
        SchedulerKind::DpmPP2MKarras => Box::new(DpmPp2mScheduler::new(config, steps, start)?),
        SchedulerKind::Lcm => Box::new(LcmScheduler::new(config, steps, start)?),
    })
}

/// Integer training timesteps for `steps` inference steps with the given
/// spacing, descending, as DDIM/LCM-style schedulers lay them out.
fn spaced_timesteps(spacing: TimestepSpacing, train: usize, steps: usize, offset: usize) -> Vec<f64> {
    match spacing {
        TimestepSpacing::Leading => {
            let ratio = train / steps;
            (0..steps).rev().map(|i| (i * ratio + offset) as f64).collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = train as f64 / steps as f64;
            // np.arange(train, 0, -ratio).round() - 1
            let mut out = Vec::with_capacity(steps);
            let mut i = 0usize;
            loop {
                let v = train as f64 - i as f64 * ratio;
                if v <= 0.0 || out.len() == steps {
                    break;
                }
                out.push(round_half_even(v) - 1.0);
                i += 1;
            }
            out
        }
        TimestepSpacing::Linspace => {
            linspace(0.0, (train - 1) as f64, steps).into_iter().rev().map(round_half_even).collect()
        }
    }
}

/// numpy.linspace(start, end, n) with the endpoint.
fn linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f64;
    let mut v: Vec<f64> = (0..n).map(|i| start + i as f64 * step).collect();
    v[n - 1] = end;
    v
}

/// numpy's round(): halves go to the even neighbour.
fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 {
        2.0 * (x / 2.0).round()
    } else {
        r
    }
}

/// numpy.interp(x, arange(len(table)), table): linear interpolation in a
/// table sampled at the integers, clamped at both ends.
fn interp(x: f64, table: &[f64]) -> f64 {
    if x <= 0.0 {
        return table[0];
    }
    let last = table.len() - 1;
    if x >= last as f64 {
        return table[last];
    }
    let i = x.floor() as usize;
    let w = x - i as f64;
    table[i] + w * (table[i + 1] - table[i])
}

/// The clean-sample and noise predictions of a variance-preserving
/// scheduler (DDIM, LCM) at cumulative alpha `alpha_t`, from the model output
/// of the configured `prediction` type. The clean sample is clamped to
/// `[-clip, clip]` when clipping is on; the noise prediction is not
/// recomputed from the clamped sample (diffusers' default).
fn vp_prediction(
    prediction: PredictionType,
    model_output: &Tensor,
    sample: &Tensor,
    alpha_t: f64,
    clip: Option<f64>,
) -> Result<(Tensor, Tensor)> {
    let (sa, sb) = (alpha_t.sqrt(), (1.0 - alpha_t).sqrt());
    let (x0, eps) = match prediction {
        PredictionType::Epsilon => (lin2(sample, 1.0 / sa, model_output, -sb / sa)?, model_output.clone()),
        PredictionType::VPrediction => (lin2(sample, sa, model_output, -sb)?, lin2(model_output, sa, sample, sb)?),
        PredictionType::Sample => (model_output.clone(), lin2(sample, 1.0 / sb, model_output, -sa / sb)?),
    };
    let x0 = match clip {
        Some(c) => x0.clamp(-c, c)?,
        None => x0,
    };
    Ok((x0, eps))
}

/// `a * x + b * y`, keeping `x`'s dtype.
fn lin2(x: &Tensor, a: f64, y: &Tensor, b: f64) -> Result<Tensor> {
    Ok(((x * a)? + (y * b)?)?)
}

/// Checks that a tensor the caller passed has the sample's shape.
fn check_same_shape(what: &str, t: &Tensor, sample: &Tensor) -> Result<()> {
    if t.dims() != sample.dims() {
        return Err(DiffusionError::Invalid(format!(
            "scheduler: {what} has shape {:?} but the latents have shape {:?}",
            t.dims(),
            sample.dims()
        )));
    }
    Ok(())
}

/// The step noise of a stochastic scheduler, or an error saying it is missing.
fn required_noise<'a>(kind: SchedulerKind, noise: Option<&'a Tensor>, sample: &Tensor) -> Result<&'a Tensor> {
    let noise =
        noise.ok_or_else(|| DiffusionError::Invalid(format!("the {kind} scheduler needs noise for every step")))?;
    check_same_shape("step noise", noise, sample)?;
    Ok(noise)
}

/// Checks a step index against the number of steps.
fn check_index(step_index: usize, len: usize) -> Result<()> {
    if step_index >= len {
        return Err(DiffusionError::Invalid(format!(
            "scheduler step index {step_index} out of range: the schedule has {len} steps"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
