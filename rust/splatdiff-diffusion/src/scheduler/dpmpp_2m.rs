//! DPM-Solver++ 2M (Lu et al. 2022) with Karras sigmas, as diffusers'
//! `DPMSolverMultistepScheduler` with `algorithm_type="dpmsolver++"`,
//! `solver_order=2`, `solver_type="midpoint"`, `use_karras_sigmas=True`,
//! `final_sigmas_type="zero"` and `lower_order_final=True` (the web UIs'
//! "DPM++ 2M Karras").

use candle_core::Tensor;

use super::euler_ancestral::train_sigmas;
use super::{
    check_index, check_same_shape, lin2, linspace, round_half_even, BetaSchedule, PredictionType, Scheduler,
    SchedulerConfig,
};
use crate::error::Result;

/// Karras' rho for the sigma ramp (the value from the paper).
const KARRAS_RHO: f64 = 7.0;

/// DPM++ 2M with Karras sigmas. Works on variance-preserving latents
/// (UNet input unscaled); keeps the previous step's x0 prediction.
#[derive(Debug, Clone)]
pub struct DpmPp2mScheduler {
    timesteps: Vec<f64>,
    /// Sigma of each step run, plus the final 0.
    sigmas: Vec<f64>,
    prediction: PredictionType,
    /// The previous step's index and x0 prediction (the multistep history).
    previous: Option<(usize, Tensor)>,
}

impl DpmPp2mScheduler {
    pub(super) fn new(config: &SchedulerConfig, steps: usize, start: usize) -> Result<Self> {
        let alphas_cumprod = config.alphas_cumprod(BetaSchedule::Linear);
        let train = train_sigmas(&alphas_cumprod);
        let log_sigmas: Vec<f64> = train.iter().map(|&s| (s as f32).ln() as f64).collect();
        let sigma_min = train[0];
        let sigma_max = train[train.len() - 1];
        let (min_inv, max_inv) = (sigma_min.powf(1.0 / KARRAS_RHO), sigma_max.powf(1.0 / KARRAS_RHO));
        let karras: Vec<f64> = linspace(0.0, 1.0, steps)
            .into_iter()
            .map(|r| (max_inv + r * (min_inv - max_inv)).powf(KARRAS_RHO))
            .collect();
        let all_timesteps: Vec<f64> = karras
            .iter()
            .map(|&s| {
                let t = sigma_to_t(s, &log_sigmas);
                // diffusers rounds unless the schedule is the cosine one.
                if config.beta_schedule == Some(BetaSchedule::SquaredcosCapV2) {
                    t
                } else {
                    round_half_even(t)
                }
            })
            .collect();
        let mut sigmas: Vec<f64> = karras.iter().map(|&s| s as f32 as f64).collect();
        sigmas.push(0.0);
        Ok(Self {
            timesteps: all_timesteps[start..].to_vec(),
            sigmas: sigmas[start..].to_vec(),
            prediction: config.prediction_type,
            previous: None,
        })
    }

    /// The sigma of each step run, followed by the final 0.
    pub fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }
}

/// The (fractional) training timestep whose log-sigma interpolates to
/// `sigma`, as diffusers' `_sigma_to_t`.
fn sigma_to_t(sigma: f64, log_sigmas: &[f64]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    // low = the last index whose log-sigma is <= log_sigma (cumsum(...).argmax()).
    let low = log_sigmas.iter().rposition(|&l| log_sigma - l >= 0.0).unwrap_or(0);
    let low = low.min(log_sigmas.len() - 2);
    let high = low + 1;
    let (l, h) = (log_sigmas[low], log_sigmas[high]);
    let w = ((l - log_sigma) / (l - h)).clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * high as f64
}

/// alpha_t, sigma_t and lambda_t = log(alpha_t / sigma_t) of the VP
/// process for a sigma of the sigma space.
fn vp_coefficients(sigma: f64) -> (f64, f64, f64) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    let sigma_t = sigma * alpha;
    (alpha, sigma_t, alpha.ln() - sigma_t.ln())
}

impl Scheduler for DpmPp2mScheduler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, step_index: usize) -> Result<Tensor> {
        check_index(step_index, self.timesteps.len())?;
        check_same_shape("noise", noise, original)?;
        let (alpha, sigma, _) = vp_coefficients(self.sigmas[step_index]);
        lin2(original, alpha, noise, sigma)
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        _noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        let n = self.timesteps.len();
        check_index(step_index, n)?;
        check_same_shape("model output", model_output, sample)?;
        let (alpha_s0, sigma_s0, lambda_s0) = vp_coefficients(self.sigmas[step_index]);
        let x0 = match self.prediction {
            PredictionType::Epsilon => lin2(sample, 1.0 / alpha_s0, model_output, -sigma_s0 / alpha_s0)?,
            PredictionType::VPrediction => lin2(sample, alpha_s0, model_output, -sigma_s0)?,
            PredictionType::Sample => model_output.clone(),
        };
        let sigma_next = self.sigmas[step_index + 1];
        let prev = if sigma_next == 0.0 {
            // Final step to sigma 0 (first order, exp(-h) = 0): the x0 prediction itself.
            x0.clone()
        } else {
            let (alpha_t, sigma_t, lambda_t) = vp_coefficients(sigma_next);
            let h = lambda_t - lambda_s0;
            let c = -alpha_t * ((-h).exp() - 1.0);
            let second_order = match &self.previous {
                // The second-to-last step stays second order too (lower_order_second
                // only matters for solver order 3).
                Some((prev_index, prev_x0)) if *prev_index + 1 == step_index && step_index > 0 => {
                    let (_, _, lambda_s1) = vp_coefficients(self.sigmas[step_index - 1]);
                    Some((prev_x0.clone(), (lambda_s0 - lambda_s1) / h))
                }
                _ => None,
            };
            match second_order {
                // D = x0 + 0.5 * (x0 - x0_prev) / r0
                Some((prev_x0, r0)) => {
                    let d = lin2(&x0, 1.0 + 0.5 / r0, &prev_x0, -0.5 / r0)?;
                    lin2(sample, sigma_t / sigma_s0, &d, c)?
                }
                None => lin2(sample, sigma_t / sigma_s0, &x0, c)?,
            }
        };
        self.previous = Some((step_index, x0));
        Ok(prev)
    }

    fn needs_noise(&self) -> bool {
        false
    }
}
