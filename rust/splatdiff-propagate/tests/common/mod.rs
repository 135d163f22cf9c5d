//! A small synthetic turntable with exact ground truth: a sphere with a
//! "nose" (a smaller sphere that occludes part of it from some views),
//! rasterized by splatdiff-scene into depth/normal/mask passes, and coloured
//! by two procedural materials that are functions of the world position:
//! `A` plays the capture's render, `B` the restyled look to propagate.

#![allow(dead_code)]

use glam::Vec3;
use splatdiff_propagate::geometry::FrameGeometry;
use splatdiff_propagate::image::Image;
use splatdiff_propagate::propagate::{FrameInput, Keyframe};
use splatdiff_scene::raster::{rasterize, TriangleMesh};
use splatdiff_scene::{Camera, Intrinsics};

fn sphere(centre: Vec3, radius: f32, rings: u32, segments: u32, mesh: &mut TriangleMesh) {
    let base = mesh.positions.len() as u32;
    for r in 0..=rings {
        let theta = std::f32::consts::PI * r as f32 / rings as f32;
        for s in 0..segments {
            let phi = 2.0 * std::f32::consts::PI * s as f32 / segments as f32;
            let n = Vec3::new(theta.sin() * phi.cos(), theta.sin() * phi.sin(), theta.cos());
            mesh.positions.push(centre + radius * n);
        }
    }
    for r in 0..rings {
        for s in 0..segments {
            let a = base + r * segments + s;
            let b = base + r * segments + (s + 1) % segments;
            let c = a + segments;
            let d = b + segments;
            for tri in [[a, c, b], [b, c, d]] {
                let n = tri.map(|i| (mesh.positions[i as usize] - centre).normalize());
                mesh.triangles.push(tri);
                mesh.corner_normals.push(n);
            }
        }
    }
}

/// The object: unit sphere with a 0.35 sphere sticking out along +X.
pub fn object() -> TriangleMesh {
    let mut mesh = TriangleMesh::default();
    sphere(Vec3::ZERO, 1.0, 32, 64, &mut mesh);
    sphere(Vec3::new(1.05, 0.0, 0.1), 0.35, 16, 32, &mut mesh);
    mesh
}

/// The capture's look: smooth colour varying over the surface.
pub fn material_a(p: Vec3) -> [f32; 3] {
    [0.5 + 0.3 * (2.0 * p.x).sin(), 0.5 + 0.3 * (2.5 * p.y + 1.0).sin(), 0.5 + 0.3 * (3.0 * p.z).cos()]
}

/// The "restyled" look: stripes and a colour gradient, with detail.
pub fn material_b(p: Vec3) -> [f32; 3] {
    let stripes = 0.5 + 0.5 * (7.0 * p.z + 3.0 * p.x).sin();
    let spots = 0.5 + 0.5 * (5.0 * p.x).sin() * (5.0 * p.y).sin();
    [0.2 + 0.6 * stripes, 0.15 + 0.7 * spots, 0.6 - 0.4 * stripes * spots]
}

pub struct Turntable {
    pub frames: Vec<FrameInput>,
    /// Ground truth of the restyled look, per frame (RGBA).
    pub truth: Vec<Image>,
}

/// `n` views around the object at 15° elevation, `size`x`size` pixels.
pub fn turntable(n: usize, size: u32) -> Turntable {
    let mesh = object();
    let k = Intrinsics::from_fov_x(40f32.to_radians(), size, size);
    let mut frames = Vec::new();
    let mut truth = Vec::new();
    for i in 0..n {
        let az = 2.0 * std::f32::consts::PI * i as f32 / n as f32;
        let el = 15f32.to_radians();
        let eye = 4.5 * Vec3::new(el.cos() * az.cos(), el.cos() * az.sin(), el.sin());
        let camera = Camera::look_at(eye, Vec3::ZERO, k);
        let passes = rasterize(&mesh, &camera);
        let (w, h) = (size as usize, size as usize);
        let geometry = FrameGeometry {
            camera,
            width: w,
            height: h,
            depth: Some(passes.depth.clone()),
            normals: Some(passes.normal.iter().map(|n| Vec3::from_array(*n)).collect()),
            mask: passes.mask.iter().map(|&m| m as f32 / 255.0).collect(),
        };
        let mut a = Image::new(w, h, 4);
        let mut b = Image::new(w, h, 4);
        for y in 0..h {
            for x in 0..w {
                if let Some(p) = geometry.world_point(x, y) {
                    let (ca, cb) = (material_a(p), material_b(p));
                    a.pixel_mut(x, y).copy_from_slice(&[ca[0], ca[1], ca[2], 1.0]);
                    b.pixel_mut(x, y).copy_from_slice(&[cb[0], cb[1], cb[2], 1.0]);
                }
            }
        }
        frames.push(FrameInput { geometry, render: a });
        truth.push(b);
    }
    Turntable { frames, truth }
}

/// Keyframes at `indices`, taken from the ground truth.
pub fn keys_from_truth(t: &Turntable, indices: &[usize]) -> Vec<Keyframe> {
    indices.iter().map(|&i| Keyframe { index: i, image: t.truth[i].clone() }).collect()
}

/// Writes the turntable as a capture folder (transforms.json, images/,
/// depth/, mask/) the way the Blender capture does, and the ground truth
/// at `keys` into `keys_dir`, named like the frames.
pub fn write_capture(t: &Turntable, dir: &std::path::Path, keys_dir: &std::path::Path, keys: &[usize]) {
    use splatdiff_scene::maps::{write_depth_exr, write_mask_png};
    use splatdiff_scene::transforms::{write_transforms, Dataset, Frame};
    use splatdiff_scene::FloatMap;
    for sub in ["images", "depth", "mask"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::create_dir_all(keys_dir).unwrap();
    let mut dataset = Dataset { root: dir.to_path_buf(), ..Default::default() };
    for (i, f) in t.frames.iter().enumerate() {
        let name = format!("r_{i:03}");
        let g = &f.geometry;
        let image_path = dir.join("images").join(format!("{name}.png"));
        f.render.write_png(&image_path).unwrap();
        let depth_path = dir.join("depth").join(format!("{name}.exr"));
        let depth =
            FloatMap { width: g.width as u32, height: g.height as u32, channels: 1, data: g.depth.clone().unwrap() };
        write_depth_exr(&depth_path, &depth).unwrap();
        let mask_path = dir.join("mask").join(format!("{name}.png"));
        let mask: Vec<u8> = g.mask.iter().map(|m| (m * 255.0) as u8).collect();
        write_mask_png(&mask_path, g.width as u32, g.height as u32, &mask).unwrap();
        if keys.contains(&i) {
            t.truth[i].write_png(&keys_dir.join(format!("{name}.png"))).unwrap();
        }
        dataset.frames.push(Frame {
            name: name.clone(),
            file_path: format!("images/{name}.png"),
            image_path,
            camera: g.camera,
            depth_path: Some(depth_path),
            normal_path: None,
            mask_path: Some(mask_path),
        });
    }
    write_transforms(&dir.join("transforms.json"), &dataset).unwrap();
}
