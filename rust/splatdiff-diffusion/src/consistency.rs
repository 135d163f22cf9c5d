//! How consistent restyled keyframes are with each other, measured through
//! the scene's known geometry: the photometric reprojection error.
//!
//! For a pair of keyframes (i, j), every pixel of i that sees a surface
//! (depth > 0, inside i's mask if one is given) is lifted to the world with
//! its depth and camera, projected into j, and kept only if j sees the same
//! surface there: the projected depth must agree with j's depth at that
//! pixel within a relative tolerance (otherwise the point is occluded in j,
//! or off j's surface). The error is the mean absolute RGB difference over
//! the kept pixels, in [0, 1] (1 = black against white); the number of kept
//! pixels says how much of the pair overlaps. Lower is more consistent: this
//! is how the benchmark compares per-frame img2img, grid mode and
//! cross-frame attention.

use glam::Vec2;
use image::RgbImage;
use serde::{Deserialize, Serialize};
use splatdiff_scene::{Camera, FloatMap};

use crate::error::{DiffusionError, Result};

/// Default relative depth tolerance of the occlusion test (2 %).
pub const DEFAULT_DEPTH_TOLERANCE: f32 = 0.02;

/// One keyframe as the consistency measure sees it.
#[derive(Debug, Clone, Copy)]
pub struct KeyframeView<'a> {
    /// The (restyled) colour image.
    pub image: &'a RgbImage,
    /// Depth in metres along the view axis, one channel, same size as
    /// `image`; 0 where nothing was hit.
    pub depth: &'a FloatMap,
    /// The camera; its intrinsics are rescaled to the image size if they
    /// were given for another resolution.
    pub camera: &'a Camera,
    /// Optional mask (same size, row-major, nonzero = measured): only these
    /// pixels of this keyframe are reprojected into the others.
    pub mask: Option<&'a [u8]>,
}

/// The reprojection error of keyframe `from` seen from keyframe `to`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PairError {
    pub from: usize,
    pub to: usize,
    /// Mean absolute RGB difference over the valid pixels, in [0, 1]; 0 when
    /// there are none.
    pub mean_abs_error: f64,
    /// Pixels of `from` that land on the same surface in `to`.
    pub valid_pixels: usize,
}

/// The errors of every measured pair and their pixel-weighted mean.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsistencyReport {
    pub pairs: Vec<PairError>,
    /// Mean absolute RGB error over all valid pixels of all pairs.
    pub mean_abs_error: f64,
    pub valid_pixels: usize,
}

/// Every ordered pair (i, j), i != j, of `n` keyframes.
pub fn all_pairs(n: usize) -> Vec<(usize, usize)> {
    (0..n).flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j))).collect()
}

/// The photometric reprojection error of `pairs` of `views` (see the module
/// docs) with relative depth tolerance `tolerance` (e.g.
/// [`DEFAULT_DEPTH_TOLERANCE`]).
pub fn reprojection_error(
    views: &[KeyframeView],
    pairs: &[(usize, usize)],
    tolerance: f32,
) -> Result<ConsistencyReport> {
    for (k, v) in views.iter().enumerate() {
        check_view(k, v)?;
    }
    if tolerance.is_nan() || tolerance < 0.0 {
        return Err(DiffusionError::Invalid(format!("depth tolerance {tolerance} must be >= 0")));
    }
    let mut out = Vec::with_capacity(pairs.len());
    for &(i, j) in pairs {
        if i >= views.len() || j >= views.len() {
            return Err(DiffusionError::Invalid(format!(
                "keyframe pair ({i}, {j}) out of range: there are {} keyframes",
                views.len()
            )));
        }
        out.push(pair_error(i, &views[i], j, &views[j], tolerance));
    }
    let valid_pixels: usize = out.iter().map(|p| p.valid_pixels).sum();
    let total: f64 = out.iter().map(|p| p.mean_abs_error * p.valid_pixels as f64).sum();
    let mean_abs_error = if valid_pixels > 0 { total / valid_pixels as f64 } else { 0.0 };
    Ok(ConsistencyReport { pairs: out, mean_abs_error, valid_pixels })
}

fn check_view(k: usize, v: &KeyframeView) -> Result<()> {
    let (w, h) = v.image.dimensions();
    let bad = |m: String| Err(DiffusionError::Invalid(format!("keyframe {k}: {m}")));
    if v.depth.channels != 1 || v.depth.data.len() != (v.depth.width * v.depth.height) as usize {
        return bad(format!("depth map must have one channel, has {}", v.depth.channels));
    }
    if (v.depth.width, v.depth.height) != (w, h) {
        return bad(format!("depth map is {}x{} but the image is {w}x{h}", v.depth.width, v.depth.height));
    }
    if let Some(m) = v.mask {
        if m.len() != (w * h) as usize {
            return bad(format!("mask has {} pixels, the image {}", m.len(), w * h));
        }
    }
    if let Some(p) = v.camera.intrinsics.problem() {
        return bad(format!("camera: {p}"));
    }
    Ok(())
}

/// The camera with intrinsics for the view's image size.
fn camera_at_size(v: &KeyframeView) -> Camera {
    let (w, h) = v.image.dimensions();
    let mut cam = *v.camera;
    if (cam.intrinsics.width, cam.intrinsics.height) != (w, h) {
        cam.intrinsics = cam.intrinsics.scaled(w, h);
    }
    cam
}

fn pair_error(i: usize, a: &KeyframeView, j: usize, b: &KeyframeView, tolerance: f32) -> PairError {
    let (cam_a, cam_b) = (camera_at_size(a), camera_at_size(b));
    let b_from_world = cam_b.world_to_camera();
    let (wa, ha) = a.image.dimensions();
    let (wb, hb) = b.image.dimensions();
    let mut sum = 0f64;
    let mut count = 0usize;
    for y in 0..ha {
        for x in 0..wa {
            let idx = (y * wa + x) as usize;
            let d = a.depth.data[idx];
            if !(d.is_finite() && d > 0.0) || a.mask.is_some_and(|m| m[idx] == 0) {
                continue;
            }
            let world = cam_a.unproject(Vec2::new(x as f32 + 0.5, y as f32 + 0.5), d);
            let Some((p, depth_in_b)) = cam_b.project_camera_space(b_from_world.transform_point3(world)) else {
                continue;
            };
            let (u, v) = (p.x.floor(), p.y.floor());
            if u < 0.0 || v < 0.0 || u >= wb as f32 || v >= hb as f32 {
                continue;
            }
            let (u, v) = (u as u32, v as u32);
            let db = b.depth.data[(v * wb + u) as usize];
            if !(db.is_finite() && db > 0.0) || (depth_in_b - db).abs() > tolerance * db {
                continue;
            }
            let (ca, cb) = (a.image.get_pixel(x, y), b.image.get_pixel(u, v));
            let diff: f64 = (0..3).map(|c| (ca[c] as f64 - cb[c] as f64).abs()).sum();
            sum += diff / (3.0 * 255.0);
            count += 1;
        }
    }
    PairError { from: i, to: j, mean_abs_error: if count > 0 { sum / count as f64 } else { 0.0 }, valid_pixels: count }
}

#[cfg(test)]
mod tests {
    use glam::{Mat4, Vec3};
    use image::Rgb;
    use splatdiff_scene::Intrinsics;

    use super::*;

    const W: u32 = 8;
    const H: u32 = 4;

    fn intr() -> Intrinsics {
        Intrinsics { fx: 4.0, fy: 4.0, cx: 4.0, cy: 2.0, width: W, height: H }
    }

    /// Two cameras looking down -Z at a wall at z = -2; the second is moved
    /// 1 m along +X, so a wall point seen at column x in the first is at
    /// u = x + 0.5 - 2 in the second: a shift of two columns.
    fn setup() -> (Camera, Camera, FloatMap) {
        let a = Camera::new(Mat4::IDENTITY, intr());
        let b = Camera::new(Mat4::from_translation(Vec3::new(1.0, 0.0, 0.0)), intr());
        let depth = FloatMap { width: W, height: H, channels: 1, data: vec![2.0; (W * H) as usize] };
        (a, b, depth)
    }

    /// Colour that depends on the wall column only (x in camera a's pixels).
    fn wall_image(shift: u32, offset: u8) -> RgbImage {
        RgbImage::from_fn(W, H, |x, _| {
            let v = 10 * (x + shift) as u8 + offset;
            Rgb([v, v, v])
        })
    }

    #[test]
    fn matching_colours_give_zero_error_over_the_overlap() {
        let (a, b, depth) = setup();
        let (ia, ib) = (wall_image(0, 0), wall_image(2, 0));
        let views = [
            KeyframeView { image: &ia, depth: &depth, camera: &a, mask: None },
            KeyframeView { image: &ib, depth: &depth, camera: &b, mask: None },
        ];
        let r = reprojection_error(&views, &[(0, 1)], DEFAULT_DEPTH_TOLERANCE).unwrap();
        // Columns 0 and 1 of a fall left of b's image.
        assert_eq!(r.pairs[0].valid_pixels, 6 * 4);
        assert_eq!(r.pairs[0].mean_abs_error, 0.0);
        // Seen from b, b's columns 6 and 7 fall right of a's image.
        let r = reprojection_error(&views, &[(1, 0)], DEFAULT_DEPTH_TOLERANCE).unwrap();
        assert_eq!(r.pairs[0].valid_pixels, 6 * 4);
    }

    #[test]
    fn colour_offset_is_measured_exactly() {
        let (a, b, depth) = setup();
        let (ia, ib) = (wall_image(0, 0), wall_image(2, 12));
        let views = [
            KeyframeView { image: &ia, depth: &depth, camera: &a, mask: None },
            KeyframeView { image: &ib, depth: &depth, camera: &b, mask: None },
        ];
        let r = reprojection_error(&views, &all_pairs(2), DEFAULT_DEPTH_TOLERANCE).unwrap();
        assert_eq!(r.pairs.len(), 2);
        assert!((r.mean_abs_error - 12.0 / 255.0).abs() < 1e-12, "{r:?}");
        assert_eq!(r.valid_pixels, 48);
    }

    #[test]
    fn occluded_and_masked_pixels_are_skipped() {
        let (a, b, depth) = setup();
        // Something 1 m from b covers its column 3: wall column 5 of a is hidden there.
        let mut depth_b = depth.clone();
        for y in 0..H {
            depth_b.data[(y * W + 3) as usize] = 1.0;
        }
        let (ia, ib) = (wall_image(0, 0), wall_image(2, 0));
        // Mask out a's top row.
        let mask: Vec<u8> = (0..W * H).map(|i| if i < W { 0 } else { 1 }).collect();
        let views = [
            KeyframeView { image: &ia, depth: &depth, camera: &a, mask: Some(&mask) },
            KeyframeView { image: &ib, depth: &depth_b, camera: &b, mask: None },
        ];
        let r = reprojection_error(&views, &[(0, 1)], DEFAULT_DEPTH_TOLERANCE).unwrap();
        assert_eq!(r.pairs[0].valid_pixels, 5 * 3);
        assert_eq!(r.pairs[0].mean_abs_error, 0.0);
    }

    #[test]
    fn mismatched_sizes_are_errors() {
        let (a, _, depth) = setup();
        let small = RgbImage::new(4, 4);
        let views = [KeyframeView { image: &small, depth: &depth, camera: &a, mask: None }];
        let err = reprojection_error(&views, &[], 0.02).unwrap_err().to_string();
        assert!(err.contains("keyframe 0") && err.contains("8x4"), "{err}");
        let ia = wall_image(0, 0);
        let views = [KeyframeView { image: &ia, depth: &depth, camera: &a, mask: None }];
        assert!(reprojection_error(&views, &[(0, 1)], 0.02).is_err());
    }
}
