//! Initial splats and the scene's scale.
//!
//! 3DGS starts either from a structure-from-motion point cloud or, for
//! synthetic scenes, from random points in a box; [`random`] and
//! [`from_points`] make those. [`scene_extent`] is 3DGS's
//! `cameras_extent`, which scales the position learning rate so it does
//! not depend on the scene's units.

use glam::Vec3;
use splatdiff_render::Splats;
use splatdiff_scene::{Camera, GaussianSplats};

use crate::error::{Result, TrainError};
use crate::rng::Rng;

/// Opacity of new splats, as 3DGS initialises them.
pub const INITIAL_OPACITY: f32 = 0.1;

/// `logit(p)`.
pub fn logit(p: f32) -> f32 {
    (p / (1.0 - p)).ln()
}

/// `count` splats uniformly distributed in the box, grey (SH DC 0, so colour
/// 0.5), round, opacity [`INITIAL_OPACITY`], SH degree 0. Their size is the
/// mean distance to the three nearest neighbours that 3DGS would compute,
/// which for uniform points is about `0.72·cbrt(volume / count)`.
pub fn random(bounds_min: Vec3, bounds_max: Vec3, count: usize, seed: u64) -> Splats {
    let mut rng = Rng::new(seed);
    let size = (bounds_max - bounds_min).max(Vec3::ZERO);
    let volume = (size.x * size.y * size.z).max(1e-12);
    let spacing = 0.72 * (volume / count.max(1) as f32).cbrt();
    let mut s = Splats { sh_degree: 0, ..Default::default() };
    for _ in 0..count {
        let u = Vec3::new(rng.uniform_f32(), rng.uniform_f32(), rng.uniform_f32());
        s.means.push((bounds_min + u * size).to_array());
        s.log_scales.push([spacing.max(1e-7).ln(); 3]);
        s.quats.push([1.0, 0.0, 0.0, 0.0]);
        s.opacity_logits.push(logit(INITIAL_OPACITY));
        s.sh.extend([0.0; 3]);
    }
    s
}

/// Splats from a point cloud in the 3DGS `.ply` layout (such as the
/// pipeline's `points.ply`); errors on inconsistent or non-finite values.
pub fn from_points(points: &GaussianSplats) -> Result<Splats> {
    points.validate().map_err(|p| TrainError::invalid(format!("initial points: {p}")))?;
    let splats = Splats::from_gaussians(points);
    if let Some(p) = splats.problem() {
        return Err(TrainError::invalid(format!("initial points: {p}")));
    }
    if splats.is_empty() {
        return Err(TrainError::invalid("initial points: the point cloud is empty"));
    }
    Ok(splats)
}

/// The same splats with SH storage degree `degree`: extra coefficients are
/// zero, dropped ones are discarded.
pub fn with_sh_degree(s: &Splats, degree: u32) -> Splats {
    let (from, to) = (s.coeffs(), splatdiff_render::sh_coeffs(degree));
    let mut sh = Vec::with_capacity(s.len() * to * 3);
    for i in 0..s.len() {
        let row = &s.sh[i * from * 3..(i + 1) * from * 3];
        let keep = from.min(to) * 3;
        sh.extend_from_slice(&row[..keep]);
        sh.extend(std::iter::repeat_n(0.0, (to * 3).saturating_sub(keep)));
    }
    Splats { sh, sh_degree: degree, ..s.clone() }
}

/// 3DGS's scene extent: 1.1 × the largest distance of a camera centre from
/// the cameras' mean centre (at least a small positive value).
pub fn scene_extent(cameras: &[Camera]) -> f32 {
    if cameras.is_empty() {
        return 1.0;
    }
    let centre = cameras.iter().map(Camera::position).sum::<Vec3>() / cameras.len() as f32;
    let radius = cameras.iter().map(|c| c.position().distance(centre)).fold(0.0f32, f32::max);
    (radius * 1.1).max(1e-6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_splats_fill_the_box() {
        let s = random(Vec3::splat(-1.0), Vec3::splat(1.0), 1000, 3);
        assert_eq!(s.len(), 1000);
        assert!(s.problem().is_none());
        assert!(s.means.iter().flatten().all(|v| (-1.0..=1.0).contains(v)));
        assert!((s.log_scales[0][0].exp() - 0.72 * 0.2).abs() < 1e-4);
        let padded = with_sh_degree(&s, 3);
        assert_eq!(padded.sh.len(), 1000 * 48);
        assert!(padded.problem().is_none());
        assert_eq!(with_sh_degree(&padded, 0), s);
    }

    #[test]
    fn extent_of_cameras_on_a_sphere() {
        let k = splatdiff_scene::Intrinsics::from_fov_x(0.7, 10, 10);
        let cams: Vec<_> =
            [Vec3::X, -Vec3::X, Vec3::Y, -Vec3::Y].iter().map(|&p| Camera::look_at(p * 4.0, Vec3::ZERO, k)).collect();
        assert!((scene_extent(&cams) - 4.4).abs() < 1e-4);
    }
}
