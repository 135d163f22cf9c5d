//! The latent consistency model scheduler (Luo et al. 2023), as diffusers'
//! `LCMScheduler`, for LCM-distilled weights and LCM-LoRA.
//!
//! For img2img the schedule is truncated like every other scheduler's
//! (diffusers' `StableDiffusionImg2ImgPipeline` with an `LCMScheduler`, the
//! usual LCM-LoRA setup), not re-laid over a strength-scaled distillation
//! schedule as `LatentConsistencyModelImg2ImgPipeline` does.

use candle_core::Tensor;

use super::ddim::check_timesteps_in_range;
use super::{
    check_index, check_same_shape, lin2, linspace, required_noise, vp_prediction, BetaSchedule, PredictionType,
    Scheduler, SchedulerConfig, SchedulerKind,
};
use crate::error::{DiffusionError, Result};

/// sigma_data of the consistency-model boundary condition.
const SIGMA_DATA: f64 = 0.5;

/// LCM: each step predicts the clean latents through the consistency
/// function and re-noises them to the next timestep with fresh noise.
#[derive(Debug, Clone)]
pub struct LcmScheduler {
    alphas_cumprod: Vec<f64>,
    timesteps: Vec<f64>,
    prediction: PredictionType,
    clip: Option<f64>,
    timestep_scaling: f64,
}

impl LcmScheduler {
    pub(super) fn new(config: &SchedulerConfig, steps: usize, start: usize) -> Result<Self> {
        let train = config.num_train_timesteps;
        let original = config.original_inference_steps.unwrap_or(50);
        if original == 0 || original > train {
            return Err(DiffusionError::Invalid(format!(
                "LCM original_inference_steps {original} must be in 1..={train}"
            )));
        }
        if steps > original {
            return Err(DiffusionError::Invalid(format!(
                "LCM runs at most original_inference_steps = {original} steps, {steps} were asked for"
            )));
        }
        // The distillation schedule, descending: k*original - 1, ..., k - 1.
        let k = train / original;
        let origin: Vec<usize> = (1..=original).rev().map(|i| i * k - 1).collect();
        // Evenly spaced picks from it: floor(linspace(0, len, steps, endpoint=False)).
        let all: Vec<f64> = linspace(0.0, origin.len() as f64, steps + 1)[..steps]
            .iter()
            .map(|&i| origin[i.floor() as usize] as f64)
            .collect();
        check_timesteps_in_range(&all, train)?;
        let alphas_cumprod = config.alphas_cumprod(BetaSchedule::ScaledLinear);
        Ok(Self {
            alphas_cumprod,
            timesteps: all[start..].to_vec(),
            prediction: config.prediction_type,
            clip: config.clip_range(false),
            timestep_scaling: config.timestep_scaling.unwrap_or(10.0),
        })
    }
}

impl Scheduler for LcmScheduler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, step_index: usize) -> Result<Tensor> {
        check_index(step_index, self.timesteps.len())?;
        check_same_shape("noise", noise, original)?;
        let a = self.alphas_cumprod[self.timesteps[step_index] as usize];
        lin2(original, a.sqrt(), noise, (1.0 - a).sqrt())
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        let n = self.timesteps.len();
        check_index(step_index, n)?;
        check_same_shape("model output", model_output, sample)?;
        let t = self.timesteps[step_index];
        let alpha_t = self.alphas_cumprod[t as usize];
        let (x0, _) = vp_prediction(self.prediction, model_output, sample, alpha_t, self.clip)?;
        // Boundary-condition scalings c_skip, c_out of the consistency function.
        let scaled = t * self.timestep_scaling;
        let denom = scaled * scaled + SIGMA_DATA * SIGMA_DATA;
        let c_skip = SIGMA_DATA * SIGMA_DATA / denom;
        let c_out = scaled / denom.sqrt();
        let denoised = lin2(&x0, c_out, sample, c_skip)?;
        if step_index + 1 == n {
            return Ok(denoised);
        }
        let noise = required_noise(SchedulerKind::Lcm, noise, sample)?;
        // LCM timesteps are all >= 0, so the next one always indexes the table.
        let alpha_prev = self.alphas_cumprod[self.timesteps[step_index + 1] as usize];
        lin2(&denoised, alpha_prev.sqrt(), noise, (1.0 - alpha_prev).sqrt())
    }

    fn needs_noise(&self) -> bool {
        true
    }
}
