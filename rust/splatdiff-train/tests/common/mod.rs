//! A small synthetic scene for training tests: ground-truth images rendered
//! by the CPU reference from a known set of splats.
#![allow(dead_code)]

use glam::Vec3;
use splatdiff_render::gpu::GpuContext;
use splatdiff_render::{reference, Splats, View};
use splatdiff_scene::{Camera, Intrinsics};
use splatdiff_train::init;
use splatdiff_train::rng::Rng;
use splatdiff_train::trainer::TrainConfig;
use splatdiff_train::TrainImage;

pub const SIZE: u32 = 48;

/// The GPU context, or `None` after printing why the test is skipped.
pub fn gpu() -> Option<GpuContext> {
    match GpuContext::new() {
        Ok(ctx) => Some(ctx),
        Err(e) => {
            println!("skipping: no GPU adapter ({e})");
            None
        }
    }
}

/// `count` coloured, fairly opaque splats inside a ball of radius 0.6.
pub fn ground_truth(count: usize, seed: u64) -> Splats {
    let mut rng = Rng::new(seed);
    let mut s = Splats::default();
    while s.len() < count {
        let p = Vec3::new(rng.uniform_f32(), rng.uniform_f32(), rng.uniform_f32()) * 1.2 - 0.6;
        if p.length() > 0.6 {
            continue;
        }
        s.means.push(p.to_array());
        let base = (0.06 + 0.06 * rng.uniform_f32()).ln();
        s.log_scales.push([base + 0.3 * rng.normal(), base + 0.3 * rng.normal(), base + 0.3 * rng.normal()]);
        let q = [rng.normal(), rng.normal(), rng.normal(), rng.normal()];
        s.quats.push(q);
        s.opacity_logits.push(init::logit(0.6 + 0.35 * rng.uniform_f32()));
        s.sh.extend((0..3).map(|_| (rng.uniform_f32() - 0.5) / 0.2821));
    }
    s
}

/// `count` cameras at distance 3 around the origin, at several heights.
pub fn cameras(count: usize) -> Vec<Camera> {
    let k = Intrinsics::from_fov_x(0.75, SIZE, SIZE);
    (0..count)
        .map(|i| {
            let a = i as f32 / count as f32 * std::f32::consts::TAU;
            let z = [-1.2, 0.4, 1.5, -0.3][i % 4];
            let eye = Vec3::new(a.cos() * 2.8, a.sin() * 2.8, z);
            Camera::look_at(eye, Vec3::ZERO, k)
        })
        .collect()
}

/// The ground truth seen by each camera, with straight alpha.
pub fn images(truth: &Splats, cameras: &[Camera]) -> Vec<TrainImage> {
    cameras
        .iter()
        .enumerate()
        .map(|(i, &camera)| {
            let view = View { camera, active_sh_degree: truth.sh_degree, background: Vec3::ZERO };
            let (img, _) = reference::render(truth, &view).unwrap();
            let rgba = img
                .color
                .iter()
                .zip(&img.alpha)
                .map(
                    |(c, &a)| {
                        if a > 1e-6 {
                            [c[0] / a, c[1] / a, c[2] / a, a].map(|v| v.clamp(0.0, 1.0))
                        } else {
                            [0.0; 4]
                        }
                    },
                )
                .collect();
            TrainImage { camera, rgba, width: SIZE, height: SIZE, name: format!("view{i}") }
        })
        .collect()
}

/// Settings for a short run on the small scene.
pub fn config(steps: u64) -> TrainConfig {
    let mut c = TrainConfig { steps, max_splats: 600, sh_degree: 1, seed: 3, ..Default::default() };
    c.mcmc.refine_start = 50;
    c.mcmc.refine_every = 25;
    c.mcmc.noise_every = 5;
    c
}

/// Random initial splats in the box around the scene.
pub fn initial(count: usize) -> Splats {
    init::random(Vec3::splat(-1.0), Vec3::splat(1.0), count, 11)
}
