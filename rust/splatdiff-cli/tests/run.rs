//! `splatdiff run --config run.json` as a pipeline engineer runs it: a
//! capture imported into a new work folder, two iterations with the
//! exemplar stylizer, then the same command again (everything reused).

#[path = "../../splatdiff-propagate/tests/common/mod.rs"]
mod common;

use std::process::{Command, Output};

fn splatdiff(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_splatdiff")).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn run_from_a_config_file_twice() {
    if let Err(e) = splatdiff_render::gpu::GpuContext::new() {
        println!("skipping: no GPU adapter for the train stage ({e})");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let t = common::turntable(8, 32);
    common::write_capture(&t, &dir.path().join("capture"), &dir.path().join("unused"), &[]);
    t.truth[1].write_png(&dir.path().join("style.png")).unwrap();
    let config = serde_json::json!({
        "work": "work",
        "capture": "capture",
        "keyframes": {"count": 3},
        "stylize": {"kind": "exemplar", "style_image": "style.png"},
        "iterations": 2,
        "train": {"steps": 30, "max_side": 32, "max_splats": 3000},
        "points": {"max_points": 2000},
    });
    let path = dir.path().join("run.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();

    let first = splatdiff(&["run".as_ref(), "--config".as_ref(), path.as_os_str()]);
    assert!(first.status.success(), "{}", text(&first));
    let out = text(&first);
    assert!(out.contains("render-2: done") && out.contains("report:"), "{out}");
    let work = dir.path().join("work");
    for file in
        ["report/index.html", "report/report.md", "report/metrics.json", "train-2/model.ply", "render-2/turntable.gif"]
    {
        assert!(work.join(file).is_file(), "{file} missing");
    }
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(work.join("report/metrics.json")).unwrap()).unwrap();
    let strengths: Vec<f64> =
        metrics["iterations"].as_array().unwrap().iter().map(|i| i["strength"].as_f64().unwrap()).collect();
    assert_eq!(strengths, [1.0, 0.5], "strength halves each iteration");

    let again = splatdiff(&["run".as_ref(), "--config".as_ref(), path.as_os_str()]);
    assert!(again.status.success(), "{}", text(&again));
    let out = text(&again);
    assert!(out.contains("train-2: reused") && !out.contains(": done"), "{out}");

    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"work": "w", "stylize": {"kind": "exemplar", "style_image": "s.png"}, "iteratons": 2}"#)
        .unwrap();
    let run = splatdiff(&["run".as_ref(), "--config".as_ref(), bad.as_os_str()]);
    assert_eq!(run.status.code(), Some(1));
    assert!(text(&run).contains("bad.json") && text(&run).contains("iteratons"), "{}", text(&run));
}
