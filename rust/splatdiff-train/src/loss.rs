//! The photometric loss of 3DGS, `(1 − λ)·L1 + λ·(1 − SSIM)` with λ = 0.2,
//! and its exact gradient with respect to the rendered image.
//!
//! SSIM is 3DGS's `ssim()`: per colour channel, local statistics under an
//! 11×11 Gaussian window (σ = 1.5) applied as a "same"-size convolution
//! with zero padding, `C1 = 0.01²`, `C2 = 0.03²`, and the SSIM map averaged
//! over every pixel and channel. The window is separable, so each of the
//! five local statistics costs two 1D passes; the gradient reuses them and
//! needs three more (the convolution with a symmetric kernel and zero padding
//! is its own transpose). Work runs on the CPU in `f64`, channels in parallel.

use rayon::prelude::*;

use crate::error::{Result, TrainError};

/// Side of the SSIM window in pixels.
pub const SSIM_WINDOW: usize = 11;
/// Standard deviation of the SSIM window's Gaussian, in pixels.
pub const SSIM_SIGMA: f64 = 1.5;
/// SSIM's stabilising constants for values in `0..1`.
pub const SSIM_C1: f64 = 0.01 * 0.01;
pub const SSIM_C2: f64 = 0.03 * 0.03;
/// 3DGS's weight of the D-SSIM term.
pub const DEFAULT_SSIM_WEIGHT: f32 = 0.2;

/// The normalised 1D Gaussian of the SSIM window.
fn kernel() -> [f64; SSIM_WINDOW] {
    let r = (SSIM_WINDOW / 2) as f64;
    let mut k: [f64; SSIM_WINDOW] =
        std::array::from_fn(|i| (-((i as f64 - r).powi(2)) / (2.0 * SSIM_SIGMA * SSIM_SIGMA)).exp());
    let sum: f64 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= sum);
    k
}

/// Same-size 2D Gaussian blur of a `w`×`h` plane with zero padding (separable).
fn blur(plane: &[f64], w: usize, h: usize, k: &[f64; SSIM_WINDOW]) -> Vec<f64> {
    let r = (SSIM_WINDOW / 2) as isize;
    let mut tmp = vec![0.0; w * h];
    for y in 0..h {
        let row = &plane[y * w..(y + 1) * w];
        for x in 0..w {
            let mut s = 0.0;
            for (t, kv) in k.iter().enumerate() {
                let xx = x as isize + t as isize - r;
                if xx >= 0 && (xx as usize) < w {
                    s += kv * row[xx as usize];
                }
            }
            tmp[y * w + x] = s;
        }
    }
    let mut out = vec![0.0; w * h];
    for y in 0..h {
        for (t, kv) in k.iter().enumerate() {
            let yy = y as isize + t as isize - r;
            if yy < 0 || yy as usize >= h {
                continue;
            }
            let src = &tmp[yy as usize * w..(yy as usize + 1) * w];
            for (o, s) in out[y * w..(y + 1) * w].iter_mut().zip(src) {
                *o += kv * s;
            }
        }
    }
    out
}

/// One channel's SSIM map sum and, when asked, `∂(Σ_p S_p)/∂x`.
fn channel_ssim(x: &[f64], y: &[f64], w: usize, h: usize, want_grad: bool) -> (f64, Vec<f64>, Option<Vec<f64>>) {
    let k = kernel();
    let sq = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(a, b)| a * b).collect::<Vec<_>>();
    let m1 = blur(x, w, h, &k);
    let m2 = blur(y, w, h, &k);
    let e11 = blur(&sq(x, x), w, h, &k);
    let e22 = blur(&sq(y, y), w, h, &k);
    let e12 = blur(&sq(x, y), w, h, &k);
    let n = w * h;
    let mut map = vec![0.0; n];
    let (mut dm1, mut de11, mut de12) =
        if want_grad { (vec![0.0; n], vec![0.0; n], vec![0.0; n]) } else { (vec![], vec![], vec![]) };
    for p in 0..n {
        let (a, b) = (m1[p], m2[p]);
        let s11 = e11[p] - a * a;
        let s22 = e22[p] - b * b;
        let s12 = e12[p] - a * b;
        let a1 = 2.0 * a * b + SSIM_C1;
        let a2 = 2.0 * s12 + SSIM_C2;
        let b1 = a * a + b * b + SSIM_C1;
        let b2 = s11 + s22 + SSIM_C2;
        let s = a1 * a2 / (b1 * b2);
        map[p] = s;
        if want_grad {
            dm1[p] = (2.0 * b * a2 - 2.0 * b * a1) / (b1 * b2) - s * (2.0 * a / b1 - 2.0 * a / b2);
            de11[p] = -s / b2;
            de12[p] = 2.0 * a1 / (b1 * b2);
        }
    }
    let sum = map.iter().sum();
    let grad = want_grad.then(|| {
        let (g1, g11, g12) = (blur(&dm1, w, h, &k), blur(&de11, w, h, &k), blur(&de12, w, h, &k));
        (0..n).map(|q| g1[q] + 2.0 * x[q] * g11[q] + y[q] * g12[q]).collect()
    });
    (sum, map, grad)
}

fn check(a: &[[f32; 3]], b: &[[f32; 3]], w: u32, h: u32) -> Result<()> {
    let n = w as usize * h as usize;
    if n == 0 || a.len() != n || b.len() != n {
        return Err(TrainError::invalid(format!(
            "loss: images of {} and {} pixels for a {w}x{h} image",
            a.len(),
            b.len()
        )));
    }
    Ok(())
}

fn plane(img: &[[f32; 3]], c: usize) -> Vec<f64> {
    img.iter().map(|p| p[c] as f64).collect()
}

/// Per channel: (sum of the SSIM map, the map, optional gradient of the sum).
fn ssim_channels(a: &[[f32; 3]], b: &[[f32; 3]], w: u32, h: u32, grad: bool) -> Vec<(f64, Vec<f64>, Option<Vec<f64>>)> {
    (0..3usize)
        .into_par_iter()
        .map(|c| channel_ssim(&plane(a, c), &plane(b, c), w as usize, h as usize, grad))
        .collect()
}

/// Mean SSIM of `a` against `b` (both `w`×`h`, row-major RGB).
pub fn ssim(a: &[[f32; 3]], b: &[[f32; 3]], w: u32, h: u32) -> Result<f32> {
    check(a, b, w, h)?;
    let total: f64 = ssim_channels(a, b, w, h, false).iter().map(|c| c.0).sum();
    Ok((total / (3.0 * w as f64 * h as f64)) as f32)
}

/// The per-pixel SSIM map of one channel `c` (for tests and diagnostics).
pub fn ssim_map(a: &[[f32; 3]], b: &[[f32; 3]], w: u32, h: u32, c: usize) -> Result<Vec<f32>> {
    check(a, b, w, h)?;
    let (_, map, _) = channel_ssim(&plane(a, c.min(2)), &plane(b, c.min(2)), w as usize, h as usize, false);
    Ok(map.into_iter().map(|v| v as f32).collect())
}

/// `(1 − λ)·mean|render − target| + λ·(1 − SSIM(render, target))` with
/// `λ = ssim_weight`, and its gradient with respect to `render`.
pub fn photometric_loss(
    render: &[[f32; 3]],
    target: &[[f32; 3]],
    w: u32,
    h: u32,
    ssim_weight: f32,
) -> Result<(f32, Vec<[f32; 3]>)> {
    let (loss, grad) = loss_f64(render, target, w, h, ssim_weight)?;
    Ok((loss as f32, grad))
}

/// [`photometric_loss`] with the loss kept in `f64`.
fn loss_f64(
    render: &[[f32; 3]],
    target: &[[f32; 3]],
    w: u32,
    h: u32,
    ssim_weight: f32,
) -> Result<(f64, Vec<[f32; 3]>)> {
    check(render, target, w, h)?;
    if !(0.0..=1.0).contains(&ssim_weight) {
        return Err(TrainError::invalid(format!("ssim_weight {ssim_weight} must be between 0 and 1")));
    }
    let lambda = ssim_weight as f64;
    let n = 3.0 * w as f64 * h as f64;
    let channels = if lambda > 0.0 { ssim_channels(render, target, w, h, true) } else { Vec::new() };
    let ssim_sum: f64 = channels.iter().map(|c| c.0).sum();
    let mut l1 = 0.0f64;
    let mut grad = vec![[0.0f32; 3]; render.len()];
    for (i, (r, t)) in render.iter().zip(target).enumerate() {
        for c in 0..3 {
            let d = r[c] as f64 - t[c] as f64;
            l1 += d.abs();
            let mut g = (1.0 - lambda) * d.signum() * (d != 0.0) as u8 as f64 / n;
            if let Some(Some(gs)) = channels.get(c).map(|ch| ch.2.as_ref()) {
                g -= lambda * gs[i] / n;
            }
            grad[i][c] = g as f32;
        }
    }
    let ssim = if lambda > 0.0 { ssim_sum / n } else { 1.0 };
    let loss = (1.0 - lambda) * l1 / n + lambda * (1.0 - ssim);
    Ok((loss, grad))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn random_image(rng: &mut Rng, n: usize) -> Vec<[f32; 3]> {
        (0..n).map(|_| [rng.uniform_f32(), rng.uniform_f32(), rng.uniform_f32()]).collect()
    }

    #[test]
    fn ssim_of_an_image_with_itself_is_one() {
        let mut rng = Rng::new(1);
        let a = random_image(&mut rng, 23 * 17);
        assert!((ssim(&a, &a, 23, 17).unwrap() - 1.0).abs() < 1e-6);
        let (loss, grad) = photometric_loss(&a, &a, 23, 17, 0.2).unwrap();
        assert!(loss.abs() < 1e-6 && grad.iter().flatten().all(|g| g.abs() < 1e-7));
    }

    #[test]
    fn known_value_for_black_against_a_constant() {
        // x = 0, y = b: in the interior (window fully inside) every local
        // variance is 0, so SSIM = C1 / (b² + C1); b = 0.01 gives exactly ½.
        let (w, h) = (32, 30);
        let x = vec![[0.0; 3]; w * h];
        let y = vec![[0.01; 3]; w * h];
        let map = ssim_map(&x, &y, w as u32, h as u32, 1).unwrap();
        for yy in 5..h - 5 {
            for xx in 5..w - 5 {
                assert!((map[yy * w + xx] - 0.5).abs() < 1e-4, "{}", map[yy * w + xx]);
            }
        }
        // Near the border the zero padding lowers the local means, and the
        // value rises toward 1 (both tend to black).
        assert!(map[0] > 0.5);
    }

    #[test]
    fn separable_window_matches_a_direct_2d_sum() {
        let mut rng = Rng::new(2);
        let (w, h) = (15usize, 13usize);
        let plane: Vec<f64> = (0..w * h).map(|_| rng.uniform()).collect();
        let k = kernel();
        let fast = blur(&plane, w, h, &k);
        for y in 0..h {
            for x in 0..w {
                let mut s = 0.0;
                for dy in 0..11 {
                    for dx in 0..11 {
                        let (yy, xx) = (y as isize + dy as isize - 5, x as isize + dx as isize - 5);
                        if yy >= 0 && xx >= 0 && (yy as usize) < h && (xx as usize) < w {
                            s += k[dy] * k[dx] * plane[yy as usize * w + xx as usize];
                        }
                    }
                }
                assert!((s - fast[y * w + x]).abs() < 1e-12);
            }
        }
        assert!((k.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    fn finite_difference_check(ssim_weight: f32, seed: u64) {
        let mut rng = Rng::new(seed);
        let (w, h) = (13u32, 12u32);
        let n = (w * h) as usize;
        let target = random_image(&mut rng, n);
        // Keep |render − target| ≥ 0.05 so the L1 kink is never crossed.
        let render: Vec<[f32; 3]> = target
            .iter()
            .map(|t| {
                t.map(|v| {
                    let d = 0.05 + 0.3 * rng.uniform_f32();
                    if rng.uniform() < 0.5 {
                        v + d
                    } else {
                        v - d
                    }
                })
            })
            .collect();
        let (_, grad) = photometric_loss(&render, &target, w, h, ssim_weight).unwrap();
        let eps = 1e-3f32;
        for _ in 0..40 {
            let (i, c) = (rng.below(n), rng.below(3));
            let mut plus = render.clone();
            plus[i][c] += eps;
            let mut minus = render.clone();
            minus[i][c] -= eps;
            let lp = loss_f64(&plus, &target, w, h, ssim_weight).unwrap().0;
            let lm = loss_f64(&minus, &target, w, h, ssim_weight).unwrap().0;
            let fd = (lp - lm) / (plus[i][c] as f64 - minus[i][c] as f64);
            let g = grad[i][c] as f64;
            assert!(
                (fd - g).abs() < 1e-3 * g.abs() + 1e-8,
                "pixel {i} channel {c}: analytic {g}, finite difference {fd}"
            );
        }
    }

    #[test]
    fn ssim_gradient_matches_finite_differences() {
        finite_difference_check(1.0, 3);
    }

    #[test]
    fn full_loss_gradient_matches_finite_differences() {
        finite_difference_check(0.2, 4);
    }

    #[test]
    fn size_mismatch_is_an_error() {
        assert!(photometric_loss(&[[0.0; 3]; 4], &[[0.0; 3]; 5], 2, 2, 0.2).is_err());
    }
}
