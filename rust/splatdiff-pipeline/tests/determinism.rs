//! The same inputs and seed give the same run: two work folders, the same
//! capture and config, compared file by file. Stylize and propagate are
//! bit-identical; training is not (the GPU's backward pass adds gradients
//! with float atomics, whose order varies), so its renders are compared by
//! PSNR.

mod support;

use splatdiff_pipeline::stylize::StylizerConfig;
use splatdiff_pipeline::{run_pipeline, Job, RunConfig};
use splatdiff_propagate::image::Image;
use splatdiff_propagate::metrics::psnr_masked;

#[test]
fn identical_inputs_give_identical_results() {
    if !support::gpu_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let style = dir.path().join("style.png");
    let mut results = Vec::new();
    for run in ["a", "b"] {
        let root = dir.path().join(run);
        let (work, truth) = support::work_with_capture(&root, 8, 32);
        truth.truth[1].write_png(&style).unwrap();
        let mut config = RunConfig {
            stylize: Some(
                serde_json::from_value::<StylizerConfig>(serde_json::json!({"kind": "exemplar", "style_image": style}))
                    .unwrap(),
            ),
            ..Default::default()
        };
        config.keyframes.count = 3;
        config.points.max_points = 2000;
        config.train.max_side = 32;
        config.train.train.steps = 40;
        config.train.train.max_splats = 3000;
        let w = work.clone();
        Job::spawn("pipeline", move |ctx| run_pipeline(&w, &config, ctx)).wait().unwrap();
        results.push(work.root().to_path_buf());
    }
    for i in 0..8 {
        for file in [
            format!("stylize-1/before/r_{i:03}.png"),
            format!("stylize-1/keys/r_{i:03}.png"),
            format!("propagate-1/images/r_{i:03}.png"),
        ] {
            let Ok(a) = std::fs::read(results[0].join(&file)) else { continue };
            assert!(a == std::fs::read(results[1].join(&file)).unwrap(), "{file} differs between identical runs");
        }
    }
    let mut worst = f64::INFINITY;
    for i in 0..8 {
        let read = |r: &std::path::Path| Image::read(&r.join(format!("render-1/images/r_{i:03}.png"))).unwrap();
        let (a, b) = (read(&results[0]), read(&results[1]));
        let mask: Vec<f32> = a.data.chunks_exact(4).map(|p| p[3]).collect();
        worst = worst.min(psnr_masked(&a, &b, &mask));
    }
    println!("splat renders of two identical runs agree to {worst:.1} dB (worst view)");
    assert!(worst > 30.0, "identical runs' splats differ: {worst:.1} dB");
}
