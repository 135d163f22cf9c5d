//! `splatdiff propagate` and `splatdiff exemplar` as a user runs them.

#[path = "../../splatdiff-propagate/tests/common/mod.rs"]
mod common;

use std::process::Command;

fn splatdiff(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_splatdiff")).args(args).output().unwrap()
}

#[test]
fn propagate_then_exemplar_on_a_capture_folder() {
    let dir = tempfile::tempdir().unwrap();
    let t = common::turntable(6, 40);
    let (cap, keys, out) = (dir.path().join("capture"), dir.path().join("keys"), dir.path().join("out"));
    common::write_capture(&t, &cap, &keys, &[0, 2, 4]);
    let run = splatdiff(&[
        "propagate".as_ref(),
        "--data".as_ref(),
        cap.as_os_str(),
        "--keys".as_ref(),
        keys.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(String::from_utf8_lossy(&run.stdout).contains("propagated 3 keyframes to 6 frames"));
    for name in ["transforms.json", "propagate.json", "images/r_005.png", "error/r_005.exr"] {
        assert!(out.join(name).is_file(), "{name} missing");
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("propagate.json")).unwrap()).unwrap();
    assert_eq!(report["keyframes"], serde_json::json!(["r_000", "r_002", "r_004"]));

    // Exemplar keyframes from a style image, then propagated.
    let style = dir.path().join("style.png");
    t.truth[1].write_png(&style).unwrap();
    let ex_keys = dir.path().join("exemplar_keys");
    let run = splatdiff(&[
        "exemplar".as_ref(),
        "--style".as_ref(),
        style.as_os_str(),
        "--data".as_ref(),
        cap.as_os_str(),
        "--keyframes".as_ref(),
        "2".as_ref(),
        "--out".as_ref(),
        ex_keys.as_os_str(),
    ]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(ex_keys.join("r_000.png").is_file() && ex_keys.join("r_003.png").is_file());
}

#[test]
fn propagate_with_a_bad_keyframe_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let t = common::turntable(4, 32);
    let (cap, keys, out) = (dir.path().join("capture"), dir.path().join("keys"), dir.path().join("out"));
    common::write_capture(&t, &cap, &keys, &[0]);
    splatdiff_propagate::image::Image::new(20, 20, 3).write_png(&keys.join("r_001.png")).unwrap();
    let run = splatdiff(&[
        "propagate".as_ref(),
        "--data".as_ref(),
        cap.as_os_str(),
        "--keys".as_ref(),
        keys.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    assert_eq!(run.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("r_001.png") && stderr.contains("20x20"), "{stderr}");
    assert!(!stderr.contains("panicked"));
    assert!(!out.join("transforms.json").exists(), "no half-written result");
}
