//! Ground-truth propagation benchmark.
//!
//! Two captures of the same turntable (same cameras), rendered with two
//! materials: `--capture` (the look the propagator sees: renders and
//! passes) and `--truth` (the "restyled" look, known in every frame). The
//! truth is given at K evenly spaced keyframes; the propagated frames are
//! compared with it on all other frames: PSNR and SSIM inside the mask, and
//! the temporal warp error between consecutive outputs through the known
//! geometry (the truth's own warp error is printed as the floor that
//! resampling and view-dependent shading leave). Seconds per frame count
//! only frames that were propagated.
//!
//! ```sh
//! .venv/bin/python tests/benchmarks/bench_propagation.py   # renders the captures, then runs this
//! cargo run --release -p splatdiff-propagate --example bench_truth -- \
//!     --capture out/truth/capture/capture --truth out/truth/restyled/capture --keys 4,8,12 --baseline 8
//! ```

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use splatdiff_propagate::io::read_capture;
use splatdiff_propagate::metrics::{psnr_masked, ssim_masked, warp_error};
use splatdiff_propagate::propagate::evenly_spaced_keys;
use splatdiff_propagate::{propagate, Keyframe, Method, PropagateConfig};

fn main() {
    if let Err(e) = run() {
        eprintln!("bench_truth: error: {e}");
        std::process::exit(1);
    }
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let capture_dir = PathBuf::from(arg("--capture").ok_or("--capture DIR is required")?);
    let truth_dir = PathBuf::from(arg("--truth").ok_or("--truth DIR is required")?);
    let ks: Vec<usize> = arg("--keys")
        .unwrap_or_else(|| "4,8,12".into())
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;
    let baseline: Vec<usize> = arg("--baseline")
        .map(|s| s.split(',').map(|v| v.trim().parse()).collect::<Result<_, _>>())
        .transpose()?
        .unwrap_or_default();
    let capture = read_capture(&capture_dir)?;
    let truth = read_capture(&truth_dir)?;
    if truth.frames.len() != capture.frames.len() {
        return Err(
            format!("{} frames in the capture, {} in the truth", capture.frames.len(), truth.frames.len()).into()
        );
    }
    let n = capture.frames.len();
    let (w, h) = (capture.frames[0].geometry.width, capture.frames[0].geometry.height);
    println!("{n} frames at {w}x{h}, {} threads", rayon::current_num_threads());
    // The truth's own warp error: what perfect propagation would still show.
    let floor: f64 = (1..n)
        .map(|i| {
            warp_error(
                &capture.frames[i - 1].geometry,
                &truth.frames[i - 1].render,
                &capture.frames[i].geometry,
                &truth.frames[i].render,
            )
            .0
        })
        .sum::<f64>()
        / (n - 1) as f64;
    println!("warp error of the ground truth itself: {floor:.4}");
    println!("| method | K | PSNR (dB) | SSIM | warp error | s/frame |");
    println!("|---|---|---|---|---|---|");
    let mut runs: Vec<(Method, usize)> = ks.iter().map(|&k| (Method::Geometry, k)).collect();
    runs.extend(baseline.iter().map(|&k| (Method::Patch, k)));
    for (method, k) in runs {
        let idx = evenly_spaced_keys(n, k);
        let keys: Vec<Keyframe> =
            idx.iter().map(|&i| Keyframe { index: i, image: truth.frames[i].render.clone() }).collect();
        let config = PropagateConfig { method, ..Default::default() };
        let start = Instant::now();
        let (out, warnings) = propagate(&capture.frames, &keys, &config, &|_, _| {}, &AtomicBool::new(false))?;
        let seconds = start.elapsed().as_secs_f64() / (n - idx.len()) as f64;
        for w in warnings {
            eprintln!("warning: {w}");
        }
        let (mut psnr, mut ssim, mut m) = (0.0, 0.0, 0);
        for i in (0..n).filter(|i| !idx.contains(i)) {
            let mask = &capture.frames[i].geometry.mask;
            psnr += psnr_masked(&out[i].image, &truth.frames[i].render, mask);
            ssim += ssim_masked(&out[i].image, &truth.frames[i].render, mask);
            m += 1;
        }
        let warp: f64 = (1..n)
            .map(|i| {
                warp_error(
                    &capture.frames[i - 1].geometry,
                    &out[i - 1].image,
                    &capture.frames[i].geometry,
                    &out[i].image,
                )
                .0
            })
            .sum::<f64>()
            / (n - 1) as f64;
        let name = match method {
            Method::Geometry => "splatdiff (geometry)",
            Method::Patch => "EbSynth workflow (patches, before/after crossfade)",
        };
        println!("| {name} | {k} | {:.2} | {:.4} | {warp:.4} | {seconds:.2} |", psnr / m as f64, ssim / m as f64);
        if let Some(dir) = arg("--save") {
            let dir = PathBuf::from(dir)
                .join(format!("{}_k{k}", if method == Method::Geometry { "geometry" } else { "patch" }));
            std::fs::create_dir_all(&dir)?;
            for (i, o) in out.iter().enumerate() {
                o.image.write_png(&dir.join(format!("{}.png", capture.dataset.frames[i].name)))?;
            }
        }
    }
    Ok(())
}
