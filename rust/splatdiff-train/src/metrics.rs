//! Image quality metrics for evaluation: PSNR and SSIM of a rendered image
//! against its ground truth, both composited over the same background
//! (white for the NeRF-synthetic convention, [`WHITE`]).
//!
//! Values are clamped to `0..1` first, as images saved to 8-bit files would
//! be. SSIM is the same as the training loss's ([`crate::loss::ssim`]).

use splatdiff_render::Image;

use crate::dataset::TrainImage;
use crate::error::{Result, TrainError};
use crate::loss;

/// The NeRF-synthetic evaluation background.
pub const WHITE: [f32; 3] = [1.0, 1.0, 1.0];

/// PSNR in dB of `a` against `b` for values in `0..1`; infinite when identical.
pub fn psnr(a: &[[f32; 3]], b: &[[f32; 3]]) -> Result<f32> {
    if a.len() != b.len() || a.is_empty() {
        return Err(TrainError::invalid(format!("psnr: images of {} and {} pixels", a.len(), b.len())));
    }
    let se: f64 = a
        .iter()
        .zip(b)
        .flat_map(|(p, q)| (0..3).map(move |c| (p[c].clamp(0.0, 1.0) as f64 - q[c].clamp(0.0, 1.0) as f64).powi(2)))
        .sum();
    let mse = se / (3 * a.len()) as f64;
    Ok((-10.0 * mse.log10()) as f32)
}

/// PSNR and SSIM of a render (already over `background`) against `truth`
/// composited over the same `background`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quality {
    pub psnr: f32,
    pub ssim: f32,
}

/// Compares `render` (rendered with `View::background == background`) with `truth`.
pub fn evaluate(render: &Image, truth: &TrainImage, background: [f32; 3]) -> Result<Quality> {
    if (render.width, render.height) != (truth.width, truth.height) {
        return Err(TrainError::invalid(format!(
            "render is {}x{} but image {} is {}x{}",
            render.width, render.height, truth.name, truth.width, truth.height
        )));
    }
    let gt = truth.over(background);
    let clamp = |img: &[[f32; 3]]| img.iter().map(|p| p.map(|v| v.clamp(0.0, 1.0))).collect::<Vec<_>>();
    let (r, g) = (clamp(&render.color), clamp(&gt));
    Ok(Quality { psnr: psnr(&r, &g)?, ssim: loss::ssim(&r, &g, render.width, render.height)? })
}

/// Means of several [`Quality`]s (PSNR averaged in dB, as 3DGS reports it).
pub fn mean(qualities: &[Quality]) -> Quality {
    let n = qualities.len().max(1) as f32;
    Quality {
        psnr: qualities.iter().map(|q| q.psnr).sum::<f32>() / n,
        ssim: qualities.iter().map(|q| q.ssim).sum::<f32>() / n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psnr_of_a_known_error() {
        let a = vec![[0.5f32; 3]; 10];
        let b = vec![[0.6f32; 3]; 10];
        assert!((psnr(&a, &b).unwrap() - 20.0).abs() < 1e-3);
        assert!(psnr(&a, &a).unwrap().is_infinite());
    }
}
