//! Camera model and the one place where coordinate conventions are defined.
//!
//! # Conventions
//!
//! * **World**: Blender's, right-handed, +Z up, metres.
//! * **Camera space**: Blender/OpenGL: +X right, +Y up, the camera looks down
//!   −Z. This is the convention of NeRF's `transforms.json`, whose
//!   `transform_matrix` is the camera-to-world matrix [`Camera::cam_to_world`].
//! * **Pixels**: +x right, +y down, origin at the top-left *corner* of the
//!   top-left pixel, so the centre of pixel `(i, j)` is `(i + 0.5, j + 0.5)`.
//! * **Intrinsics**: `fx`, `fy` are focal lengths in pixels, `cx`, `cy` the
//!   principal point in pixels (in the same pixel frame). A point at camera
//!   position `(x, y, z)`, `z < 0`, lands on `u = cx + fx·x/(−z)`,
//!   `v = cy − fy·y/(−z)`.
//! * **Depth**: metres along the view axis (`−z` in camera space), not the
//!   distance to the camera centre. Depth maps store it per pixel, with `0`
//!   where nothing was hit.
//!
//! The OpenCV/COLMAP camera (+Y down, looking down +Z) differs by a flip of
//! the Y and Z axes; [`Camera::world_to_camera_opencv`] gives that form for
//! code that wants it (3DGS rasterizers use it).

use glam::{Mat3, Mat4, Vec2, Vec3, Vec4Swizzles};
use serde::{Deserialize, Serialize};

/// Pinhole intrinsics in pixels, with the image size they belong to.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Intrinsics {
    pub fx: f32,
    pub fy: f32,
    pub cx: f32,
    pub cy: f32,
    pub width: u32,
    pub height: u32,
}

impl Intrinsics {
    /// Intrinsics of a centred pinhole with square pixels from its horizontal
    /// field of view, as NeRF's `camera_angle_x` defines it.
    pub fn from_fov_x(camera_angle_x: f32, width: u32, height: u32) -> Self {
        let f = 0.5 * width as f32 / (0.5 * camera_angle_x).tan();
        Self { fx: f, fy: f, cx: 0.5 * width as f32, cy: 0.5 * height as f32, width, height }
    }

    /// Horizontal field of view in radians.
    pub fn fov_x(&self) -> f32 {
        2.0 * (0.5 * self.width as f32 / self.fx).atan()
    }

    /// Vertical field of view in radians.
    pub fn fov_y(&self) -> f32 {
        2.0 * (0.5 * self.height as f32 / self.fy).atan()
    }

    /// The same camera at another resolution (for training at reduced size).
    pub fn scaled(&self, width: u32, height: u32) -> Self {
        let sx = width as f32 / self.width as f32;
        let sy = height as f32 / self.height as f32;
        Self { fx: self.fx * sx, fy: self.fy * sy, cx: self.cx * sx, cy: self.cy * sy, width, height }
    }

    /// Checks the values make a usable camera; `None` when they do, else why not.
    pub fn problem(&self) -> Option<String> {
        if self.width == 0 || self.height == 0 {
            return Some(format!("image size {}x{} is empty", self.width, self.height));
        }
        for (name, v) in [("fl_x", self.fx), ("fl_y", self.fy)] {
            if !(v.is_finite() && v > 0.0) {
                return Some(format!("focal length {name} = {v} must be a positive number"));
            }
        }
        for (name, v) in [("cx", self.cx), ("cy", self.cy)] {
            if !v.is_finite() {
                return Some(format!("principal point {name} = {v} is not a number"));
            }
        }
        None
    }
}

/// A posed pinhole camera.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Camera {
    /// Camera-to-world transform in the Blender/OpenGL camera convention.
    pub cam_to_world: Mat4,
    pub intrinsics: Intrinsics,
}

impl Camera {
    pub fn new(cam_to_world: Mat4, intrinsics: Intrinsics) -> Self {
        Self { cam_to_world, intrinsics }
    }

    /// A camera at `eye` looking at `target` with world +Z as up.
    pub fn look_at(eye: Vec3, target: Vec3, intrinsics: Intrinsics) -> Self {
        let forward = (target - eye).normalize();
        let mut right = forward.cross(Vec3::Z);
        if right.length_squared() < 1e-12 {
            right = Vec3::X; // looking straight up or down
        }
        let right = right.normalize();
        let up = right.cross(forward);
        let rot = Mat3::from_cols(right, up, -forward);
        Self::new(
            Mat4::from_cols(rot.x_axis.extend(0.0), rot.y_axis.extend(0.0), rot.z_axis.extend(0.0), eye.extend(1.0)),
            intrinsics,
        )
    }

    /// World-to-camera transform (Blender/OpenGL camera space).
    pub fn world_to_camera(&self) -> Mat4 {
        self.cam_to_world.inverse()
    }

    /// World-to-camera transform in the OpenCV convention (+Y down, +Z forward).
    pub fn world_to_camera_opencv(&self) -> Mat4 {
        Mat4::from_diagonal(glam::Vec4::new(1.0, -1.0, -1.0, 1.0)) * self.world_to_camera()
    }

    /// Camera centre in world space.
    pub fn position(&self) -> Vec3 {
        self.cam_to_world.w_axis.xyz()
    }

    /// Unit viewing direction (camera −Z) in world space.
    pub fn forward(&self) -> Vec3 {
        (-self.cam_to_world.z_axis.xyz()).normalize()
    }

    /// Projects a world point to pixel coordinates and its depth along the
    /// view axis. `None` for points on or behind the camera plane.
    pub fn project(&self, world: Vec3) -> Option<(Vec2, f32)> {
        let p = self.world_to_camera().transform_point3(world);
        self.project_camera_space(p)
    }

    /// Like [`Camera::project`] for a point already in camera space.
    pub fn project_camera_space(&self, p: Vec3) -> Option<(Vec2, f32)> {
        let depth = -p.z;
        if depth <= 1e-8 {
            return None;
        }
        let k = &self.intrinsics;
        Some((Vec2::new(k.cx + k.fx * p.x / depth, k.cy - k.fy * p.y / depth), depth))
    }

    /// The camera-space point at `pixel` whose depth along the view axis is `depth`.
    pub fn unproject_camera_space(&self, pixel: Vec2, depth: f32) -> Vec3 {
        let k = &self.intrinsics;
        Vec3::new((pixel.x - k.cx) / k.fx * depth, -(pixel.y - k.cy) / k.fy * depth, -depth)
    }

    /// The world point at `pixel` whose depth along the view axis is `depth`.
    pub fn unproject(&self, pixel: Vec2, depth: f32) -> Vec3 {
        self.cam_to_world.transform_point3(self.unproject_camera_space(pixel, depth))
    }

    /// Unit world-space direction of the ray through `pixel`.
    pub fn ray_direction(&self, pixel: Vec2) -> Vec3 {
        self.cam_to_world.transform_vector3(self.unproject_camera_space(pixel, 1.0)).normalize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intr() -> Intrinsics {
        Intrinsics { fx: 100.0, fy: 110.0, cx: 64.0, cy: 40.0, width: 128, height: 80 }
    }

    #[test]
    fn look_at_puts_target_on_the_principal_point() {
        let cam = Camera::look_at(Vec3::new(3.0, -4.0, 2.0), Vec3::new(0.5, 0.5, 0.5), intr());
        let (px, depth) = cam.project(Vec3::new(0.5, 0.5, 0.5)).unwrap();
        assert!((px - Vec2::new(64.0, 40.0)).length() < 1e-3, "{px}");
        let dist = (Vec3::new(3.0, -4.0, 2.0) - Vec3::splat(0.5)).length();
        assert!((depth - dist).abs() < 1e-4);
    }

    #[test]
    fn world_up_projects_upwards_in_the_image() {
        let cam = Camera::look_at(Vec3::new(0.0, -5.0, 0.0), Vec3::ZERO, intr());
        let (above, _) = cam.project(Vec3::new(0.0, 0.0, 1.0)).unwrap();
        let (right, _) = cam.project(Vec3::new(1.0, 0.0, 0.0)).unwrap();
        assert!(above.y < 40.0, "+Z should be above the centre: {above}");
        assert!(right.x > 64.0, "+X seen from -Y should be on the right: {right}");
    }

    #[test]
    fn unproject_inverts_project() {
        let cam = Camera::look_at(Vec3::new(1.0, 2.0, 3.0), Vec3::ZERO, intr());
        for p in [Vec3::new(0.1, 0.2, -0.3), Vec3::new(-0.5, 0.4, 0.0)] {
            let (px, d) = cam.project(p).unwrap();
            assert!((cam.unproject(px, d) - p).length() < 1e-4);
        }
        assert!(cam.project(Vec3::new(2.0, 4.0, 6.0)).is_none(), "behind the camera");
    }

    #[test]
    fn opencv_form_flips_y_and_z() {
        let cam = Camera::look_at(Vec3::new(0.0, -5.0, 0.0), Vec3::ZERO, intr());
        let p = cam.world_to_camera_opencv().transform_point3(Vec3::ZERO);
        assert!((p - Vec3::new(0.0, 0.0, 5.0)).length() < 1e-5, "{p}");
    }

    #[test]
    fn fov_round_trips() {
        let k = Intrinsics::from_fov_x(0.6911112, 800, 800);
        assert!((k.fov_x() - 0.6911112).abs() < 1e-6);
        assert!((k.fx - 1111.111).abs() < 0.01);
        assert!(Intrinsics { fx: f32::NAN, ..k }.problem().is_some());
    }
}
