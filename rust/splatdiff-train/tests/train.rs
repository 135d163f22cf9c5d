//! End-to-end training on lavapipe (or any adapter): quality rises on
//! held-out views, the background stays empty, checkpoints resume exactly.

mod common;

use glam::Vec3;
use splatdiff_render::View;
use splatdiff_train::metrics::{self, WHITE};
use splatdiff_train::trainer::{TrainConfig, Trainer};
use splatdiff_train::{split_holdout, TrainImage};

fn held_out_psnr(trainer: &mut Trainer, test: &[TrainImage]) -> f32 {
    let q: Vec<_> = test
        .iter()
        .map(|img| {
            let view = View { camera: img.camera, active_sh_degree: trainer.active_sh_degree(), background: Vec3::ONE };
            metrics::evaluate(&trainer.render(&view).unwrap(), img, WHITE).unwrap()
        })
        .collect();
    metrics::mean(&q).psnr
}

#[test]
fn short_training_learns_the_scene_and_leaves_the_background_empty() {
    let Some(ctx) = common::gpu() else { return };
    let truth = common::ground_truth(120, 1);
    let (train, test) = split_holdout(common::images(&truth, &common::cameras(20)), 5);
    let mut trainer = Trainer::new(&ctx, train.clone(), common::initial(300), common::config(400)).unwrap();
    let before = held_out_psnr(&mut trainer, &test);
    let start = std::time::Instant::now();
    let outcome = trainer.train(|_| {}, || false).unwrap();
    assert_eq!(outcome.step, 400);
    let after = held_out_psnr(&mut trainer, &test);
    println!(
        "held-out PSNR {before:.2} -> {after:.2} dB, {} splats, {:.1} s",
        trainer.splat_count(),
        start.elapsed().as_secs_f32()
    );
    assert!(trainer.splat_count() <= 600);
    assert!(after > before + 5.0, "PSNR {before} -> {after}");
    assert!(after > 22.0, "held-out PSNR {after} dB");

    // Background pixels (transparent in the ground truth) stay transparent.
    let mut sum = 0.0;
    let mut count = 0;
    for img in &train {
        let view = View { camera: img.camera, active_sh_degree: 0, background: Vec3::ZERO };
        let r = trainer.render(&view).unwrap();
        for (a, gt) in r.alpha.iter().zip(&img.rgba) {
            if gt[3] < 0.01 {
                sum += a;
                count += 1;
            }
        }
    }
    let mean_alpha = sum / count as f32;
    println!("mean alpha on background pixels: {mean_alpha:.4} over {count} pixels");
    assert!(mean_alpha < 0.05, "mean background alpha {mean_alpha}");
}

#[test]
fn resumed_training_takes_the_same_next_step() {
    let Some(ctx) = common::gpu() else { return };
    let truth = common::ground_truth(60, 2);
    let images = common::images(&truth, &common::cameras(8));
    let dir = tempfile::tempdir().unwrap();
    let mut config: TrainConfig = common::config(200);
    config.mcmc.refine_start = 10;
    config.mcmc.refine_every = 10;
    let mut a = Trainer::new(&ctx, images.clone(), common::initial(100), config).unwrap();
    for _ in 0..37 {
        a.step().unwrap(); // crosses refinements (splat count changes) and SH degree changes
    }
    a.save_checkpoint(dir.path()).unwrap();
    let mut b = Trainer::resume(&ctx, images, dir.path()).unwrap();
    assert_eq!(b.step_count(), 37);
    assert_eq!(b.splats(), a.splats());
    assert_eq!(b.active_sh_degree(), a.active_sh_degree());
    let (sa, sb) = (a.step().unwrap(), b.step().unwrap());
    assert_eq!(sa.loss.to_bits(), sb.loss.to_bits(), "next step loss {} vs {}", sa.loss, sb.loss);
    // Later steps can differ in the last bits: the GPU backward sums
    // gradients with atomics in no fixed order.
    for _ in 0..10 {
        let (sa, sb) = (a.step().unwrap(), b.step().unwrap());
        assert_eq!(sa.splats, sb.splats);
        assert!((sa.loss - sb.loss).abs() <= 1e-3 * sa.loss.abs(), "step {}: {} vs {}", sa.step, sa.loss, sb.loss);
    }
}

#[test]
fn cancel_leaves_a_readable_checkpoint() {
    let Some(ctx) = common::gpu() else { return };
    let truth = common::ground_truth(40, 3);
    let images = common::images(&truth, &common::cameras(6));
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(100);
    config.checkpoint_every = 10;
    let mut trainer = Trainer::new(&ctx, images.clone(), common::initial(80), config).unwrap();
    trainer.set_checkpoint_dir(Some(dir.path().to_path_buf()));
    let steps = std::cell::Cell::new(0);
    let outcome = trainer.train(|s| steps.set(s.step), || steps.get() >= 25).unwrap();
    assert!(outcome.cancelled && outcome.step == 25);
    let model = splatdiff_scene::read_splats(&dir.path().join("model.ply")).unwrap();
    assert_eq!(model.len(), trainer.splat_count());
    let states: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("state-"))
        .collect();
    assert_eq!(states, vec!["state-00000025.bin".to_string()]);
    let resumed = Trainer::resume(&ctx, images, dir.path()).unwrap();
    assert_eq!(resumed.step_count(), 25);
}

#[test]
fn bad_inputs_are_errors_and_an_empty_view_is_background() {
    let Some(ctx) = common::gpu() else { return };
    let truth = common::ground_truth(20, 4);
    let images = common::images(&truth, &common::cameras(4));
    let mut nan = common::initial(10);
    nan.means[3][1] = f32::NAN;
    let err = Trainer::new(&ctx, images.clone(), nan, common::config(10)).err().unwrap().to_string();
    assert!(err.contains("splat 3"), "{err}");
    let err = Trainer::new(&ctx, vec![], common::initial(10), common::config(10)).err().unwrap().to_string();
    assert!(err.contains("no training images"), "{err}");
    let err = Trainer::new(&ctx, images.clone(), common::initial(10), TrainConfig { steps: 0, ..common::config(1) })
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("steps"), "{err}");
    let err =
        Trainer::resume(&ctx, images.clone(), std::path::Path::new("/nonexistent/ckpt")).err().unwrap().to_string();
    assert!(err.contains("/nonexistent/ckpt/checkpoint.json"), "{err}");

    // A camera looking away from every splat sees only the background.
    let mut trainer = Trainer::new(&ctx, images, common::initial(10), common::config(10)).unwrap();
    let k = splatdiff_scene::Intrinsics::from_fov_x(0.75, 16, 16);
    let away = splatdiff_scene::Camera::look_at(Vec3::new(0.0, 0.0, 3.0), Vec3::new(0.0, 0.0, 10.0), k);
    let bg = Vec3::new(0.2, 0.4, 0.6);
    let img = trainer.render(&View { camera: away, active_sh_degree: 0, background: bg }).unwrap();
    assert!(img.color.iter().all(|c| (Vec3::from(*c) - bg).length() < 1e-6));
    assert!(img.alpha.iter().all(|&a| a == 0.0));
}

#[test]
fn config_rejects_unknown_fields() {
    let err = serde_json::from_str::<TrainConfig>(r#"{"steps": 10, "stpes": 3}"#).unwrap_err().to_string();
    assert!(err.contains("stpes"), "{err}");
    let c: TrainConfig = serde_json::from_str(r#"{"steps": 1000, "mcmc": {"refine_every": 50}}"#).unwrap();
    assert_eq!((c.steps, c.mcmc.refine_every, c.sh_interval()), (1000, 50, 250));
    assert_eq!(TrainConfig::default().sh_interval(), 1000);
    let c = TrainConfig { steps: 100, ..Default::default() };
    assert!((c.lr_means_at(0) - 1.6e-4).abs() < 1e-9 && (c.lr_means_at(100) - 1.6e-6).abs() < 1e-10);
}
