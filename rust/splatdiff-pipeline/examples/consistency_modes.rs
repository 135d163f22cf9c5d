//! Compares the consistency modes by the photometric reprojection error
//! between restyled keyframes of a synthetic scene (a textured cube seen by
//! cameras on an arc), through its exact depth and cameras: the run's own
//! metric ([`splatdiff_pipeline::metrics`]).
//!
//! ```text
//! cargo run --release -p splatdiff-pipeline --example consistency_modes [MODEL] [STEPS]
//! ```
//! MODEL defaults to the tiny random-weight fixture model (numbers then
//! only show the harness works); give a real SD 1.5 folder or checkpoint
//! for meaningful figures.

use std::path::PathBuf;

use candle_core::Device;
use glam::Vec3;
use image::{Rgb, RgbImage};
use splatdiff_diffusion::controlnet::MultiControlNet;
use splatdiff_diffusion::model::{ModelOptions, StableDiffusion};
use splatdiff_diffusion::pipeline::{
    img2img, ConsistencyMode, DiffusionConfig, Keyframe, PromptEmbeddings, RunControl,
};
use splatdiff_diffusion::rng::NoiseRng;
use splatdiff_diffusion::scheduler::SchedulerKind;
use splatdiff_pipeline::metrics::{keyframe_pairs, reprojection_error};
use splatdiff_propagate::geometry::FrameGeometry;
use splatdiff_propagate::image::Image;
use splatdiff_scene::raster::{rasterize, TriangleMesh};
use splatdiff_scene::{Camera, Intrinsics};

const SIZE: u32 = 64;
const KEYFRAMES: usize = 4;

fn cube() -> TriangleMesh {
    let positions: Vec<Vec3> = (0..8)
        .map(|i| Vec3::new((i & 1) as f32 - 0.5, ((i >> 1) & 1) as f32 - 0.5, ((i >> 2) & 1) as f32 - 0.5))
        .collect();
    let quads = [[0, 2, 3, 1], [4, 5, 7, 6], [0, 1, 5, 4], [2, 6, 7, 3], [0, 4, 6, 2], [1, 3, 7, 5]];
    let triangles = quads.iter().flat_map(|q| [[q[0], q[1], q[2]], [q[0], q[2], q[3]]]).collect();
    TriangleMesh { positions, triangles, corner_normals: Vec::new() }
}

/// View-independent colour of a world point: broad stripes and a checker
/// (coarse, so nearest-pixel lookup in the measure adds little error; the
/// checker's cells are offset so no cell boundary lies on a cube face).
fn albedo(p: Vec3) -> Rgb<u8> {
    let stripes = ((p.x + p.y + p.z) * 2.5).sin() * 0.5 + 0.5;
    let checker = (((p.x * 2.0 + 0.25).floor() + (p.y * 2.0 + 0.25).floor() + (p.z * 2.0 + 0.25).floor()) as i32)
        .rem_euclid(2) as f32;
    Rgb([(60.0 + 180.0 * stripes) as u8, (40.0 + 150.0 * checker) as u8, 120])
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let model_path = args.get(1).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../splatdiff-diffusion/tests/fixtures/tiny-sd15")
    });
    let steps: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(10);

    let mesh = cube();
    let intr = Intrinsics::from_fov_x(0.8, SIZE, SIZE);
    let mut geometries = Vec::new();
    let mut keyframes = Vec::new();
    for k in 0..KEYFRAMES {
        let angle = 0.5 + 0.35 * k as f32;
        let eye = Vec3::new(3.0 * angle.cos(), 3.0 * angle.sin(), 1.6);
        let camera = Camera::look_at(eye, Vec3::ZERO, intr);
        let passes = rasterize(&mesh, &camera);
        let image = RgbImage::from_fn(SIZE, SIZE, |x, y| {
            let d = passes.depth[(y * SIZE + x) as usize];
            if d > 0.0 {
                albedo(camera.unproject(glam::Vec2::new(x as f32 + 0.5, y as f32 + 0.5), d))
            } else {
                Rgb([128, 128, 128])
            }
        });
        geometries.push(FrameGeometry {
            camera,
            width: SIZE as usize,
            height: SIZE as usize,
            depth: Some(passes.depth),
            normals: None,
            mask: passes.mask.iter().map(|&m| m as f32 / 255.0).collect(),
        });
        keyframes.push(Keyframe { image, controls: Vec::new() });
    }
    let measure = |images: &[RgbImage]| -> Result<f64, Box<dyn std::error::Error>> {
        let images = images
            .iter()
            .map(|i| {
                Image::from_data(
                    SIZE as usize,
                    SIZE as usize,
                    3,
                    i.as_raw().iter().map(|&v| v as f32 / 255.0).collect(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let geoms: Vec<&FrameGeometry> = geometries.iter().collect();
        let refs: Vec<&Image> = images.iter().collect();
        Ok(reprojection_error(&geoms, &refs, &keyframe_pairs(KEYFRAMES)).unwrap_or(f64::NAN))
    };
    let inputs: Vec<RgbImage> = keyframes.iter().map(|k| k.image.clone()).collect();
    println!("input renders: error {:.4}", measure(&inputs)?);

    let model = StableDiffusion::load(&model_path, &ModelOptions::default(), &Device::Cpu)?;
    let nets = MultiControlNet::default();
    let config = DiffusionConfig {
        prompt: "a wooden crate, oil painting".into(),
        negative_prompt: "blurry".into(),
        strength: 0.6,
        steps,
        guidance_scale: 5.0,
        seed: 1,
        scheduler: SchedulerKind::EulerAncestral,
        ..DiffusionConfig::default()
    };
    let prompts = PromptEmbeddings::encode(&model, &config.prompt, &config.negative_prompt)?;
    for mode in
        [ConsistencyMode::None, ConsistencyMode::Grid { cols: 2 }, ConsistencyMode::CrossFrame { anchors: vec![0] }]
    {
        let config = DiffusionConfig { consistency: mode.clone(), ..config.clone() };
        let start = std::time::Instant::now();
        let out = img2img(
            &model,
            &prompts,
            &nets,
            &config,
            &keyframes,
            &mut NoiseRng::new(config.seed),
            &mut RunControl::default(),
        )?;
        println!(
            "{:<40} error {:.4} ({:.1} s)",
            serde_json::to_string(&mode)?,
            measure(&out.images)?,
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
