//! Trains on NeRF-synthetic "lego" and reports quality on its test views.
//!
//! ```text
//! cargo run --release -p splatdiff-train --example bench_lego -- \
//!     [--data ../shared/data/nerf_synthetic_lego] [--res 200] [--steps 2000] \
//!     [--max-splats N] [--init random|PATH.ply] [--init-count N] \
//!     [--init-scale F] [--init-opacity O] [--config JSON] [--save DIR]
//! ```
//!
//! Trains on `transforms_train.json` at `--res` (longer side), from random
//! splats in [-1.5, 1.5]³ (as 3DGS does for synthetic scenes) or a PLY; then
//! prints PSNR and SSIM over every view of `transforms_test.json` composited
//! over white, the splat count, steps per second, wall time and peak memory.
//! `--init-scale` multiplies the random splats' size, `--init-opacity` sets
//! their opacity. `--config` takes a `TrainConfig` as JSON (`--steps` and `--max-splats`
//! override it). Exits 0 with a message when the data folder is absent.

use std::path::PathBuf;
use std::time::Instant;

use glam::Vec3;
use splatdiff_render::gpu::GpuContext;
use splatdiff_render::View;
use splatdiff_train::metrics::{self, WHITE};
use splatdiff_train::trainer::{TrainConfig, Trainer};
use splatdiff_train::{init, load_dataset};

fn peak_memory_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut data: Option<PathBuf> = None;
    let (mut res, mut steps, mut max_splats) = (200u32, 2000u64, None::<usize>);
    let (mut init_kind, mut init_count, mut config_json, mut save) =
        ("random".to_string(), None::<usize>, None::<String>, None::<PathBuf>);
    let (mut init_scale, mut init_opacity) = (1.0f32, None::<f32>);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--data" => data = Some(value()?.into()),
            "--res" => res = value()?.parse()?,
            "--steps" => steps = value()?.parse()?,
            "--max-splats" => max_splats = Some(value()?.parse()?),
            "--init" => init_kind = value()?,
            "--init-count" => init_count = Some(value()?.parse()?),
            "--init-scale" => init_scale = value()?.parse()?,
            "--init-opacity" => init_opacity = Some(value()?.parse()?),
            "--config" => config_json = Some(value()?),
            "--save" => save = Some(value()?.into()),
            "-h" | "--help" => {
                println!("see the doc comment of examples/bench_lego.rs");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let data = data.unwrap_or_else(|| {
        let relative = PathBuf::from("../shared/data/nerf_synthetic_lego");
        if relative.exists() {
            relative
        } else {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/nerf_synthetic_lego")
        }
    });
    if !data.join("transforms_train.json").exists() {
        println!("skipping: no lego data at {} (see shared/data/README.md)", data.display());
        return Ok(());
    }
    let mut config: TrainConfig = match &config_json {
        Some(json) => serde_json::from_str(json).map_err(|e| format!("--config: {e}"))?,
        None => TrainConfig { max_splats: 200_000, ..Default::default() },
    };
    config.steps = steps;
    if let Some(m) = max_splats {
        config.max_splats = m;
    }
    config.max_side = Some(res);

    let wall = Instant::now();
    let ctx = GpuContext::new()?;
    println!("adapter: {}", ctx.adapter_name());
    let train = load_dataset(&data.join("transforms_train.json"), Some(res))?;
    let test = load_dataset(&data.join("transforms_test.json"), Some(res))?;
    println!(
        "{} training and {} test views at {}x{} ({:.1} s to load)",
        train.len(),
        test.len(),
        train[0].width,
        train[0].height,
        wall.elapsed().as_secs_f32()
    );

    let start_splats = if init_kind == "random" {
        let n = init_count.unwrap_or(config.max_splats.min(100_000) / 2).min(config.max_splats);
        let mut s = init::random(Vec3::splat(-1.5), Vec3::splat(1.5), n, config.seed);
        s.log_scales.iter_mut().flatten().for_each(|v| *v += init_scale.ln());
        if let Some(o) = init_opacity {
            s.opacity_logits.fill(init::logit(o));
        }
        s
    } else {
        init::from_points(&splatdiff_scene::read_splats(std::path::Path::new(&init_kind))?)?
    };
    println!("config: {}", serde_json::to_string(&config)?);
    println!("initial splats: {} ({init_kind})", start_splats.len());
    let mut trainer = Trainer::new(&ctx, train, start_splats, config)?;
    trainer.set_checkpoint_dir(save);
    let t0 = Instant::now();
    let mut window = (0.0f64, 0u32);
    let outcome = trainer.train(
        |s| {
            window.0 += s.loss as f64;
            window.1 += 1;
            if s.step % 200 == 0 {
                println!(
                    "step {:>6}  loss {:.4}  splats {:>7}  {:.2} steps/s",
                    s.step,
                    window.0 / window.1 as f64,
                    s.splats,
                    s.step as f64 / t0.elapsed().as_secs_f64()
                );
                window = (0.0, 0);
            }
        },
        || false,
    )?;
    let train_s = t0.elapsed().as_secs_f64();

    let t1 = Instant::now();
    let degree = trainer.active_sh_degree();
    let mut q = Vec::new();
    for img in &test {
        let view = View { camera: img.camera, active_sh_degree: degree, background: Vec3::from(WHITE) };
        q.push(metrics::evaluate(&trainer.render(&view)?, img, WHITE)?);
    }
    let mean = metrics::mean(&q);
    println!("---");
    println!(
        "test views:     {} (all of transforms_test.json), over white, {}x{}",
        q.len(),
        test[0].width,
        test[0].height
    );
    println!("PSNR:           {:.2} dB", mean.psnr);
    println!("SSIM:           {:.4}", mean.ssim);
    println!("splats:         {}", trainer.splat_count());
    println!("steps:          {} in {:.1} s = {:.2} steps/s", outcome.step, train_s, outcome.step as f64 / train_s);
    let t = trainer.timings();
    println!(
        "step time:      render {:.1} s, loss {:.1} s, backward+adam {:.1} s, host strategy/noise {:.1} s",
        t.render, t.loss, t.backward_adam, t.host
    );
    println!("evaluation:     {:.1} s", t1.elapsed().as_secs_f64());
    println!("wall time:      {:.1} s", wall.elapsed().as_secs_f64());
    if let Some(m) = peak_memory_mib() {
        println!("peak memory:    {m:.0} MiB (VmHWM)");
    }
    Ok(())
}
