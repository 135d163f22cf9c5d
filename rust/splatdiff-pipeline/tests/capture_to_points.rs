//! On a synthetic capture: geometry passes of a known mesh, and the
//! `points` stage checked against the mesh itself (the rest of the loop is
//! in `run_loop.rs`).

use std::path::Path;

use glam::Vec3;
use serde_json::json;
use splatdiff_pipeline::stylize::StylizerConfig;
use splatdiff_pipeline::{passes::render_passes, run_pipeline, Job, RunConfig, WorkDir};
use splatdiff_scene::maps::{read_float_exr, read_mask_png};
use splatdiff_scene::raster::TriangleMesh;
use splatdiff_scene::transforms::{write_transforms, Dataset, Frame};
use splatdiff_scene::{read_splats, Camera, Intrinsics};

const HALF: f32 = 0.5;
const CENTRE: Vec3 = Vec3::new(0.3, -0.2, 0.6);

fn cube() -> TriangleMesh {
    let positions = (0..8)
        .map(|i| {
            let s = |bit: i32| if i & bit != 0 { HALF } else { -HALF };
            CENTRE + Vec3::new(s(1), s(2), s(4))
        })
        .collect();
    let quads = [[0, 2, 3, 1], [4, 5, 7, 6], [0, 1, 5, 4], [2, 6, 7, 3], [0, 4, 6, 2], [1, 3, 7, 5]];
    let triangles = quads.iter().flat_map(|q| [[q[0], q[1], q[2]], [q[0], q[2], q[3]]]).collect();
    TriangleMesh { positions, triangles, corner_normals: vec![] }
}

/// A turntable capture of the cube: 6 views, solid orange images, passes rasterized.
fn capture(root: &Path) -> std::path::PathBuf {
    let k = Intrinsics { fx: 70.0, fy: 70.0, cx: 32.0, cy: 32.0, width: 64, height: 64 };
    let frames = (0..6)
        .map(|i| {
            let angle = i as f32 / 6.0 * std::f32::consts::TAU;
            let eye = CENTRE + 3.0 * Vec3::new(angle.cos(), angle.sin(), 0.4);
            let name = format!("r_{i:03}");
            let image_path = root.join(format!("images/{name}.png"));
            std::fs::create_dir_all(image_path.parent().unwrap()).unwrap();
            image::RgbaImage::from_pixel(64, 64, image::Rgba([255, 128, 0, 255])).save(&image_path).unwrap();
            Frame {
                name: name.clone(),
                file_path: format!("images/{name}.png"),
                image_path,
                camera: Camera::look_at(eye, CENTRE, k),
                depth_path: Some(root.join(format!("depth/{name}.exr"))),
                normal_path: Some(root.join(format!("normal/{name}.exr"))),
                mask_path: Some(root.join(format!("mask/{name}.png"))),
            }
        })
        .collect();
    let dataset = Dataset { root: root.to_path_buf(), frames, warnings: vec![], extra: Default::default() };
    let transforms = root.join("transforms.json");
    write_transforms(&transforms, &dataset).unwrap();
    let path = transforms.clone();
    let mesh = cube();
    Job::spawn("passes", move |ctx| render_passes(&path, &mesh, ctx)).wait().unwrap();
    transforms
}

#[test]
fn passes_are_written_for_every_frame() {
    let dir = tempfile::tempdir().unwrap();
    capture(dir.path());
    for i in 0..6 {
        let depth = read_float_exr(&dir.path().join(format!("depth/r_{i:03}.exr"))).unwrap();
        let (w, h, mask) = read_mask_png(&dir.path().join(format!("mask/r_{i:03}.png"))).unwrap();
        assert_eq!((depth.width, depth.height, depth.channels, w, h), (64, 64, 1, 64, 64));
        for (d, m) in depth.data.iter().zip(&mask) {
            assert_eq!(*d > 0.0, *m == 255, "depth and mask agree on coverage");
        }
        let normal = read_float_exr(&dir.path().join(format!("normal/r_{i:03}.exr"))).unwrap();
        assert_eq!(normal.channels, 3);
    }
}

#[test]
fn points_lie_on_the_captured_surface_and_are_resumed_not_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let work = WorkDir::open(dir.path().join("run")).unwrap();
    let staging = work.begin("capture", &json!({"frames": 6})).unwrap();
    capture(&staging);
    work.commit("capture", json!({})).unwrap();

    // The external stylizer pauses right after `points`: this test is about points.
    let mut config = RunConfig {
        points: splatdiff_pipeline::points::PointsConfig { max_points: 2000, opacity: 0.1 },
        stylize: Some(StylizerConfig::External(Default::default())),
        ..Default::default()
    };
    config.keyframes.count = 2;
    let run = |config: RunConfig| {
        let work = work.clone();
        Job::spawn("pipeline", move |ctx| run_pipeline(&work, &config, ctx)).wait().unwrap()
    };
    let result = run(config.clone());
    let stages: Vec<(&str, &str)> = result["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert_eq!(stages, [("capture", "finished"), ("points", "done"), ("stylize-1", "paused")]);
    assert!(result["iterations"].as_array().unwrap().is_empty());
    let splats = read_splats(Path::new(result["points"].as_str().unwrap())).unwrap();
    assert!(splats.len() > 1000 && splats.len() <= 2400, "about max_points kept: {}", splats.len());
    for p in &splats.positions {
        let local = (Vec3::from(*p) - CENTRE).abs();
        let on_face = (local.max_element() - HALF).abs();
        assert!(on_face < 0.02 && local.max_element() < HALF + 0.02, "point {p:?} is off the cube's surface");
    }
    // Orange (1, 0.5, 0) comes back through the SH DC term.
    let colour = splats.sh_dc[0].map(|c| 0.5 + 0.282_094_8 * c);
    assert!((colour[0] - 1.0).abs() < 0.01 && (colour[1] - 128.0 / 255.0).abs() < 0.01 && colour[2].abs() < 0.01);

    // Same settings: reused. Other settings: refused until asked to restart.
    let again = run(config.clone());
    assert_eq!(again["stages"][1]["status"], "reused");
    let mut changed = config;
    changed.points.max_points = 500;
    let work2 = work.clone();
    let changed2 = changed.clone();
    let err = Job::spawn("p", move |ctx| run_pipeline(&work2, &changed2, ctx)).wait().unwrap_err().to_string();
    assert!(err.contains("max_points: 2000 -> 500"), "{err}");
    changed.restart_from = Some("points".into());
    let rerun = run(changed);
    assert_eq!(rerun["stages"][1]["status"], "done");
    assert!(read_splats(Path::new(rerun["points"].as_str().unwrap())).unwrap().len() < 700);
}

#[test]
fn a_run_without_a_capture_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let work = WorkDir::open(dir.path()).unwrap();
    let config = RunConfig { stylize: Some(StylizerConfig::External(Default::default())), ..Default::default() };
    let err = Job::spawn("p", move |ctx| run_pipeline(&work, &config, ctx)).wait().unwrap_err();
    assert!(err.to_string().contains("no finished capture"), "{err}");
}
