//! Parity of the schedulers with diffusers, against the recorded references
//! in `tests/fixtures/ref-scheduler-*.safetensors` (see the fixtures README),
//! plus checks of the config parsing and the img2img truncation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use super::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn load(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixtures().join(name), &Device::Cpu).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Largest |a - b| / (1 + |b|): absolute error for values up to 1, relative above.
fn max_err(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    values(a).iter().zip(values(b)).map(|(x, y)| (x - y).abs() / (1.0 + y.abs())).fold(0.0, f32::max)
}

/// Scheduler arithmetic tolerance (the fixtures README suggests 1e-5).
const TOL: f32 = 1e-5;

fn check_file(model: &str, kind: SchedulerKind, file: &str) {
    let config = SchedulerConfig::from_file(&fixtures().join(model).join("scheduler/scheduler_config.json")).unwrap();
    let r = load(file);
    for strength in [1.0, 0.6] {
        let p = if strength == 1.0 { "s1.0" } else { "s0.6" };
        let mut s = build_scheduler(kind, &config, 10, strength).unwrap();
        let expected_t = values(&r[&format!("{p}/timesteps")]);
        let got_t: Vec<f32> = s.timesteps().iter().map(|&t| t as f32).collect();
        assert_eq!(got_t, expected_t, "{file} {p} timesteps");
        let init = r["init_noise_sigma"].to_scalar::<f32>().unwrap();
        assert!(
            (s.init_noise_sigma() as f32 - init).abs() <= TOL * init.max(1.0),
            "{file} init_noise_sigma {} vs {init}",
            s.init_noise_sigma()
        );
        let get = |k: &str| r.get(&format!("{p}/{k}")).unwrap_or_else(|| panic!("{file}: no {p}/{k}"));
        let noisy = s.add_noise(get("add_noise/original"), get("add_noise/noise"), 0).unwrap();
        let e = max_err(&noisy, get("add_noise/noisy"));
        assert!(e < TOL, "{file} {p} add_noise error {e}");
        let mut chained = noisy;
        for i in 0..s.timesteps().len() {
            let sample = get(&format!("step{i}/sample"));
            let e = max_err(&chained, sample);
            assert!(e < 10.0 * TOL, "{file} {p} step {i}: chained sample error {e}");
            let scaled = s.scale_model_input(sample, i).unwrap();
            let e = max_err(&scaled, get(&format!("step{i}/scaled_input")));
            assert!(e < TOL, "{file} {p} step {i}: scaled input error {e}");
            let noise = r.get(&format!("{p}/step{i}/noise"));
            let prev = s.step(get(&format!("step{i}/model_output")), i, sample, noise).unwrap();
            let e = max_err(&prev, get(&format!("step{i}/prev_sample")));
            assert!(e < TOL, "{file} {p} step {i}: prev_sample error {e}");
            chained = prev;
        }
    }
}

#[test]
fn ddim_matches_diffusers() {
    check_file("tiny-sd15", SchedulerKind::Ddim, "ref-scheduler-sd15-ddim.safetensors");
    check_file("tiny-sd21", SchedulerKind::Ddim, "ref-scheduler-sd21-ddim.safetensors");
}

#[test]
fn euler_ancestral_matches_diffusers() {
    check_file("tiny-sd15", SchedulerKind::EulerAncestral, "ref-scheduler-sd15-euler-ancestral.safetensors");
    check_file("tiny-sd21", SchedulerKind::EulerAncestral, "ref-scheduler-sd21-euler-ancestral.safetensors");
}

#[test]
fn dpmpp_2m_karras_matches_diffusers() {
    check_file("tiny-sd15", SchedulerKind::DpmPP2MKarras, "ref-scheduler-sd15-dpmpp-2m-karras.safetensors");
    check_file("tiny-sd21", SchedulerKind::DpmPP2MKarras, "ref-scheduler-sd21-dpmpp-2m-karras.safetensors");
}

#[test]
fn lcm_matches_diffusers() {
    check_file("tiny-sd15", SchedulerKind::Lcm, "ref-scheduler-sd15-lcm.safetensors");
    check_file("tiny-sd21", SchedulerKind::Lcm, "ref-scheduler-sd21-lcm.safetensors");
}

#[test]
fn full_schedule_sigmas_match_diffusers() {
    let config = SchedulerConfig::from_file(&fixtures().join("tiny-sd15/scheduler/scheduler_config.json")).unwrap();
    let euler = EulerAncestralScheduler::new(&config, 10, 0).unwrap();
    let dpm = DpmPp2mScheduler::new(&config, 10, 0).unwrap();
    for (name, sigmas, file) in [
        ("euler", euler.sigmas().to_vec(), "ref-scheduler-sd15-euler-ancestral.safetensors"),
        ("dpm", dpm.sigmas().to_vec(), "ref-scheduler-sd15-dpmpp-2m-karras.safetensors"),
    ] {
        let expected = values(&load(file)["sigmas_all"]);
        assert_eq!(sigmas.len(), expected.len(), "{name}");
        for (a, b) in sigmas.iter().zip(&expected) {
            assert!((*a as f32 - b).abs() <= TOL * b.max(1.0), "{name}: {sigmas:?} vs {expected:?}");
        }
    }
}

#[test]
fn img2img_truncation_is_diffusers_get_timesteps() {
    assert_eq!(img2img_start(10, 1.0), 0);
    assert_eq!(img2img_start(10, 0.6), 4);
    assert_eq!(img2img_start(4, 0.6), 2); // int(2.4) = 2 steps run
    assert_eq!(img2img_start(50, 0.75), 13);
    let config = SchedulerConfig::default();
    let err = build_scheduler(SchedulerKind::Ddim, &config, 4, 0.2).err().unwrap().to_string();
    assert!(err.contains("leaves no step"), "{err}");
    assert!(build_scheduler(SchedulerKind::Ddim, &config, 4, 1.5).is_err());
    assert!(build_scheduler(SchedulerKind::Ddim, &config, 0, 1.0).is_err());
}

#[test]
fn stochastic_schedulers_demand_noise() {
    let config = SchedulerConfig::default();
    let x = Tensor::zeros((1, 4, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
    for kind in [SchedulerKind::EulerAncestral, SchedulerKind::Lcm] {
        let mut s = build_scheduler(kind, &config, 4, 1.0).unwrap();
        assert!(s.needs_noise());
        let err = s.step(&x, 0, &x, None).unwrap_err().to_string();
        assert!(err.contains("needs noise"), "{kind}: {err}");
    }
    let mut s = build_scheduler(SchedulerKind::Ddim, &config, 4, 1.0).unwrap();
    assert!(!s.needs_noise());
    assert!(s.step(&x, 4, &x, None).is_err(), "step index past the end");
}

#[test]
fn config_errors_name_the_file() {
    let path = Path::new("model/scheduler/scheduler_config.json");
    let err = SchedulerConfig::from_json("{\"beta_schedule\": \"cubic\"}", path).unwrap_err().to_string();
    assert!(err.contains("scheduler_config.json") && err.contains("cubic"), "{err}");
    let err = SchedulerConfig::from_json("{\"trained_betas\": [0.1, 0.2]}", path).unwrap_err().to_string();
    assert!(err.contains("trained_betas"), "{err}");
    let err = SchedulerConfig::from_file(Path::new("/nonexistent/scheduler_config.json")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/scheduler_config.json"));
}

#[test]
fn scheduler_kind_serde_and_names() {
    for kind in SchedulerKind::ALL {
        let json = serde_json::to_string(&kind).unwrap();
        assert_eq!(json, format!("\"{}\"", kind.name()));
        assert_eq!(serde_json::from_str::<SchedulerKind>(&json).unwrap(), kind);
        assert_eq!(kind.name().parse::<SchedulerKind>().unwrap(), kind);
    }
    assert!("pndm".parse::<SchedulerKind>().is_err());
}

#[test]
fn spacings_follow_diffusers() {
    // DDIM leading with offset 1, trailing and linspace, 1000 train steps, 10 steps.
    let lead = spaced_timesteps(TimestepSpacing::Leading, 1000, 10, 1);
    assert_eq!(lead, vec![901., 801., 701., 601., 501., 401., 301., 201., 101., 1.]);
    let trail = spaced_timesteps(TimestepSpacing::Trailing, 1000, 10, 0);
    assert_eq!(trail, vec![999., 899., 799., 699., 599., 499., 399., 299., 199., 99.]);
    let lin = spaced_timesteps(TimestepSpacing::Linspace, 1000, 4, 0);
    assert_eq!(lin, vec![999., 666., 333., 0.]);
}
