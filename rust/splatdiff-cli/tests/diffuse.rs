//! `splatdiff diffuse` end to end with the tiny fixture model of
//! splatdiff-diffusion (random weights: the pictures are noise, but every
//! stage runs for real).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use glam::{Mat4, Vec3};
use image::{Rgb, RgbImage, Rgba, RgbaImage};
use splatdiff_scene::maps::{write_depth_exr, write_normal_exr};
use splatdiff_scene::transforms::{write_transforms, Dataset, Frame};
use splatdiff_scene::{Camera, FloatMap, Intrinsics};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../splatdiff-diffusion/tests/fixtures")
}

fn splatdiff(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_splatdiff")).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

const W: u32 = 24;
const H: u32 = 20;

/// A capture of two frames of a wall at 2 m: images, depth and normal
/// passes and transforms.json.
fn write_capture(dir: &Path) {
    let intr = Intrinsics { fx: 20.0, fy: 20.0, cx: 12.0, cy: 10.0, width: W, height: H };
    let mut frames = Vec::new();
    for i in 0..2u32 {
        let name = format!("r_{i}");
        let image_path = dir.join(format!("{name}.png"));
        if i == 0 {
            RgbImage::from_fn(W, H, |x, y| Rgb([(x * 10) as u8, (y * 12) as u8, 90])).save(&image_path).unwrap();
        } else {
            // An RGBA render: the alpha comes back on the output.
            RgbaImage::from_fn(W, H, |x, y| Rgba([(x * 10) as u8, 60, (y * 12) as u8, if x < 12 { 255 } else { 0 }]))
                .save(&image_path)
                .unwrap();
        }
        let depth = FloatMap { width: W, height: H, channels: 1, data: vec![2.0; (W * H) as usize] };
        let normal = FloatMap { width: W, height: H, channels: 3, data: [0.0, 0.0, 1.0].repeat((W * H) as usize) };
        let depth_path = dir.join(format!("{name}_depth.exr"));
        let normal_path = dir.join(format!("{name}_normal.exr"));
        write_depth_exr(&depth_path, &depth).unwrap();
        write_normal_exr(&normal_path, &normal).unwrap();
        frames.push(Frame {
            name: name.clone(),
            file_path: format!("{name}.png"),
            image_path,
            camera: Camera::new(Mat4::from_translation(Vec3::new(0.2 * i as f32, 0.0, 0.0)), intr),
            depth_path: Some(depth_path),
            normal_path: Some(normal_path),
            mask_path: None,
        });
    }
    let dataset = Dataset { root: dir.to_path_buf(), frames, ..Default::default() };
    write_transforms(&dir.join("transforms.json"), &dataset).unwrap();
}

#[test]
fn diffuse_restyles_a_folder_with_controlnets() {
    let tmp = tempfile::tempdir().unwrap();
    let capture = tmp.path().join("capture");
    std::fs::create_dir_all(&capture).unwrap();
    write_capture(&capture);
    let model = fixtures().join("tiny-sd15");
    let cn = fixtures().join("tiny-controlnet-sd15");
    let out = tmp.path().join("out");
    for consistency in ["grid", "cross-frame"] {
        let run = splatdiff(&[
            "diffuse",
            "--model",
            model.to_str().unwrap(),
            "--controlnet",
            &format!("depth={}", cn.display()),
            "--controlnet",
            &format!("canny={}:0.5:0.0:0.5", cn.display()),
            "--prompt",
            "a brick wall",
            "--negative-prompt",
            "blurry",
            "--strength",
            "0.75",
            "--steps",
            "4",
            "--scheduler",
            "euler-a",
            "--consistency",
            consistency,
            "--seed",
            "3",
            "--in",
            capture.to_str().unwrap(),
            "--data",
            capture.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(run.status.success(), "{consistency}: {}", text(&run));
        // 24x20 (and the 48x20 grid canvas) is not a multiple of 8: said so.
        let padded = if consistency == "grid" { "padded to 48x24" } else { "padded to 24x24" };
        assert!(text(&run).contains(padded), "{}", text(&run));
        let a = image::open(out.join("r_0.png")).unwrap();
        let b = image::open(out.join("r_1.png")).unwrap();
        assert_eq!((a.width(), a.height()), (W, H));
        assert!(!a.color().has_alpha());
        let b = b.to_rgba8();
        assert_eq!(b.get_pixel(3, 3)[3], 255);
        assert_eq!(b.get_pixel(20, 3)[3], 0, "input alpha kept");
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("diffuse.json")).unwrap()).unwrap();
        assert_eq!(report["config"]["scheduler"], "euler-a");
        assert_eq!(report["config"]["consistency"]["mode"], consistency);
        assert_eq!(report["config"]["controlnets"][1]["kind"], "canny");
        assert_eq!(report["config"]["controlnets"][1]["weight"], 0.5);
        assert_eq!(report["keyframes"], serde_json::json!(["r_0", "r_1"]));
        let error = report["consistency"]["mean_abs_error"].as_f64().unwrap();
        assert!(error > 0.0 && error < 1.0, "{report}");
    }
}

#[test]
fn diffuse_reports_bad_input_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    RgbImage::new(16, 16).save(input.join("a.png")).unwrap();
    let missing = tmp.path().join("no-such-model");
    let out_dir = tmp.path().join("out");
    let base = |model: &str, extra: &[&str]| {
        let mut args = vec![
            "diffuse",
            "--model",
            model,
            "--prompt",
            "x",
            "--in",
            input.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        splatdiff(&args)
    };
    let run = base(missing.to_str().unwrap(), &[]);
    assert!(!run.status.success());
    assert!(text(&run).contains("no-such-model"), "{}", text(&run));

    let model = fixtures().join("tiny-sd15");
    let cn = fixtures().join("tiny-controlnet-sd15");
    let run = base(model.to_str().unwrap(), &["--controlnet", &format!("depth={}", cn.display())]);
    assert!(!run.status.success());
    assert!(text(&run).contains("--data"), "{}", text(&run));

    let run = base(model.to_str().unwrap(), &["--scheduler", "pndm"]);
    assert!(!run.status.success());
    assert!(text(&run).contains("pndm"), "{}", text(&run));
}
