//! Densification strategies: how the set of splats changes during training.
//!
//! A [`Strategy`] edits the splats and their Adam moments on the host every
//! so often (the trainer downloads them from the GPU, calls it, and uploads
//! the result), and may perturb positions more often. 3DGS's adaptive
//! density control (ADC) would fit this trait too, but it also needs per-step
//! statistics of the screen-space position gradients, which the GPU API does
//! not expose yet; only [`Mcmc`] is implemented.
//!
//! # MCMC (Kheradmand et al. 2024, "3D Gaussian Splatting as Markov Chain Monte Carlo")
//!
//! Chosen because the splat count never exceeds a hard cap (so memory is
//! bounded and known in advance) and it does well from a random
//! initialisation. Every `refine_every` steps in `(refine_start, refine_stop)`:
//!
//! 1. **Relocate** dead splats (opacity < `min_opacity`) onto live ones drawn
//!    with probability ∝ opacity. A source drawn `n` times is split into
//!    `n + 1` copies whose combined rendering matches the original: opacity
//!    `1 − (1 − o)^(1/(n+1))` and the scale from the paper's binomial formula
//!    (exact, as gsplat's `compute_relocation`).
//! 2. **Add** `grow_rate` (5%) more splats the same way, until `max_splats`.
//! 3. Zero the Adam moments of every splat touched (sources and copies).
//!
//! The paper also adds noise to positions after every step (stochastic
//! gradient Langevin dynamics): `Σ·z · sigmoid(−100·(o − 0.005)) ·
//! lr_means · noise_lr`, `z ~ N(0, I)`, `Σ` the splat's covariance, so only
//! nearly transparent splats wander. The GPU API offers no kernel for it, so
//! it runs on the host every `noise_every` steps (a download and an upload),
//! with its amplitude multiplied by `sqrt(noise_every)` so the variance
//! accumulated over an interval matches per-step noise.
//!
//! Not done: the paper's L1 regularisers on opacity and scale (which make
//! unseen splats fade and get relocated). They only change gradients, and the
//! GPU API has no way to add host-computed terms to `GpuGrads` (nor an
//! option of the backward or Adam kernels for them); dead splats are still
//! found and relocated, just less often.

use glam::{Mat3, Quat, Vec3};
use serde::{Deserialize, Serialize};
use splatdiff_render::Splats;

use crate::rng::Rng;

/// Adam's first (`m`) and second (`v`) moments, in the layout of [`Splats`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Moments {
    pub m: Splats,
    pub v: Splats,
}

/// What one refinement did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RefineStats {
    /// Dead splats moved onto live ones.
    pub relocated: usize,
    /// Splats added.
    pub added: usize,
    /// Splats after the refinement.
    pub total: usize,
}

/// A densification strategy; see the module documentation.
pub trait Strategy {
    /// Whether [`Strategy::refine`] should run once `step` steps are done.
    fn refine_due(&self, step: u64) -> bool;
    /// Edits splats and moments (which have the same length in and out).
    fn refine(&mut self, step: u64, splats: &mut Splats, moments: &mut Moments, rng: &mut Rng) -> RefineStats;
    /// Whether [`Strategy::perturb`] should run once `step` steps are done.
    fn perturb_due(&self, _step: u64) -> bool {
        false
    }
    /// Perturbs the splats (not the moments); `lr_means` is the current position learning rate.
    fn perturb(&mut self, _splats: &mut Splats, _lr_means: f32, _rng: &mut Rng) {}
}

/// Settings of [`Mcmc`]; the cap on the count is `TrainConfig::max_splats`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct McmcConfig {
    /// First step after which refinement may run (exclusive).
    pub refine_start: u64,
    /// Last step of refinement; `None`: 25 000 or 90% of the run, whichever is less.
    pub refine_stop: Option<u64>,
    pub refine_every: u64,
    /// Fraction of splats added per refinement until the cap.
    pub grow_rate: f32,
    /// Splats below this opacity are dead and get relocated.
    pub min_opacity: f32,
    /// Scale of the position noise relative to the position learning rate.
    pub noise_lr: f32,
    /// Apply position noise every this many steps (0: never).
    pub noise_every: u64,
    /// Most copies one splat is split into at a time.
    pub max_split: usize,
}

impl Default for McmcConfig {
    fn default() -> Self {
        Self {
            refine_start: 500,
            refine_stop: None,
            refine_every: 100,
            grow_rate: 0.05,
            min_opacity: 0.005,
            noise_lr: 5e5,
            noise_every: 10,
            max_split: 51,
        }
    }
}

impl McmcConfig {
    /// Why the settings are unusable, if they are.
    pub fn problem(&self) -> Option<String> {
        if self.refine_every == 0 {
            return Some("mcmc.refine_every must be at least 1".into());
        }
        if !(self.grow_rate >= 0.0 && self.grow_rate.is_finite()) {
            return Some(format!("mcmc.grow_rate {} must be a non-negative number", self.grow_rate));
        }
        if !(self.min_opacity > 0.0 && self.min_opacity < 1.0) {
            return Some(format!("mcmc.min_opacity {} must be between 0 and 1", self.min_opacity));
        }
        if !(self.noise_lr >= 0.0 && self.noise_lr.is_finite()) {
            return Some(format!("mcmc.noise_lr {} must be a non-negative number", self.noise_lr));
        }
        if self.max_split < 1 {
            return Some("mcmc.max_split must be at least 1".into());
        }
        None
    }
}

/// The MCMC strategy; see the module documentation.
#[derive(Clone, Debug)]
pub struct Mcmc {
    pub config: McmcConfig,
    pub max_splats: usize,
    /// Resolved last refinement step.
    pub refine_stop: u64,
    /// `binomial[n][k]` = C(n, k) for `n < max_split`.
    binomial: Vec<Vec<f64>>,
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl Mcmc {
    pub fn new(config: McmcConfig, max_splats: usize, total_steps: u64) -> Self {
        let refine_stop = config.refine_stop.unwrap_or_else(|| 25_000.min(total_steps * 9 / 10));
        let n = config.max_split.max(1);
        let mut binomial = vec![vec![0.0f64; n]; n];
        for i in 0..n {
            binomial[i][0] = 1.0;
            for k in 1..=i {
                binomial[i][k] = binomial[i - 1][k - 1] + if k < i { binomial[i - 1][k] } else { 0.0 };
            }
        }
        Self { config, max_splats, refine_stop, binomial }
    }

    /// Opacity and scale factor of each of `ratio` copies of a splat of
    /// opacity `o` (Kheradmand et al. 2024, eq. 9 and its scale correction).
    pub fn split(&self, o: f32, ratio: usize) -> (f32, f32) {
        let ratio = ratio.clamp(1, self.binomial.len());
        let o = (o as f64).clamp(1e-12, 1.0 - 1e-7);
        let new_o = 1.0 - (1.0 - o).powf(1.0 / ratio as f64);
        let mut denom = 0.0;
        for i in 1..=ratio {
            for k in 0..i {
                let sign = if k % 2 == 0 { 1.0 } else { -1.0 };
                denom += self.binomial[i - 1][k] * sign / ((k + 1) as f64).sqrt() * new_o.powi(k as i32 + 1);
            }
        }
        let scale = if denom > 0.0 { o / denom } else { 1.0 };
        let new_o = new_o.clamp(self.config.min_opacity as f64, 1.0 - 1e-6);
        (new_o as f32, scale as f32)
    }

    /// Splits each drawn source among its copies in place (opacity and scale
    /// corrected) and zeroes its moments; returns the sources in draw order.
    fn split_sources(&self, sources: &[usize], splats: &mut Splats, moments: &mut Moments) {
        let mut counts = std::collections::HashMap::<usize, usize>::new();
        for &s in sources {
            *counts.entry(s).or_default() += 1;
        }
        let mut keys: Vec<_> = counts.into_iter().collect();
        keys.sort_unstable();
        for (s, n) in keys {
            let (o, f) = self.split(sigmoid(splats.opacity_logits[s]), n + 1);
            splats.opacity_logits[s] = (o / (1.0 - o)).ln();
            let ln_f = f.max(1e-12).ln();
            splats.log_scales[s].iter_mut().for_each(|v| *v += ln_f);
            zero(&mut moments.m, s);
            zero(&mut moments.v, s);
        }
    }
}

/// Copies splat `from` onto `to` (`to` may equal `len()`, which appends).
fn copy(s: &mut Splats, from: usize, to: usize) {
    let k = s.coeffs() * 3;
    if to == s.len() {
        s.means.push(s.means[from]);
        s.log_scales.push(s.log_scales[from]);
        s.quats.push(s.quats[from]);
        s.opacity_logits.push(s.opacity_logits[from]);
        s.sh.extend_from_within(from * k..(from + 1) * k);
    } else {
        s.means[to] = s.means[from];
        s.log_scales[to] = s.log_scales[from];
        s.quats[to] = s.quats[from];
        s.opacity_logits[to] = s.opacity_logits[from];
        s.sh.copy_within(from * k..(from + 1) * k, to * k);
    }
}

/// Sets every value of splat `i` to zero (for moments).
fn zero(s: &mut Splats, i: usize) {
    let k = s.coeffs() * 3;
    s.means[i] = [0.0; 3];
    s.log_scales[i] = [0.0; 3];
    s.quats[i] = [0.0; 4];
    s.opacity_logits[i] = 0.0;
    s.sh[i * k..(i + 1) * k].fill(0.0);
}

impl Strategy for Mcmc {
    fn refine_due(&self, step: u64) -> bool {
        step > self.config.refine_start && step < self.refine_stop && step % self.config.refine_every == 0
    }

    fn refine(&mut self, _step: u64, splats: &mut Splats, moments: &mut Moments, rng: &mut Rng) -> RefineStats {
        let n = splats.len();
        let mut stats = RefineStats { total: n, ..Default::default() };
        if n == 0 || moments.m.len() != n || moments.v.len() != n {
            return stats;
        }
        // 1. Relocate dead splats onto live ones.
        let opacity: Vec<f32> = splats.opacity_logits.iter().map(|&l| sigmoid(l)).collect();
        let dead: Vec<usize> = (0..n).filter(|&i| opacity[i] <= self.config.min_opacity).collect();
        let alive: Vec<usize> = (0..n).filter(|&i| opacity[i] > self.config.min_opacity).collect();
        if !dead.is_empty() && !alive.is_empty() {
            let weights: Vec<f32> = alive.iter().map(|&i| opacity[i]).collect();
            let sources: Vec<usize> =
                rng.weighted_indices(&weights, dead.len()).into_iter().map(|j| alive[j]).collect();
            self.split_sources(&sources, splats, moments);
            for (&d, &s) in dead.iter().zip(&sources) {
                copy(splats, s, d);
                zero(&mut moments.m, d);
                zero(&mut moments.v, d);
            }
            stats.relocated = dead.len();
        }
        // 2. Grow by `grow_rate`, up to the cap.
        let target = ((n as f64 * (1.0 + self.config.grow_rate as f64)) as usize).min(self.max_splats);
        if target > n {
            let opacity: Vec<f32> = splats.opacity_logits.iter().map(|&l| sigmoid(l)).collect();
            let sources = rng.weighted_indices(&opacity, target - n);
            self.split_sources(&sources, splats, moments);
            for &s in &sources {
                let end = splats.len();
                copy(splats, s, end);
                copy(&mut moments.m, s, end); // zeroed by split_sources
                copy(&mut moments.v, s, end);
            }
            stats.added = target - n;
        }
        stats.total = splats.len();
        stats
    }

    fn perturb_due(&self, step: u64) -> bool {
        self.config.noise_every > 0 && self.config.noise_lr > 0.0 && step % self.config.noise_every == 0
    }

    fn perturb(&mut self, splats: &mut Splats, lr_means: f32, rng: &mut Rng) {
        let scaler = lr_means * self.config.noise_lr * (self.config.noise_every.max(1) as f32).sqrt();
        for i in 0..splats.len() {
            let o = sigmoid(splats.opacity_logits[i]);
            let gate = sigmoid(-100.0 * (o - self.config.min_opacity));
            let z = Vec3::new(rng.normal(), rng.normal(), rng.normal());
            if gate < 1e-8 {
                continue; // the draw is still made, so the stream does not depend on the gate
            }
            let q = splats.quats[i];
            let r = Mat3::from_quat(Quat::from_xyzw(q[1], q[2], q[3], q[0]).normalize());
            let s2 = Vec3::from(splats.log_scales[i].map(|l| (2.0 * l).exp()));
            let cov = r * Mat3::from_diagonal(s2) * r.transpose();
            let d = cov * z * (gate * scaler);
            if d.is_finite() {
                let m = &mut splats.means[i];
                m[0] += d.x;
                m[1] += d.y;
                m[2] += d.z;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init;

    fn moments_like(s: &Splats) -> Moments {
        let mut m = s.clone();
        m.means.iter_mut().for_each(|v| *v = [1.0; 3]);
        Moments { m: m.clone(), v: m }
    }

    #[test]
    fn split_preserves_a_single_splat_and_composes_opacity() {
        let mcmc = Mcmc::new(McmcConfig::default(), 100, 1000);
        let (o, f) = mcmc.split(0.6, 1);
        assert!((o - 0.6).abs() < 1e-6 && (f - 1.0).abs() < 1e-5);
        let (o2, _) = mcmc.split(0.6, 2);
        assert!((1.0 - (1.0 - o2) * (1.0 - o2) - 0.6).abs() < 1e-5);
    }

    #[test]
    fn relocates_dead_splats_and_respects_the_cap() {
        let mut s = init::random(Vec3::splat(-1.0), Vec3::splat(1.0), 100, 1);
        for i in 0..30 {
            s.opacity_logits[i] = -10.0; // dead
        }
        s.opacity_logits[99] = 3.0;
        let mut moments = moments_like(&s);
        let mut mcmc = Mcmc::new(McmcConfig::default(), 103, 10_000);
        let mut rng = Rng::new(5);
        assert!(mcmc.refine_due(600) && !mcmc.refine_due(500) && !mcmc.refine_due(650) && !mcmc.refine_due(9100));
        let stats = mcmc.refine(600, &mut s, &mut moments, &mut rng);
        assert_eq!(stats, RefineStats { relocated: 30, added: 3, total: 103 });
        assert!(s.problem().is_none());
        assert_eq!((moments.m.len(), moments.v.len()), (103, 103));
        assert!(s.opacity_logits.iter().all(|&l| sigmoid(l) >= 0.005 - 1e-6), "no dead splat left");
        for i in 0..30 {
            assert!(s.means[i] != init::random(Vec3::splat(-1.0), Vec3::splat(1.0), 100, 1).means[i]);
            assert_eq!(moments.m.means[i], [0.0; 3], "moments of relocated splats are reset");
        }
        assert_eq!(moments.v.means[102], [0.0; 3]);
        for _ in 0..10 {
            let stats = mcmc.refine(700, &mut s, &mut moments, &mut rng);
            assert!(stats.total <= 103);
        }
        assert_eq!(s.len(), 103);
    }

    #[test]
    fn noise_moves_only_transparent_splats() {
        let mut s = init::random(Vec3::splat(-1.0), Vec3::splat(1.0), 2, 1);
        s.opacity_logits = vec![-10.0, 2.0];
        let before = s.clone();
        let mut mcmc = Mcmc::new(McmcConfig::default(), 10, 1000);
        mcmc.perturb(&mut s, 1e-3, &mut Rng::new(1));
        assert_ne!(s.means[0], before.means[0]);
        assert_eq!(s.means[1], before.means[1]);
    }
}
