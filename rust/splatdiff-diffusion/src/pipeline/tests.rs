//! The pipeline against diffusers' recorded img2img runs, and its modes,
//! padding, progress and cancellation on the tiny fixture model.

use std::collections::HashMap;

use super::*;
use crate::model::ModelOptions;
use crate::test_support::{fixtures, load_ref, max_abs_diff};

fn tiny(name: &str) -> StableDiffusion {
    StableDiffusion::load(&fixtures().join(name), &ModelOptions::default(), &Device::Cpu).unwrap()
}

fn input_image() -> RgbImage {
    image::open(fixtures().join("img2img-input.png")).unwrap().to_rgb8()
}

/// Replays the noise diffusers drew in a reference run.
struct RecordedNoise(HashMap<String, Tensor>);

impl NoiseSource for RecordedNoise {
    fn noise(&mut self, image: usize, use_: NoiseUse, shape: &[usize], _: DType, _: &Device) -> Result<Tensor> {
        assert_eq!(image, 0);
        let key = match use_ {
            NoiseUse::VaeSample => "vae_sample_noise".to_string(),
            NoiseUse::Initial => "init_noise".to_string(),
            NoiseUse::Step(i) => format!("step{i}/noise"),
        };
        let t = self.0.get(&key).unwrap_or_else(|| panic!("no recorded {key}")).clone();
        assert_eq!(t.dims(), shape, "{key}");
        Ok(t)
    }
}

/// Full img2img runs (strength 0.6, 4 steps, guidance 5) match diffusers'
/// `StableDiffusionImg2ImgPipeline` with its recorded noise injected.
#[test]
fn img2img_matches_diffusers() {
    for (model_name, short) in [("tiny-sd15", "sd15"), ("tiny-sd21", "sd21")] {
        let model = tiny(model_name);
        for (kind, sname) in [(SchedulerKind::Ddim, "ddim"), (SchedulerKind::EulerAncestral, "euler-ancestral")] {
            let r = load_ref(&format!("ref-img2img-{short}-{sname}.safetensors"));
            let config = DiffusionConfig {
                prompt: "a red house by the sea, oil painting".into(),
                negative_prompt: "blurry, low quality".into(),
                strength: 0.6,
                steps: 4,
                guidance_scale: 5.0,
                scheduler: kind,
                ..DiffusionConfig::default()
            };
            let prompts = PromptEmbeddings::encode(&model, &config.prompt, &config.negative_prompt).unwrap();
            let nets = MultiControlNet::default();
            let runner = Runner { model: &model, prompts: &prompts, controlnets: &nets, config: &config };
            let image = images_to_tensor(&[input_image()], -1.0, 1.0, DType::F32, &Device::Cpu).unwrap();
            let mut noise = RecordedNoise(r.clone());
            let mut control = RunControl::default();
            let mut progress = StepCounter { done: 0, total: 2 };
            let out = runner
                .denoise(&image, &[], &[0], &AttentionMode::Plain, &mut noise, &mut control, &mut progress)
                .unwrap();
            let err = max_abs_diff(&out, &r["out_image"]);
            println!("{short} {sname}: max abs error {err:e}");
            assert!(err < 1e-4, "{short} {sname}: image error {err}");
            assert_eq!(progress.done, 2);

            // The public entry point gives the same picture in 8 bits.
            let keyframe = Keyframe { image: input_image(), controls: vec![] };
            let restyled =
                img2img(&model, &prompts, &nets, &config, &[keyframe], &mut RecordedNoise(r.clone()), &mut control)
                    .unwrap();
            let expected = tensor_to_images(&r["out_image"]).unwrap();
            let worst = restyled.images[0]
                .as_raw()
                .iter()
                .zip(expected[0].as_raw())
                .map(|(a, b)| (*a as i32 - *b as i32).abs())
                .max()
                .unwrap();
            assert!(worst <= 1, "{short} {sname}: 8-bit output differs by {worst}");
        }
    }
}

fn small_keyframes(n: usize, w: u32, h: u32) -> Vec<Keyframe> {
    (0..n)
        .map(|i| Keyframe {
            image: RgbImage::from_fn(w, h, |x, y| Rgb([(x * 9) as u8, (y * 7 + 40 * i as u32) as u8, 120])),
            controls: vec![],
        })
        .collect()
}

fn quick_config(consistency: ConsistencyMode) -> DiffusionConfig {
    DiffusionConfig {
        prompt: "a house".into(),
        negative_prompt: "blurry".into(),
        steps: 2,
        strength: 1.0,
        scheduler: SchedulerKind::EulerAncestral,
        consistency,
        seed: 7,
        ..DiffusionConfig::default()
    }
}

#[test]
fn seeded_runs_reproduce_and_modes_run() {
    let model = tiny("tiny-sd15");
    let nets = MultiControlNet::default();
    let config = quick_config(ConsistencyMode::None);
    let prompts = PromptEmbeddings::encode(&model, &config.prompt, &config.negative_prompt).unwrap();
    // 20x12 is not a multiple of 8: padded and cropped back, with a note.
    let keyframes = small_keyframes(2, 20, 12);
    let run = |config: &DiffusionConfig| {
        img2img(
            &model,
            &prompts,
            &nets,
            config,
            &keyframes,
            &mut NoiseRng::new(config.seed),
            &mut RunControl::default(),
        )
        .unwrap()
    };
    let a = run(&config);
    let b = run(&config);
    assert_eq!(a.images, b.images, "same seed, same images");
    assert_eq!(a.images[0].dimensions(), (20, 12));
    assert!(a.messages.iter().any(|m| m.contains("padded to 24x16")), "{:?}", a.messages);
    let c = run(&DiffusionConfig { seed: 8, ..config.clone() });
    assert_ne!(a.images, c.images, "another seed, other images");

    // Cross-frame: each frame gets the noise it gets alone, so with the
    // anchor being the frame itself (one frame) the result is per-frame's.
    let single = &keyframes[..1];
    let alone =
        img2img(&model, &prompts, &nets, &config, single, &mut NoiseRng::new(7), &mut RunControl::default()).unwrap();
    let cf = quick_config(ConsistencyMode::CrossFrame { anchors: vec![0] });
    let cross =
        img2img(&model, &prompts, &nets, &cf, single, &mut NoiseRng::new(7), &mut RunControl::default()).unwrap();
    assert_eq!(alone.images, cross.images);
    let two = run(&cf);
    assert_eq!(two.images.len(), 2);
    assert_eq!(two.images[1].dimensions(), (20, 12));

    let grid = run(&quick_config(ConsistencyMode::Grid { cols: 2 }));
    assert_eq!(grid.images.len(), 2);
    assert_eq!(grid.images[0].dimensions(), (20, 12));

    let bad = quick_config(ConsistencyMode::CrossFrame { anchors: vec![5] });
    let err = img2img(&model, &prompts, &nets, &bad, &keyframes, &mut NoiseRng::new(1), &mut RunControl::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("anchor keyframe 5"), "{err}");
}

#[test]
fn progress_is_reported_and_cancel_stops_between_steps() {
    let model = tiny("tiny-sd15");
    let nets = MultiControlNet::default();
    let config = DiffusionConfig { steps: 4, ..quick_config(ConsistencyMode::None) };
    let prompts = PromptEmbeddings::encode(&model, &config.prompt, &config.negative_prompt).unwrap();
    let keyframes = small_keyframes(2, 16, 16);
    let cancel = AtomicBool::new(false);
    let mut seen = Vec::new();
    let mut on_progress = |p: Progress| {
        seen.push(p);
        if p.stage == Stage::Denoising && p.step == 3 {
            cancel.store(true, Ordering::Relaxed);
        }
    };
    let mut control = RunControl { progress: Some(&mut on_progress), cancel: Some(&cancel) };
    let err = img2img(&model, &prompts, &nets, &config, &keyframes, &mut NoiseRng::new(0), &mut control).unwrap_err();
    assert!(matches!(err, DiffusionError::Cancelled), "{err}");
    let denoise: Vec<(usize, usize)> =
        seen.iter().filter(|p| p.stage == Stage::Denoising).map(|p| (p.step, p.total)).collect();
    assert_eq!(denoise, vec![(1, 8), (2, 8), (3, 8)]);
}

#[test]
fn grid_tiles_and_splits_back() {
    let keyframes = small_keyframes(3, 4, 2);
    let grid = Grid::new(&keyframes, 2).unwrap();
    let canvas = grid.tile(&keyframes);
    assert_eq!(canvas.image.dimensions(), (8, 4));
    assert_eq!(canvas.image.get_pixel(7, 3).0, [128, 128, 128], "empty cell is grey");
    let back = grid.split(&canvas.image);
    for (k, b) in keyframes.iter().zip(&back) {
        assert_eq!(&k.image, b);
    }
    let mut mixed = small_keyframes(2, 4, 2);
    mixed[1].image = RgbImage::new(5, 2);
    assert!(Grid::new(&mixed, 2).is_err());
}

#[test]
fn padding_repeats_edges() {
    let img = RgbImage::from_fn(3, 2, |x, y| Rgb([x as u8, y as u8, 0]));
    let p = pad_edge(&img, 8, 8);
    assert_eq!(p.get_pixel(7, 7).0, [2, 1, 0]);
    assert_eq!(p.get_pixel(1, 5).0, [1, 1, 0]);
    assert_eq!(p.get_pixel(5, 0).0, [2, 0, 0]);
}

#[test]
fn control_ranges_follow_diffusers_keep() {
    let unit = ControlUnit { kind: ControlKind::Depth, model: "cn".into(), weight: 0.8, start: 0.25, end: 0.75 };
    let scales: Vec<f64> = (0..4).map(|i| unit.scale_at(i, 4)).collect();
    assert_eq!(scales, vec![0.0, 0.8, 0.8, 0.0]);
    let full = ControlUnit { start: 0.0, end: 1.0, ..unit };
    assert!((0..3).all(|i| full.scale_at(i, 3) == 0.8));
}

#[test]
fn config_round_trips_through_json_and_validates() {
    let config = DiffusionConfig {
        consistency: ConsistencyMode::CrossFrame { anchors: vec![0, 2] },
        controlnets: vec![ControlUnit {
            kind: ControlKind::Canny,
            model: "models/canny".into(),
            weight: 0.5,
            start: 0.0,
            end: 0.8,
        }],
        ..DiffusionConfig::default()
    };
    let json = serde_json::to_string(&config).unwrap();
    assert!(json.contains("\"mode\":\"cross-frame\"") && json.contains("\"scheduler\":\"dpmpp-2m\""), "{json}");
    assert_eq!(serde_json::from_str::<DiffusionConfig>(&json).unwrap(), config);
    let grid: ConsistencyMode = serde_json::from_str("{\"mode\":\"grid\",\"cols\":3}").unwrap();
    assert_eq!(grid, ConsistencyMode::Grid { cols: 3 });
    config.validate().unwrap();
    let bad = DiffusionConfig { strength: 0.0, ..config.clone() };
    assert!(bad.validate().is_err());
    let mut bad = config.clone();
    bad.controlnets[0].start = 0.9;
    assert!(bad.validate().unwrap_err().to_string().contains("start 0.9"));
}

/// Two ControlNets with their own scales and step ranges, as diffusers'
/// `StableDiffusionControlNetImg2ImgPipeline` (DDIM, strength 0.5, 6 steps).
#[test]
fn controlnet_img2img_matches_diffusers() {
    let model = tiny("tiny-sd15");
    let r = load_ref("ref-controlnet-img2img-sd15-ddim.safetensors");
    let net = || {
        crate::controlnet::ControlNetModel::from_folder(
            &fixtures().join("tiny-controlnet-sd15"),
            model.unet.config(),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap()
    };
    let nets = MultiControlNet::new(vec![net(), net()]);
    let unit =
        |kind, weight, start, end| ControlUnit { kind, model: "tiny-controlnet-sd15".into(), weight, start, end };
    let config = DiffusionConfig {
        prompt: "a red house by the sea, oil painting".into(),
        negative_prompt: "blurry, low quality".into(),
        strength: 0.5,
        steps: 6,
        guidance_scale: 5.0,
        scheduler: SchedulerKind::Ddim,
        controlnets: vec![unit(ControlKind::Depth, 0.8, 0.0, 0.5), unit(ControlKind::Canny, 0.5, 0.4, 1.0)],
        ..DiffusionConfig::default()
    };
    let prompts = PromptEmbeddings::encode(&model, &config.prompt, &config.negative_prompt).unwrap();
    let png = |name: &str| image::open(fixtures().join(name)).unwrap().to_rgb8();
    let controls = [png("control-depth.png"), png("control-edges.png")];
    let runner = Runner { model: &model, prompts: &prompts, controlnets: &nets, config: &config };
    let image = images_to_tensor(&[input_image()], -1.0, 1.0, DType::F32, &Device::Cpu).unwrap();
    let control_tensors: Vec<Tensor> = controls
        .iter()
        .map(|c| images_to_tensor(std::slice::from_ref(c), 0.0, 1.0, DType::F32, &Device::Cpu).unwrap())
        .collect();
    assert!(max_abs_diff(&control_tensors[0], &r["control_image_a"]) < 1e-6);
    assert!(max_abs_diff(&control_tensors[1], &r["control_image_b"]) < 1e-6);
    let mut progress = StepCounter { done: 0, total: 3 };
    let out = runner
        .denoise(
            &image,
            &control_tensors,
            &[0],
            &AttentionMode::Plain,
            &mut RecordedNoise(r.clone()),
            &mut RunControl::default(),
            &mut progress,
        )
        .unwrap();
    let err = max_abs_diff(&out, &r["out_image"]);
    println!("controlnet img2img: max abs error {err:e}");
    assert!(err < 1e-4, "image error {err}");
    // Without the ControlNets the picture is measurably different, so the
    // comparison above does test them.
    let plain = DiffusionConfig { controlnets: vec![], ..config.clone() };
    let none = MultiControlNet::default();
    let runner = Runner { model: &model, prompts: &prompts, controlnets: &none, config: &plain };
    let out_plain = runner
        .denoise(
            &image,
            &[],
            &[0],
            &AttentionMode::Plain,
            &mut RecordedNoise(r.clone()),
            &mut RunControl::default(),
            &mut progress,
        )
        .unwrap();
    let without = max_abs_diff(&out_plain, &r["out_image"]);
    println!("controlnet img2img without the ControlNets: max abs difference {without:e}");
    assert!(without > 10.0 * err.max(1e-5), "ControlNets change nothing: {without} vs {err}");
}
