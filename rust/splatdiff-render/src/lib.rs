//! Differentiable rasterizer for 3D Gaussian splats, as in 3DGS (Kerbl et
//! al. 2023): forward rendering and the backward pass for every parameter,
//! on wgpu compute shaders ([`gpu`]) and as a CPU reference ([`reference`])
//! that tests hold the GPU to.
//!
//! # The model and its conventions (shared by both implementations)
//!
//! Cameras are [`splatdiff_scene::Camera`]s (see `splatdiff_scene::camera`);
//! internally the rasterizer works in the OpenCV camera frame
//! ([`Camera::world_to_camera_opencv`]: +x right, +y down, +z forward).
//! Pixel `(i, j)` is sampled at its centre `(i + 0.5, j + 0.5)`.
//!
//! Per splat, in world space: mean `μ`, log-scales `log s`, rotation
//! quaternion `q = (w, x, y, z)` (normalised where used), opacity logit `o`,
//! and spherical-harmonic colour coefficients (`K = (d+1)²` RGB triples for
//! storage degree `d`; the DC term is `k = 0`).
//!
//! Forward, per splat:
//! 1. `Σ = R S Sᵀ Rᵀ` with `R = R(q)`, `S = diag(exp(log s))`.
//! 2. `t = W μ + w` (camera frame); culled when `t.z <` [`NEAR`].
//! 3. The Jacobian of the perspective projection at `t`, with `t.x/t.z` and
//!    `t.y/t.z` clamped to 1.3× the half field of view as 3DGS does:
//!    `J = [[fx/tz, 0, −fx·tx/tz²], [0, fy/tz, −fy·ty/tz²]]`; the 2D covariance
//!    is `Σ' = J W Σ Wᵀ Jᵀ + `[`BLUR`]`·I`, its inverse the conic.
//! 4. Centre in pixels: `(fx·tx/tz + cx, fy·ty/tz + cy)`; radius
//!    `ceil(3·sqrt(λ_max(Σ')))`; culled when the radius is 0 or its square
//!    misses the image.
//! 5. Colour: SH of active degree evaluated at `dir = normalize(μ − camera
//!    centre)`, `+ 0.5`, clamped below at 0 (with zero gradient there).
//!
//! Per pixel, splats sorted front to back by `t.z`: `α = min(`[`ALPHA_MAX`]`,
//! sigmoid(o)·exp(−½ dᵀ conic d))` with `d` the offset from the centre;
//! splats with `α <` [`ALPHA_MIN`] are skipped; the transmittance `T` starts at
//! 1 and the pixel stops before a splat that would bring `T·(1 − α)` below
//! [`T_MIN`]. Outputs: `C = Σ cᵢ αᵢ Tᵢ`, `A = 1 − T_final`, depth `Σ zᵢ αᵢ Tᵢ / A`
//! (0 where `A = 0`), and the image over a background `b`: `C + (1 − A)·b`.
//!
//! Backward takes `∂L/∂(image over background)` and `∂L/∂A` per pixel and
//! returns `∂L/∂` every parameter (depth has no gradient).
//!
//! Details both implementations share, where the official CUDA code and
//! gsplat differ (the finite-difference tests decide):
//! * the radius uses the exact largest eigenvalue (no 0.1 floor under
//!   `mid² − det`);
//! * the field-of-view clamp is differentiated exactly, as gsplat does: a
//!   clamped `t.x` gets no gradient, but the clamped value `lim·t.z` still
//!   depends on `t.z`;
//! * where `opacity·exp(power) >` [`ALPHA_MAX`], α is constant and gets no gradient;
//! * a splat is listed in tile `tx` when `16·tx < x + r` and `16·(tx+1) > x − r`
//!   (same for y); it is culled when that range is empty, `det(Σ') ≤ 0`,
//!   `t.z <` [`NEAR`] or the radius is 0; a pixel's offset is `d = centre − mean2d`;
//! * tile lists are ordered by depth, ties by splat index.

pub mod gpu;
pub mod reference;

use glam::Vec3;
use splatdiff_scene::{Camera, GaussianSplats};

/// Splats are tiled in squares of this many pixels.
pub const TILE: u32 = 16;
/// Splats closer than this (metres along the view axis) are culled.
pub const NEAR: f32 = 0.01;
/// Added to the 2D covariance's diagonal (pixels²): a low-pass filter that
/// keeps every splat at least about a pixel wide.
pub const BLUR: f32 = 0.3;
/// Contributions below this alpha are skipped.
pub const ALPHA_MIN: f32 = 1.0 / 255.0;
/// Alpha is clamped to this, so one splat never makes a pixel fully opaque.
pub const ALPHA_MAX: f32 = 0.99;
/// A pixel stops blending before its transmittance would fall below this.
pub const T_MIN: f32 = 1e-4;
/// Zeroth-order SH constant, 1 / (2·sqrt(π)).
pub const SH_C0: f32 = 0.282_094_8;
/// Highest supported SH degree.
pub const MAX_SH_DEGREE: u32 = 3;

/// Splat parameters in the form the optimiser works on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Splats {
    pub means: Vec<[f32; 3]>,
    pub log_scales: Vec<[f32; 3]>,
    /// `(w, x, y, z)`, normalised where used.
    pub quats: Vec<[f32; 4]>,
    pub opacity_logits: Vec<f32>,
    /// SH coefficients, coefficient-major per splat: `sh[(i·K + k)·3 + c]`
    /// for splat `i`, coefficient `k < K = (sh_degree + 1)²`, channel `c`.
    pub sh: Vec<f32>,
    /// Storage degree (how many coefficients are kept), 0..=3.
    pub sh_degree: u32,
}

/// Number of SH coefficients of degree `d`: `(d + 1)²`.
pub fn sh_coeffs(degree: u32) -> usize {
    ((degree + 1) * (degree + 1)) as usize
}

impl Splats {
    pub fn len(&self) -> usize {
        self.means.len()
    }

    pub fn is_empty(&self) -> bool {
        self.means.is_empty()
    }

    /// SH coefficients per splat.
    pub fn coeffs(&self) -> usize {
        sh_coeffs(self.sh_degree)
    }

    /// `None` when the fields agree in length and every value is finite, else what is wrong.
    pub fn problem(&self) -> Option<String> {
        let n = self.len();
        if self.sh_degree > MAX_SH_DEGREE {
            return Some(format!("SH degree {} is above {MAX_SH_DEGREE}", self.sh_degree));
        }
        let lengths = [
            ("log_scales", self.log_scales.len(), n),
            ("quats", self.quats.len(), n),
            ("opacity_logits", self.opacity_logits.len(), n),
            ("sh", self.sh.len(), n * self.coeffs() * 3),
        ];
        for (name, got, want) in lengths {
            if got != want {
                return Some(format!("{name} has {got} values, expected {want} for {n} splats"));
            }
        }
        let finite = |v: &[f32]| v.iter().position(|x| !x.is_finite());
        let checks = [
            ("position", finite(self.means.as_flattened()).map(|i| i / 3)),
            ("scale", finite(self.log_scales.as_flattened()).map(|i| i / 3)),
            ("rotation", finite(self.quats.as_flattened()).map(|i| i / 4)),
            ("opacity", finite(&self.opacity_logits)),
            ("colour", finite(&self.sh).map(|i| i / (self.coeffs() * 3))),
        ];
        for (what, bad) in checks {
            if let Some(i) = bad {
                return Some(format!("splat {i} has a non-finite {what}"));
            }
        }
        if let Some(i) = self.quats.iter().position(|q| q.iter().map(|v| v * v).sum::<f32>() < 1e-12) {
            return Some(format!("splat {i} has a zero rotation quaternion"));
        }
        None
    }

    /// From the PLY layout (whose `f_rest_*` hold all red coefficients, then
    /// green, then blue) to the coefficient-major layout used here.
    pub fn from_gaussians(g: &GaussianSplats) -> Self {
        let k = sh_coeffs(g.sh_degree);
        let rest = k - 1;
        let mut sh = Vec::with_capacity(g.len() * k * 3);
        for i in 0..g.len() {
            sh.extend_from_slice(&g.sh_dc[i]);
            let row = &g.sh_rest[i * rest * 3..(i + 1) * rest * 3];
            for j in 0..rest {
                sh.extend((0..3).map(|c| row[c * rest + j]));
            }
        }
        Self {
            means: g.positions.clone(),
            log_scales: g.scales.clone(),
            quats: g.rotations.clone(),
            opacity_logits: g.opacity.clone(),
            sh,
            sh_degree: g.sh_degree,
        }
    }

    /// Back to the PLY layout (the inverse of [`Splats::from_gaussians`]).
    pub fn to_gaussians(&self) -> GaussianSplats {
        let k = self.coeffs();
        let rest = k - 1;
        let mut sh_dc = Vec::with_capacity(self.len());
        let mut sh_rest = vec![0.0; self.len() * rest * 3];
        for i in 0..self.len() {
            let coeffs = &self.sh[i * k * 3..(i + 1) * k * 3];
            sh_dc.push([coeffs[0], coeffs[1], coeffs[2]]);
            for j in 0..rest {
                for c in 0..3 {
                    sh_rest[i * rest * 3 + c * rest + j] = coeffs[(j + 1) * 3 + c];
                }
            }
        }
        GaussianSplats {
            positions: self.means.clone(),
            sh_dc,
            sh_rest,
            sh_degree: self.sh_degree,
            opacity: self.opacity_logits.clone(),
            scales: self.log_scales.clone(),
            rotations: self.quats.clone(),
            extra: vec![],
        }
    }
}

/// What to render: a camera, how many SH degrees to use, and the background.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct View {
    pub camera: Camera,
    /// SH degree evaluated (≤ the splats' storage degree); training raises it over time.
    pub active_sh_degree: u32,
    /// Linear RGB composited behind the splats.
    pub background: Vec3,
}

/// A rendered image, row-major from the top row.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Image {
    pub width: u32,
    pub height: u32,
    /// Colour over the view's background.
    pub color: Vec<[f32; 3]>,
    /// Accumulated opacity `A`.
    pub alpha: Vec<f32>,
    /// Expected depth along the view axis where `A > 0`, else 0.
    pub depth: Vec<f32>,
}

impl Image {
    /// Straight (not premultiplied) RGBA: the colour the splats put on each
    /// pixel with the view's `background` removed, and their coverage as alpha;
    /// what an RGBA file of the render holds. Fully transparent pixels are black.
    pub fn straight_rgba(&self, background: Vec3) -> Vec<[f32; 4]> {
        self.color
            .iter()
            .zip(&self.alpha)
            .map(|(c, &a)| {
                if a <= 0.0 {
                    return [0.0; 4];
                }
                let rgb = Vec3::from(*c) - (1.0 - a) * background;
                let [r, g, b] = (rgb / a).clamp(Vec3::ZERO, Vec3::ONE).to_array();
                [r, g, b, a.min(1.0)]
            })
            .collect()
    }
}

/// Gradients of a loss with respect to every splat parameter; same layout as [`Splats`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Grads {
    pub means: Vec<[f32; 3]>,
    pub log_scales: Vec<[f32; 3]>,
    pub quats: Vec<[f32; 4]>,
    pub opacity_logits: Vec<f32>,
    pub sh: Vec<f32>,
}

/// Errors of the renderer: no usable GPU, bad splats, bad cameras.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("no GPU adapter: {0}")]
    NoAdapter(String),
    #[error("the GPU could not be set up: {0}")]
    Device(String),
    #[error("out of GPU memory: {0}")]
    OutOfMemory(String),
    #[error("invalid splats: {0}")]
    InvalidSplats(String),
    #[error("invalid camera: {0}")]
    InvalidCamera(String),
}

pub type Result<T, E = RenderError> = std::result::Result<T, E>;
