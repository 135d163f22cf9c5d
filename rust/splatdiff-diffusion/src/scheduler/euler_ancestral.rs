//! Euler ancestral sampling (Karras et al. 2022 / k-diffusion's
//! `sample_euler_ancestral`), as diffusers' `EulerAncestralDiscreteScheduler`.

use candle_core::Tensor;

use super::{
    check_index, check_same_shape, interp, lin2, linspace, required_noise, round_half_even, BetaSchedule,
    PredictionType, Scheduler, SchedulerConfig, SchedulerKind, TimestepSpacing,
};
use crate::error::{DiffusionError, Result};

/// Euler ancestral over sigma = sqrt((1 - alpha_bar) / alpha_bar); the
/// latents live in the "sigma space" (x0 + sigma * noise), so the UNet input
/// is scaled by 1 / sqrt(sigma^2 + 1).
#[derive(Debug, Clone)]
pub struct EulerAncestralScheduler {
    /// The timesteps run (fractional for linspace spacing).
    timesteps: Vec<f64>,
    /// Sigma of each step run, plus a final 0.
    sigmas: Vec<f64>,
    init_noise_sigma: f64,
    prediction: PredictionType,
}

impl EulerAncestralScheduler {
    pub(super) fn new(config: &SchedulerConfig, steps: usize, start: usize) -> Result<Self> {
        if config.prediction_type == PredictionType::Sample {
            return Err(DiffusionError::Unsupported(
                "the Euler ancestral scheduler does not support prediction_type \"sample\"".into(),
            ));
        }
        let train = config.num_train_timesteps;
        let alphas_cumprod = config.alphas_cumprod(BetaSchedule::Linear);
        let train_sigmas = train_sigmas(&alphas_cumprod);
        let spacing = config.timestep_spacing.unwrap_or(TimestepSpacing::Linspace);
        let all: Vec<f64> = match spacing {
            // np.linspace(..., dtype=float32): computed in f64, stored as f32.
            TimestepSpacing::Linspace => {
                linspace(0.0, (train - 1) as f64, steps).into_iter().rev().map(|t| t as f32 as f64).collect()
            }
            TimestepSpacing::Leading => {
                let ratio = train / steps;
                let offset = config.steps_offset.unwrap_or(0);
                (0..steps).rev().map(|i| (i * ratio + offset) as f64).collect()
            }
            TimestepSpacing::Trailing => {
                let ratio = train as f64 / steps as f64;
                (0..steps).map(|i| round_half_even(train as f64 - i as f64 * ratio) - 1.0).collect()
            }
        };
        if let Some(t) = all.iter().find(|&&t| t < 0.0 || t > (train - 1) as f64) {
            return Err(DiffusionError::Invalid(format!(
                "Euler ancestral timestep {t} is outside the {train} training timesteps (check steps_offset)"
            )));
        }
        let mut sigmas: Vec<f64> = all.iter().map(|&t| interp(t, &train_sigmas) as f32 as f64).collect();
        sigmas.push(0.0);
        let max_sigma = sigmas.iter().cloned().fold(0.0, f64::max);
        let init_noise_sigma = match spacing {
            TimestepSpacing::Linspace | TimestepSpacing::Trailing => max_sigma,
            TimestepSpacing::Leading => (max_sigma * max_sigma + 1.0).sqrt(),
        };
        Ok(Self {
            timesteps: all[start..].to_vec(),
            sigmas: sigmas[start..].to_vec(),
            init_noise_sigma,
            prediction: config.prediction_type,
        })
    }

    /// The sigma of each step run, followed by the final 0.
    pub fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }
}

/// sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t) for every training
/// timestep, in f32 as diffusers computes it.
pub(super) fn train_sigmas(alphas_cumprod: &[f64]) -> Vec<f64> {
    alphas_cumprod
        .iter()
        .map(|&a| {
            let a = a as f32;
            ((1.0 - a) / a).sqrt() as f64
        })
        .collect()
}

impl Scheduler for EulerAncestralScheduler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        self.init_noise_sigma
    }

    fn scale_model_input(&self, sample: &Tensor, step_index: usize) -> Result<Tensor> {
        check_index(step_index, self.timesteps.len())?;
        let sigma = self.sigmas[step_index];
        Ok((sample * (1.0 / (sigma * sigma + 1.0).sqrt()))?)
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, step_index: usize) -> Result<Tensor> {
        check_index(step_index, self.timesteps.len())?;
        check_same_shape("noise", noise, original)?;
        lin2(original, 1.0, noise, self.sigmas[step_index])
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        check_index(step_index, self.timesteps.len())?;
        check_same_shape("model output", model_output, sample)?;
        let noise = required_noise(SchedulerKind::EulerAncestral, noise, sample)?;
        let sigma = self.sigmas[step_index];
        let sigma_to = self.sigmas[step_index + 1];
        let pred_x0 = match self.prediction {
            PredictionType::Epsilon => lin2(sample, 1.0, model_output, -sigma)?,
            _ => {
                let s2 = sigma * sigma + 1.0;
                lin2(model_output, -sigma / s2.sqrt(), sample, 1.0 / s2)?
            }
        };
        let sigma_up = (sigma_to * sigma_to * (sigma * sigma - sigma_to * sigma_to) / (sigma * sigma)).sqrt();
        let sigma_down = (sigma_to * sigma_to - sigma_up * sigma_up).max(0.0).sqrt();
        // derivative = (sample - x0) / sigma; prev = sample + derivative * (sigma_down - sigma)
        let derivative = ((sample - &pred_x0)? * (1.0 / sigma))?;
        let prev = lin2(sample, 1.0, &derivative, sigma_down - sigma)?;
        lin2(&prev, 1.0, noise, sigma_up)
    }

    fn needs_noise(&self) -> bool {
        true
    }
}
