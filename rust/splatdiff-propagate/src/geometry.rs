//! What the capture knows about every frame (camera, depth, normals, mask),
//! and reprojection of a frame's pixels into another frame through it.
//!
//! A target pixel with depth is unprojected to the world point it shows,
//! projected into the keyframe's camera, and accepted only if the keyframe
//! sees that point: it falls inside the keyframe's image and object mask,
//! and the keyframe's own depth there agrees with the point's depth (the
//! occlusion test). Conventions are those of `splatdiff_scene::camera`:
//! pixel centres at +0.5, depth in metres along the view axis, 0 = nothing.

use glam::{Vec2, Vec3};
use rayon::prelude::*;
use splatdiff_scene::Camera;

/// The geometry of one frame.
#[derive(Clone, Debug)]
pub struct FrameGeometry {
    pub camera: Camera,
    pub width: usize,
    pub height: usize,
    /// Depth along the view axis per pixel; 0 (or not finite) where the
    /// object is absent. `None` when the capture has no depth.
    pub depth: Option<Vec<f32>>,
    /// World-space unit normals per pixel, when known.
    pub normals: Option<Vec<Vec3>>,
    /// Object coverage per pixel (1 = object).
    pub mask: Vec<f32>,
}

/// Where a target pixel lies in a keyframe, and how well the keyframe sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reprojection {
    /// Continuous pixel position in the keyframe.
    pub position: Vec2,
    /// Cosine between the surface normal and the direction to the
    /// keyframe's camera (1 when normals are unknown): how frontally the
    /// keyframe sees the surface.
    pub facing: f32,
    /// Cosine between the directions from the surface point to the two
    /// cameras: how alike the two views are (view-dependent shading).
    pub view_agreement: f32,
}

/// Relative depth difference below which a keyframe is taken to see the
/// reprojected point (1.5% of its depth).
pub const OCCLUSION_TOLERANCE: f32 = 0.015;

impl FrameGeometry {
    fn depth_at(&self, x: usize, y: usize) -> Option<f32> {
        let d = self.depth.as_ref()?[y * self.width + x];
        (d.is_finite() && d > 0.0 && self.mask[y * self.width + x] > 0.5).then_some(d)
    }

    /// The world point seen at pixel (x, y), if the object is there.
    pub fn world_point(&self, x: usize, y: usize) -> Option<Vec3> {
        let d = self.depth_at(x, y)?;
        Some(self.camera.unproject(Vec2::new(x as f32 + 0.5, y as f32 + 0.5), d))
    }

    /// Whether this frame sees world point `p`, and where: the projection
    /// must land on an object pixel whose depth agrees with the point's
    /// depth (nearest pixel or the bilinear depth of the object pixels
    /// around it, within [`OCCLUSION_TOLERANCE`]).
    pub fn sees(&self, p: Vec3) -> Option<(Vec2, f32)> {
        let (uv, z) = self.camera.project(p)?;
        if !(uv.x >= 0.0 && uv.y >= 0.0 && uv.x < self.width as f32 && uv.y < self.height as f32) {
            return None;
        }
        let tol = OCCLUSION_TOLERANCE * z;
        let (nx, ny) = (uv.x as usize, uv.y as usize);
        if let Some(d) = self.depth_at(nx, ny) {
            if (d - z).abs() <= tol {
                return Some((uv, z));
            }
        }
        // Bilinear depth over the object pixels of the 2x2 footprint.
        let fx = (uv.x - 0.5).max(0.0);
        let fy = (uv.y - 0.5).max(0.0);
        let (x0, y0) = (fx as usize, fy as usize);
        let (tx, ty) = (fx - x0 as f32, fy - y0 as f32);
        let mut sum = 0.0;
        let mut wsum = 0.0;
        for (dx, dy, w) in
            [(0, 0, (1.0 - tx) * (1.0 - ty)), (1, 0, tx * (1.0 - ty)), (0, 1, (1.0 - tx) * ty), (1, 1, tx * ty)]
        {
            let (x, y) = ((x0 + dx).min(self.width - 1), (y0 + dy).min(self.height - 1));
            if let Some(d) = self.depth_at(x, y) {
                sum += w * d;
                wsum += w;
            }
        }
        (wsum > 0.25 && (sum / wsum - z).abs() <= tol).then_some((uv, z))
    }

    /// The reprojection of target pixel (x, y) into `key`, when `key` sees it.
    pub fn reproject(&self, key: &FrameGeometry, x: usize, y: usize) -> Option<Reprojection> {
        let p = self.world_point(x, y)?;
        let (position, _) = key.sees(p)?;
        let to_key = (key.camera.position() - p).normalize_or_zero();
        let to_self = (self.camera.position() - p).normalize_or_zero();
        let facing = match &self.normals {
            Some(n) => n[y * self.width + x].dot(to_key).max(0.0),
            None => 1.0,
        };
        Some(Reprojection { position, facing, view_agreement: to_key.dot(to_self).max(0.0) })
    }

    /// [`FrameGeometry::reproject`] for every pixel, row-parallel.
    pub fn reproject_all(&self, key: &FrameGeometry) -> Vec<Option<Reprojection>> {
        (0..self.width * self.height)
            .into_par_iter()
            .map(|i| self.reproject(key, i % self.width, i / self.width))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use splatdiff_scene::Intrinsics;

    /// A camera on the +X axis and one on the +Y axis, both looking at the
    /// origin, 4 m away, 64x64 pixels, 90° field of view.
    fn cameras() -> (Camera, Camera) {
        let k = Intrinsics::from_fov_x(std::f32::consts::FRAC_PI_2, 64, 64);
        (
            Camera::look_at(Vec3::new(4.0, 0.0, 0.0), Vec3::ZERO, k),
            Camera::look_at(Vec3::new(0.0, 4.0, 0.0), Vec3::ZERO, k),
        )
    }

    fn plane_frame(camera: Camera, depth: f32) -> FrameGeometry {
        FrameGeometry {
            camera,
            width: 64,
            height: 64,
            depth: Some(vec![depth; 64 * 64]),
            normals: None,
            mask: vec![1.0; 64 * 64],
        }
    }

    #[test]
    fn centre_pixel_reprojects_through_hand_computed_point() {
        // Camera A at (4,0,0) looks down -X: its right is world +Y, its up +Z,
        // fx = 32, cx = cy = 32. Pixel (31,31) has its centre at (31.5,31.5):
        // camera-space x = -0.5/32*4 = -0.0625, y = +0.0625, on the wall x = 0
        // at depth 4. So the world point is (0, -0.0625, 0.0625).
        let (a, b) = cameras();
        let fa = plane_frame(a, 4.0);
        let p = fa.world_point(31, 31).unwrap();
        assert!((p - Vec3::new(0.0, -0.0625, 0.0625)).length() < 1e-5, "{p}");
        // Camera B at (0,4,0) looks down -Y: right is world -X, up +Z. The
        // point is 4.0625 m in front of it, 0 right, 0.0625 up:
        // u = 32, v = 32 - 32*0.0625/4.0625.
        let fb = plane_frame(b, 4.0625);
        let r = fa.reproject(&fb, 31, 31).unwrap();
        assert!((r.position.x - 32.0).abs() < 1e-4, "{:?}", r.position);
        assert!((r.position.y - (32.0 - 32.0 * 0.0625 / 4.0625)).abs() < 1e-4, "{:?}", r.position);
        // Directions to the cameras are 90° apart.
        assert!(r.view_agreement < 0.05);
    }

    #[test]
    fn occluded_points_are_rejected() {
        let (a, b) = cameras();
        let fa = plane_frame(a, 4.0);
        // Camera B's depth says something is 1 m in front of the point.
        let fb = plane_frame(b, 3.0625);
        assert!(fa.reproject(&fb, 31, 31).is_none());
        // Outside B's mask: not seen either.
        let mut fb = plane_frame(b, 4.0625);
        fb.mask = vec![0.0; 64 * 64];
        assert!(fa.reproject(&fb, 31, 31).is_none());
    }

    #[test]
    fn identical_frames_reproject_to_pixel_centres() {
        let (a, _) = cameras();
        let f = plane_frame(a, 4.0);
        let all = f.reproject_all(&f);
        for (i, r) in all.iter().enumerate() {
            let r = r.unwrap();
            assert!((r.position - Vec2::new((i % 64) as f32 + 0.5, (i / 64) as f32 + 0.5)).length() < 1e-3);
            assert!((r.view_agreement - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn nan_depth_and_missing_depth_give_no_point() {
        let (a, _) = cameras();
        let mut f = plane_frame(a, 4.0);
        f.depth.as_mut().unwrap()[0] = f32::NAN;
        assert!(f.world_point(0, 0).is_none());
        f.depth = None;
        assert!(f.world_point(5, 5).is_none());
    }
}
