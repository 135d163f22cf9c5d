//! The whole loop on a synthetic turntable with exact ground truth (a
//! sphere with a nose, two procedural looks on the same surface): the
//! external stylizer's pause and resume, propagation, training, rendering,
//! the metrics, the report, and continuing a run with another iteration.

mod support;

use std::path::Path;

use serde_json::{json, Value};
use splatdiff_pipeline::stylize::StylizerConfig;
use splatdiff_pipeline::{run_pipeline, Job, RunConfig, WorkDir};
use splatdiff_propagate::image::Image;
use splatdiff_propagate::metrics::psnr_masked;

const FRAMES: usize = 12;
const SIZE: u32 = 48;

fn work_with_capture(root: &Path) -> (WorkDir, support::common::Turntable) {
    support::work_with_capture(root, FRAMES, SIZE)
}

fn config(iterations: usize, resume: bool) -> RunConfig {
    let mut c = RunConfig {
        stylize: Some(StylizerConfig::External(Default::default())),
        iterations,
        resume,
        ..Default::default()
    };
    c.keyframes.count = 4;
    c.points.max_points = 3000;
    c.train.max_side = SIZE;
    c.train.holdout_every = 4;
    c.train.train.steps = 60;
    c.train.train.max_splats = 4000;
    c.render.gif_side = 32;
    c
}

fn run(work: &WorkDir, config: RunConfig) -> Result<Value, String> {
    let work = work.clone();
    Job::spawn("pipeline", move |ctx| run_pipeline(&work, &config, ctx)).wait().map_err(|e| e.to_string())
}

fn statuses(result: &Value) -> Vec<(String, String)> {
    result["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_string(), s["status"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn external_edits_pause_resume_and_the_loop_measures_itself() {
    if !support::gpu_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (work, truth) = work_with_capture(dir.path());

    // 1. The run pauses with the keyframes written for the user.
    let paused = run(&work, config(1, false)).unwrap();
    let edit = work.root().join("edit-1");
    assert_eq!(paused["paused"]["folder"], json!(edit));
    let keys: Vec<String> =
        paused["paused"]["keyframes"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().into()).collect();
    assert_eq!(keys, ["r_000", "r_003", "r_006", "r_009"]);
    for k in &keys {
        assert!(edit.join(format!("{k}.png")).is_file(), "{k} written for editing");
    }
    assert!(work.manifest().unwrap().stage("stylize-1").is_none(), "a pause records nothing as finished");

    // 2. Resuming with a file missing, then a resized one: errors naming them.
    std::fs::remove_file(edit.join("r_003.png")).unwrap();
    let err = run(&work, config(1, true)).unwrap_err();
    assert!(err.contains("r_003") && err.contains("missing"), "{err}");
    Image::new(10, 10, 3).write_png(&edit.join("r_003.png")).unwrap();
    let err = run(&work, config(1, true)).unwrap_err();
    assert!(err.contains("r_003.png") && err.contains("10x10"), "{err}");

    // 3. The user's edits (the ground truth's look) and resume: the loop runs.
    for (k, name) in keys.iter().enumerate() {
        truth.truth[k * 3].write_png(&edit.join(format!("{name}.png"))).unwrap();
    }
    let done = run(&work, config(1, true)).unwrap();
    assert!(done["paused"].is_null());
    let names: Vec<String> = statuses(&done).into_iter().map(|s| s.0).collect();
    assert_eq!(names, ["capture", "points", "stylize-1", "propagate-1", "train-1", "render-1"]);
    let it = &done["iterations"][0];
    let m = &it["metrics"];
    println!("iteration 1: {m}, capture {}", done["capture_reprojection"]);
    for key in [
        "keyframe_reprojection",
        "propagated_reprojection",
        "splat_reprojection",
        "refit_psnr",
        "refit_ssim",
        "change_psnr",
        "change_ssim",
    ] {
        assert!(m[key].as_f64().is_some_and(f64::is_finite), "{key}: {m}");
    }
    // The truth is consistent, so propagation from it is accurate and steady.
    let propagated = work.root().join("propagate-1/images");
    let mut worst = f64::INFINITY;
    for i in 0..FRAMES {
        let image = Image::read(&propagated.join(format!("r_{i:03}.png"))).unwrap();
        worst = worst.min(psnr_masked(&image, &truth.truth[i], &truth.frames[i].geometry.mask));
    }
    println!("worst propagated frame: {worst:.2} dB against the truth");
    assert!(worst > 24.0, "propagated frames within {worst:.1} dB of the truth");
    let capture_floor = done["capture_reprojection"].as_f64().unwrap();
    assert!(m["propagated_reprojection"].as_f64().unwrap() < 0.1, "{m}");
    assert!(capture_floor < 0.1);
    // The restyled look is far from the capture's (another material).
    assert!(m["change_psnr"].as_f64().unwrap() < 25.0, "{m}");
    for key in ["splats", "keyframe_sheet", "contact_sheet", "turntable"] {
        assert!(Path::new(it[key].as_str().unwrap()).is_file(), "{key}: {}", it[key]);
    }
    let gif = image::codecs::gif::GifDecoder::new(std::io::BufReader::new(
        std::fs::File::open(it["turntable"].as_str().unwrap()).unwrap(),
    ))
    .unwrap();
    use image::AnimationDecoder;
    assert_eq!(gif.into_frames().count(), FRAMES, "one GIF frame per view");
    let html = std::fs::read_to_string(done["report"]["html"].as_str().unwrap()).unwrap();
    assert!(html.contains("<svg") && html.contains("render-1/turntable.gif"), "report has plots and pictures");
    let md = std::fs::read_to_string(done["report"]["markdown"].as_str().unwrap()).unwrap();
    assert!(md.contains("| 1 | 1.00 |"), "{md}");

    // 4. Continuing: iteration 1 is reused, iteration 2 restyles the splats'
    //    renders (the external stylizer pauses again, on edit-2).
    let next = run(&work, config(2, false)).unwrap();
    let st = statuses(&next);
    assert!(st.contains(&("train-1".into(), "reused".into())), "{st:?}");
    assert_eq!(next["paused"]["stage"], "stylize-2");
    let edit2 = work.root().join("edit-2/r_000.png");
    let render1 = Image::read(&work.root().join("render-1/images/r_000.png")).unwrap();
    assert_eq!(Image::read(&edit2).unwrap().data, render1.data, "iteration 2 starts from the splats' renders");
    assert_eq!(next["iterations"].as_array().unwrap().len(), 1);

    // 5. Settings changed on a finished stage: refused, naming the change.
    let mut changed = config(1, true);
    changed.keyframes.count = 3;
    let err = run(&work, changed).unwrap_err();
    assert!(err.contains("stylize-1") && err.contains("keyframes"), "{err}");
}

#[test]
fn bad_run_configs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (work, _) = work_with_capture(dir.path());
    let err = run(&work, RunConfig::default()).unwrap_err();
    assert!(err.contains("no stylizer"), "{err}");

    let missing: StylizerConfig =
        serde_json::from_value(json!({"kind": "diffusion", "model": dir.path().join("nope")})).unwrap();
    let err = run(&work, RunConfig { stylize: Some(missing), ..config(1, false) }).unwrap_err();
    assert!(err.contains("nope") && err.contains("does not exist"), "{err}");

    let mut picked = config(1, false);
    picked.keyframes.frames = vec![0, 40];
    let err = run(&work, picked).unwrap_err();
    assert!(err.contains("keyframe 40") && err.contains("12 frames"), "{err}");

    let unknown = serde_json::from_value::<StylizerConfig>(json!({"kind": "magic"})).unwrap_err().to_string();
    assert!(unknown.contains("magic"), "{unknown}");
    let typo = serde_json::from_value::<StylizerConfig>(json!({"kind": "exemplar", "style": "a.png"}))
        .unwrap_err()
        .to_string();
    assert!(typo.contains("style"), "{typo}");
    let err = run(&work, RunConfig { strength_falloff: 0.0, ..config(1, false) }).unwrap_err();
    assert!(err.contains("strength_falloff"), "{err}");
}
