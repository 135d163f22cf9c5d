//! The run's consistency and quality metrics, all measured inside the
//! capture's object mask through its depth and cameras:
//!
//! * photometric reprojection error between views (lower = more
//!   consistent), for restyled keyframes, propagated frames and splat renders;
//! * refit quality: the splats against held-out propagated frames;
//! * change from the original: against the capture's own renders.

use rayon::prelude::*;
use serde::Serialize;
use splatdiff_propagate::geometry::FrameGeometry;
use splatdiff_propagate::image::Image;
use splatdiff_propagate::metrics::{psnr_masked, ssim_masked, warp_error};

/// Every pair of keyframes (the error counts only pixels both see).
pub fn keyframe_pairs(n: usize) -> Vec<(usize, usize)> {
    (0..n).flat_map(|a| (a + 1..n).map(move |b| (a, b))).collect()
}

/// Neighbouring frames of a turntable, the last one next to the first.
pub fn neighbour_pairs(n: usize) -> Vec<(usize, usize)> {
    match n {
        0 | 1 => vec![],
        2 => vec![(0, 1)],
        _ => (0..n).map(|i| (i, (i + 1) % n)).collect(),
    }
}

/// Mean photometric reprojection error over `pairs` of views, weighted by
/// the pixels each pair shares; `None` when no pair shares a pixel.
pub fn reprojection_error(geoms: &[&FrameGeometry], images: &[&Image], pairs: &[(usize, usize)]) -> Option<f64> {
    let (sum, count) = pairs
        .par_iter()
        .map(|&(a, b)| {
            let (e, n) = warp_error(geoms[a], images[a], geoms[b], images[b]);
            if n == 0 || !e.is_finite() {
                (0.0, 0)
            } else {
                (e * n as f64, n)
            }
        })
        .reduce(|| (0.0, 0), |x, y| (x.0 + y.0, x.1 + y.1));
    (count > 0).then(|| sum / count as f64)
}

/// Mean masked PSNR and SSIM of `a` against `b`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Similarity {
    pub psnr: f64,
    pub ssim: f64,
}

/// Mean PSNR/SSIM of `a[i]` against `b[i]` inside `masks[i]`, over the
/// frames whose mask is not empty.
pub fn similarity(a: &[&Image], b: &[&Image], masks: &[&[f32]]) -> Option<Similarity> {
    let scores: Vec<(f64, f64)> = (0..a.len())
        .into_par_iter()
        .filter(|&i| masks[i].iter().any(|m| *m > 0.5))
        .map(|i| (psnr_masked(a[i], b[i], masks[i]), ssim_masked(a[i], b[i], masks[i])))
        .filter(|(p, s)| p.is_finite() && s.is_finite())
        .collect();
    if scores.is_empty() {
        return None;
    }
    let n = scores.len() as f64;
    Some(Similarity {
        psnr: scores.iter().map(|s| s.0).sum::<f64>() / n,
        ssim: scores.iter().map(|s| s.1).sum::<f64>() / n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_cover_what_they_say() {
        assert_eq!(keyframe_pairs(3), [(0, 1), (0, 2), (1, 2)]);
        assert_eq!(neighbour_pairs(3), [(0, 1), (1, 2), (2, 0)]);
        assert!(neighbour_pairs(1).is_empty());
    }
}
