//! DDIM (Song et al. 2020), deterministic (eta = 0), as diffusers' `DDIMScheduler`.

use candle_core::Tensor;

use super::{
    check_index, check_same_shape, lin2, spaced_timesteps, vp_prediction, BetaSchedule, PredictionType, Scheduler,
    SchedulerConfig, TimestepSpacing,
};
use crate::error::Result;

/// DDIM on integer training timesteps; see the module docs for the trait.
#[derive(Debug, Clone)]
pub struct DdimScheduler {
    alphas_cumprod: Vec<f64>,
    /// `alphas_cumprod` "before" timestep 0: 1 with `set_alpha_to_one`.
    final_alpha_cumprod: f64,
    /// The timesteps run (integers, as f64 for the trait).
    timesteps: Vec<f64>,
    /// Distance to the previous timestep: `num_train_timesteps / steps`.
    step_ratio: usize,
    prediction: PredictionType,
    clip: Option<f64>,
}

impl DdimScheduler {
    /// DDIM for `steps` inference steps, of which the first `start` are skipped (img2img).
    pub(super) fn new(config: &SchedulerConfig, steps: usize, start: usize) -> Result<Self> {
        let alphas_cumprod = config.alphas_cumprod(BetaSchedule::Linear);
        let final_alpha_cumprod = if config.set_alpha_to_one.unwrap_or(true) { 1.0 } else { alphas_cumprod[0] };
        let spacing = config.timestep_spacing.unwrap_or(TimestepSpacing::Leading);
        let all = spaced_timesteps(spacing, config.num_train_timesteps, steps, config.steps_offset.unwrap_or(0));
        check_timesteps_in_range(&all, config.num_train_timesteps)?;
        Ok(Self {
            alphas_cumprod,
            final_alpha_cumprod,
            timesteps: all[start..].to_vec(),
            step_ratio: config.num_train_timesteps / steps,
            prediction: config.prediction_type,
            clip: config.clip_range(true),
        })
    }

    fn alpha_at(&self, t: f64) -> f64 {
        self.alphas_cumprod[t as usize]
    }
}

/// Rejects schedules whose `steps_offset` pushes a timestep past the last
/// training timestep, which diffusers would index out of bounds on.
pub(super) fn check_timesteps_in_range(timesteps: &[f64], train: usize) -> Result<()> {
    if let Some(t) = timesteps.iter().find(|&&t| t < 0.0 || t as usize >= train) {
        return Err(crate::error::DiffusionError::Invalid(format!(
            "scheduler timestep {t} is outside the {train} training timesteps (check steps_offset)"
        )));
    }
    Ok(())
}

impl Scheduler for DdimScheduler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, step_index: usize) -> Result<Tensor> {
        check_index(step_index, self.timesteps.len())?;
        check_same_shape("noise", noise, original)?;
        let a = self.alpha_at(self.timesteps[step_index]);
        lin2(original, a.sqrt(), noise, (1.0 - a).sqrt())
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        _noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        check_index(step_index, self.timesteps.len())?;
        check_same_shape("model output", model_output, sample)?;
        let t = self.timesteps[step_index] as usize;
        let alpha_t = self.alphas_cumprod[t];
        let alpha_prev = match t.checked_sub(self.step_ratio) {
            Some(prev) => self.alphas_cumprod[prev],
            None => self.final_alpha_cumprod,
        };
        let (x0, eps) = vp_prediction(self.prediction, model_output, sample, alpha_t, self.clip)?;
        // eta = 0: no variance term.
        lin2(&x0, alpha_prev.sqrt(), &eps, (1.0 - alpha_prev).sqrt())
    }

    fn needs_noise(&self) -> bool {
        false
    }
}
