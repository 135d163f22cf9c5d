//! Quality and stability measures of propagated frames: PSNR and SSIM
//! inside the object's mask against a ground truth, and the temporal warp
//! error (how much a surface point's colour changes between consecutive
//! frames, followed through the known geometry).

use rayon::prelude::*;

use crate::geometry::FrameGeometry;
use crate::image::Image;

/// PSNR in dB of `a` against `b` over the RGB of pixels where `mask` > 0.5.
pub fn psnr_masked(a: &Image, b: &Image, mask: &[f32]) -> f64 {
    let mut se = 0.0f64;
    let mut n = 0usize;
    for (i, &m) in mask.iter().enumerate() {
        if m > 0.5 {
            let (x, y) = (a.rgb(i), b.rgb(i));
            for k in 0..3 {
                se += ((x[k] - y[k]) as f64).powi(2);
            }
            n += 3;
        }
    }
    if n == 0 {
        return f64::NAN;
    }
    let mse = se / n as f64;
    if mse <= 0.0 {
        return f64::INFINITY;
    }
    10.0 * (1.0 / mse).log10()
}

/// Mean SSIM (Gaussian window, σ = 1.5, radius 5; the standard constants)
/// over the RGB channels, averaged over pixels where `mask` > 0.5.
pub fn ssim_masked(a: &Image, b: &Image, mask: &[f32]) -> f64 {
    let (w, h) = (a.width, a.height);
    let radius = 5i32;
    let kernel: Vec<f32> = (-radius..=radius).map(|d| (-(d * d) as f32 / (2.0 * 1.5 * 1.5)).exp()).collect();
    let ksum: f32 = kernel.iter().sum();
    let kernel: Vec<f32> = kernel.iter().map(|k| k / ksum).collect();
    let blur = |src: &[f32]| -> Vec<f32> {
        let mut tmp = vec![0.0f32; w * h];
        tmp.par_chunks_mut(w).enumerate().for_each(|(y, row)| {
            for (x, out) in row.iter_mut().enumerate() {
                let mut s = 0.0;
                for (k, kv) in kernel.iter().enumerate() {
                    let sx = (x as i32 + k as i32 - radius).clamp(0, w as i32 - 1) as usize;
                    s += kv * src[y * w + sx];
                }
                *out = s;
            }
        });
        let mut out = vec![0.0f32; w * h];
        out.par_chunks_mut(w).enumerate().for_each(|(y, row)| {
            for (x, o) in row.iter_mut().enumerate() {
                let mut s = 0.0;
                for (k, kv) in kernel.iter().enumerate() {
                    let sy = (y as i32 + k as i32 - radius).clamp(0, h as i32 - 1) as usize;
                    s += kv * tmp[sy * w + x];
                }
                *o = s;
            }
        });
        out
    };
    let (c1, c2) = (0.01f32.powi(2), 0.03f32.powi(2));
    let mut total = 0.0f64;
    let mut count = 0usize;
    for ch in 0..3 {
        let x: Vec<f32> = (0..w * h).map(|i| a.rgb(i)[ch]).collect();
        let y: Vec<f32> = (0..w * h).map(|i| b.rgb(i)[ch]).collect();
        let xx: Vec<f32> = x.iter().map(|v| v * v).collect();
        let yy: Vec<f32> = y.iter().map(|v| v * v).collect();
        let xy: Vec<f32> = x.iter().zip(&y).map(|(p, q)| p * q).collect();
        let (mx, my, sxx, syy, sxy) = (blur(&x), blur(&y), blur(&xx), blur(&yy), blur(&xy));
        for i in 0..w * h {
            if mask[i] > 0.5 {
                let (vx, vy, cxy) = (sxx[i] - mx[i] * mx[i], syy[i] - my[i] * my[i], sxy[i] - mx[i] * my[i]);
                let s = ((2.0 * mx[i] * my[i] + c1) * (2.0 * cxy + c2))
                    / ((mx[i] * mx[i] + my[i] * my[i] + c1) * (vx + vy + c2));
                total += s as f64;
                count += 1;
            }
        }
    }
    if count == 0 {
        f64::NAN
    } else {
        total / count as f64
    }
}

/// Temporal warp error between two consecutive outputs: every object pixel
/// of frame `b` is reprojected into frame `a` (occlusion-tested); the mean
/// absolute RGB difference over the pixels both see, and their count.
pub fn warp_error(a_geom: &FrameGeometry, a: &Image, b_geom: &FrameGeometry, b: &Image) -> (f64, usize) {
    let w = b_geom.width;
    let partial: Vec<(f64, usize)> = (0..b_geom.height)
        .into_par_iter()
        .map(|y| {
            let mut sum = 0.0f64;
            let mut n = 0usize;
            let mut px = vec![0.0f32; a.channels];
            for x in 0..w {
                if let Some(r) = b_geom.reproject(a_geom, x, y) {
                    a.sample_bilinear(r.position.x, r.position.y, &mut px);
                    let q = b.rgb(y * w + x);
                    let p = if a.channels >= 3 { [px[0], px[1], px[2]] } else { [px[0]; 3] };
                    sum += (0..3).map(|k| (p[k] - q[k]).abs() as f64).sum::<f64>() / 3.0;
                    n += 1;
                }
            }
            (sum, n)
        })
        .collect();
    let (sum, n) = partial.iter().fold((0.0, 0), |(s, n), (a, b)| (s + a, n + b));
    (if n > 0 { sum / n as f64 } else { f64::NAN }, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psnr_and_ssim_of_identical_and_noisy_images() {
        let mut a = Image::new(32, 32, 3);
        for (i, v) in a.data.iter_mut().enumerate() {
            *v = ((i * 13) % 29) as f32 / 29.0;
        }
        let mask = vec![1.0; 32 * 32];
        assert!(psnr_masked(&a, &a, &mask).is_infinite());
        assert!((ssim_masked(&a, &a, &mask) - 1.0).abs() < 1e-6);
        let mut b = a.clone();
        for v in b.data.iter_mut() {
            *v += 0.1;
        }
        // A uniform offset of 0.1: MSE 0.01, PSNR 20 dB.
        assert!((psnr_masked(&a, &b, &mask) - 20.0).abs() < 1e-3);
        assert!(ssim_masked(&a, &b, &mask) < 1.0);
    }
}
