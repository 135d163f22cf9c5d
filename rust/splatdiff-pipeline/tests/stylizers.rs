//! Each stylizer through the `stylize` stage on a small synthetic capture:
//! what it writes, how it fails, and that it is deterministic.

mod support;

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{json, Value};
use splatdiff_pipeline::stage::{Stage, StageContext};
use splatdiff_pipeline::stylize::StylizeStage;
use splatdiff_pipeline::stylize::StylizerConfig;
use splatdiff_pipeline::{Job, WorkDir};
use splatdiff_propagate::image::Image;
use splatdiff_propagate::io::read_capture;

const KEYS: [usize; 2] = [0, 1];

/// Runs `stylize-1` on keyframes 0 and 1 of `work`'s capture; returns its outputs.
fn stylize(work: &WorkDir, stylizer: Value) -> Result<Value, String> {
    let stylizer: StylizerConfig = serde_json::from_value(stylizer).map_err(|e| e.to_string())?;
    let work = work.clone();
    Job::spawn("stylize", move |ctx| {
        let capture = read_capture(&work.stage_dir("capture"))?;
        let stage = StylizeStage {
            capture: &capture,
            iteration: 1,
            source: "capture".into(),
            keyframes: KEYS.to_vec(),
            stylizer,
            resume: false,
        };
        work.discard(&stage.name())?;
        let staging = work.begin(&stage.name(), &stage.config())?;
        let outputs = stage.run(&StageContext { work: &work, out: &staging, job: ctx })?;
        work.commit(&stage.name(), outputs.clone())?;
        Ok(outputs)
    })
    .wait()
    .map_err(|e| e.to_string())
}

fn key(work: &WorkDir, dir: &str, frame: usize) -> Image {
    Image::read(&work.root().join(format!("stylize-1/{dir}/r_{frame:03}.png"))).unwrap()
}

fn setup(size: u32) -> (tempfile::TempDir, WorkDir, support::common::Turntable) {
    let dir = tempfile::tempdir().unwrap();
    let (work, truth) = support::work_with_capture(dir.path(), 8, size);
    (dir, work, truth)
}

#[cfg(unix)]
#[test]
fn a_command_restyles_each_keyframe_and_its_failures_are_explained() {
    let (_dir, work, truth) = setup(24);
    let out = stylize(&work, json!({"kind": "command", "command": "cp {in} {out}"})).unwrap();
    assert_eq!(out["keyframes"], json!(["r_000", "r_001"]));
    for k in KEYS {
        let (after, before) = (key(&work, "keys", k), key(&work, "before", k));
        assert_eq!(after.data, before.data, "a copy comes back unchanged, alpha = mask");
        let mask = &truth.frames[k].geometry.mask;
        assert!(after.data.chunks_exact(4).zip(mask).all(|(p, m)| (p[3] - m).abs() < 0.01));
    }

    let err = stylize(&work, json!({"kind": "command", "command": "echo boom >&2; exit 3; : {out}"})).unwrap_err();
    assert!(err.contains("boom") && err.contains("r_000") && err.contains("failed"), "{err}");

    let started = Instant::now();
    let err = stylize(&work, json!({"kind": "command", "command": "sleep 30; : {out}", "timeout_s": 0.5})).unwrap_err();
    assert!(err.contains("timed out"), "{err}");
    assert!(started.elapsed().as_secs() < 10, "the hanging command was stopped");

    let err = stylize(&work, json!({"kind": "command", "command": "true {in} {out}"})).unwrap_err();
    assert!(err.contains("wrote no image") && err.contains("r_000"), "{err}");
    let err = stylize(&work, json!({"kind": "command", "command": "cp {in} /tmp/x.png"})).unwrap_err();
    assert!(err.contains("{out}"), "{err}");
}

#[cfg(unix)]
#[test]
fn command_placeholders_reach_the_program_verbatim() {
    let (dir, work, _) = setup(24);
    let prompt = r#"it's "odd"; echo $HOME `x`"#;
    let seen = dir.path().join("seen.txt");
    let command = format!(
        "printf %s {{prompt}} >> '{}'; printf %s {{seed}}/{{strength}}/{{frame}}/ >> '{}'; cp {{in}} {{out}}",
        seen.display(),
        seen.display()
    );
    stylize(&work, json!({"kind": "command", "command": command, "prompt": prompt, "seed": 7, "strength": 0.25}))
        .unwrap();
    let seen = std::fs::read_to_string(seen).unwrap();
    assert_eq!(seen, format!("{prompt}7/0.25/r_000/{prompt}7/0.25/r_001/"));
}

#[test]
fn the_exemplar_stylizer_takes_the_style_and_strength_blends_it() {
    let (dir, work, truth) = setup(32);
    let style = dir.path().join("style.png");
    truth.truth[2].write_png(&style).unwrap();
    stylize(&work, json!({"kind": "exemplar", "style_image": style})).unwrap();
    let mask = &truth.frames[0].geometry.mask;
    let mean = |img: &Image| {
        let mut s = [0.0f64; 3];
        let mut n = 0.0;
        for (i, m) in mask.iter().enumerate() {
            if *m > 0.5 {
                let p = img.rgb(i);
                (0..3).for_each(|c| s[c] += p[c] as f64);
                n += 1.0;
            }
        }
        s.map(|v| v / n)
    };
    let (styled, before, target) =
        (mean(&key(&work, "keys", 0)), mean(&key(&work, "before", 0)), mean(&truth.truth[0]));
    let dist = |a: [f64; 3], b: [f64; 3]| (0..3).map(|c| (a[c] - b[c]).powi(2)).sum::<f64>().sqrt();
    assert!(
        dist(styled, target) < dist(before, target),
        "the look moved towards the style: {styled:?} {before:?} {target:?}"
    );

    stylize(&work, json!({"kind": "exemplar", "style_image": style, "strength": 0.0})).unwrap();
    assert_eq!(key(&work, "keys", 0).data, key(&work, "before", 0).data, "strength 0 keeps the input");
    let err = stylize(&work, json!({"kind": "exemplar", "style_image": dir.path().join("none.png")})).unwrap_err();
    assert!(err.contains("none.png") && err.contains("does not exist"), "{err}");
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../splatdiff-diffusion/tests/fixtures")
}

#[test]
fn diffusion_with_a_depth_controlnet_is_deterministic_and_keeps_the_mask() {
    let (_dir, work, truth) = setup(32);
    let config = json!({
        "kind": "diffusion",
        "model": fixtures().join("tiny-sd15"),
        "prompt": "a marble statue",
        "steps": 4,
        "strength": 0.75,
        "seed": 3,
        "consistency": "cross-frame",
        "controlnets": [{"kind": "depth", "model": fixtures().join("tiny-controlnet-sd15")}],
    });
    let out = stylize(&work, config.clone()).unwrap();
    assert!(out["keyframe_reprojection"].as_f64().is_some(), "{out}");
    let first: Vec<Image> = KEYS.iter().map(|&k| key(&work, "keys", k)).collect();
    for (img, &k) in first.iter().zip(&KEYS) {
        assert_eq!((img.width, img.height, img.channels), (32, 32, 4));
        let mask = &truth.frames[k].geometry.mask;
        assert!(img.data.chunks_exact(4).zip(mask).all(|(p, m)| (p[3] - m).abs() < 0.01), "alpha is the mask");
        assert_ne!(img.data, key(&work, "before", k).data, "the model changed the image");
    }
    stylize(&work, config).unwrap();
    for (img, &k) in first.iter().zip(&KEYS) {
        assert_eq!(img.data, key(&work, "keys", k).data, "same seed, same keyframes");
    }
    // 2 steps at strength 0.3 would run none: the schedule is refined instead of failing.
    let grid = json!({"kind": "diffusion", "model": fixtures().join("tiny-sd15"), "steps": 2, "strength": 0.3, "consistency": "grid"});
    stylize(&work, grid).unwrap();
    let err = stylize(&work, json!({"kind": "diffusion", "model": fixtures().join("tiny-sd15"), "controlnets": [{"kind": "depth", "model": "/no/such/cn"}]})).unwrap_err();
    assert!(err.contains("/no/such/cn"), "{err}");
}
