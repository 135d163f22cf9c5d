//! Parity of our UNet and ControlNet with diffusers, on the tiny fixture
//! models (see tests/fixtures/README.md). Tolerances are max absolute
//! differences; the outputs are O(1).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use splatdiff_diffusion::controlnet::{ControlNetModel, MultiControlNet};
use splatdiff_diffusion::unet::{AttentionMode, CrossFrameAttention, UNet2DConditionModel, UNetConfig};

/// One UNet evaluation, f32: diffusers (classic attention) vs ours. Observed
/// differences are 1e-7..1.5e-6 (summation order, our exp/erf approximations).
const UNET_TOL: f32 = 1e-5;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn refs(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixtures().join(name), &Device::Cpu).unwrap()
}

fn get<'a>(r: &'a HashMap<String, Tensor>, key: &str) -> &'a Tensor {
    r.get(key).unwrap_or_else(|| panic!("fixture tensor {key} missing"))
}

fn scalar(r: &HashMap<String, Tensor>, key: &str) -> f64 {
    get(r, key).to_scalar::<f32>().unwrap() as f64
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
}

fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f32) {
    let d = max_diff(got, want);
    println!("{what}: max abs diff {d:.3e} (tolerance {tol:.0e})");
    assert!(d <= tol, "{what}: max abs diff {d} > {tol}");
}

fn load_unet(model: &str) -> UNet2DConditionModel {
    let dir = fixtures().join(format!("tiny-{model}")).join("unet");
    let config = UNetConfig::from_file(&dir.join("config.json")).unwrap();
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(
            &[dir.join("diffusion_pytorch_model.safetensors")],
            DType::F32,
            &Device::Cpu,
        )
    }
    .unwrap();
    UNet2DConditionModel::new(vb, &config).unwrap()
}

fn unet_step_matches(model: &str) {
    let unet = load_unet(model);
    let r = refs(&format!("ref-{model}-unet.safetensors"));
    let out = unet
        .forward(
            get(&r, "sample"),
            scalar(&r, "timestep"),
            get(&r, "encoder_hidden_states"),
            None,
            &AttentionMode::Plain,
        )
        .unwrap();
    assert_close(&format!("{model} unet out"), &out, get(&r, "out"), UNET_TOL);
    let out = unet
        .forward(
            get(&r, "sample_rect"),
            scalar(&r, "timestep_rect"),
            get(&r, "encoder_hidden_states_rect"),
            None,
            &AttentionMode::Plain,
        )
        .unwrap();
    assert_close(&format!("{model} unet out_rect"), &out, get(&r, "out_rect"), UNET_TOL);
}

#[test]
fn sd15_unet_step_matches_diffusers() {
    unet_step_matches("sd15");
}

#[test]
fn sd21_unet_step_matches_diffusers() {
    unet_step_matches("sd21");
}

#[test]
fn cross_frame_attention_matches_reference_processors() {
    let unet = load_unet("sd15");
    let r = refs("ref-crossframe-sd15.safetensors");
    let t = scalar(&r, "timestep");
    let cases: [(&str, &str, &str, AttentionMode); 6] = [
        ("sample", "encoder_hidden_states", "out_plain", AttentionMode::Plain),
        (
            "sample",
            "encoder_hidden_states",
            "out_first_frame",
            AttentionMode::CrossFrame(CrossFrameAttention::first_frame_only(3)),
        ),
        (
            "sample6",
            "encoder_hidden_states6",
            "out6_first_frame",
            AttentionMode::CrossFrame(CrossFrameAttention::first_frame_only(3)),
        ),
        (
            "sample",
            "encoder_hidden_states",
            "out_concat_anchor0",
            AttentionMode::CrossFrame(CrossFrameAttention::with_anchors(3, vec![0])),
        ),
        (
            "sample",
            "encoder_hidden_states",
            "out_concat_anchors02",
            AttentionMode::CrossFrame(CrossFrameAttention::with_anchors(3, vec![0, 2])),
        ),
        (
            "sample6",
            "encoder_hidden_states6",
            "out6_concat_anchor0",
            AttentionMode::CrossFrame(CrossFrameAttention::with_anchors(3, vec![0])),
        ),
    ];
    for (sample, context, want, mode) in cases {
        let out = unet.forward(get(&r, sample), t, get(&r, context), None, &mode).unwrap();
        assert_close(want, &out, get(&r, want), UNET_TOL);
    }
    // Cross-frame attention changes the non-anchor frames (else the test above proves nothing).
    let plain = get(&r, "out_plain");
    assert!(max_diff(&plain.narrow(0, 1, 2).unwrap(), &get(&r, "out_concat_anchor0").narrow(0, 1, 2).unwrap()) > 1e-3);
    // A layout that does not divide the batch is an error, not a panic.
    let bad = AttentionMode::CrossFrame(CrossFrameAttention::with_anchors(2, vec![0]));
    assert!(unet.forward(get(&r, "sample"), t, get(&r, "encoder_hidden_states"), None, &bad).is_err());
}

fn controlnet_dir() -> PathBuf {
    fixtures().join("tiny-controlnet-sd15")
}

#[test]
fn controlnet_residuals_and_unet_match_diffusers() {
    let unet = load_unet("sd15");
    let net = ControlNetModel::from_folder(&controlnet_dir(), unet.config(), DType::F32, &Device::Cpu).unwrap();
    let r = refs("ref-controlnet-sd15.safetensors");
    let (sample, t, ctx) = (get(&r, "sample"), scalar(&r, "timestep"), get(&r, "encoder_hidden_states"));
    let res = net.forward(sample, t, ctx, get(&r, "controlnet_cond"), scalar(&r, "conditioning_scale")).unwrap();
    assert_eq!(res.down.len(), 6);
    for (i, d) in res.down.iter().enumerate() {
        assert_close(&format!("down_residual_{i}"), d, get(&r, &format!("down_residual_{i}")), UNET_TOL);
    }
    assert_close("mid_residual", &res.mid, get(&r, "mid_residual"), UNET_TOL);
    let out = unet.forward(sample, t, ctx, Some(&res), &AttentionMode::Plain).unwrap();
    assert_close("unet out with controlnet", &out, get(&r, "out"), UNET_TOL);
}

#[test]
fn two_controlnets_sum_their_scaled_residuals() {
    let unet = load_unet("sd15");
    let net = ControlNetModel::from_folder(&controlnet_dir(), unet.config(), DType::F32, &Device::Cpu).unwrap();
    let multi = MultiControlNet::new(vec![net.clone(), net]);
    let r = refs("ref-controlnet-multi-sd15.safetensors");
    let (sample, t, ctx) = (get(&r, "sample"), scalar(&r, "timestep"), get(&r, "encoder_hidden_states"));
    let inputs = [
        (get(&r, "controlnet_cond_a"), scalar(&r, "conditioning_scale_a")),
        (get(&r, "controlnet_cond_b"), scalar(&r, "conditioning_scale_b")),
    ];
    let res = multi.forward(sample, t, ctx, &inputs).unwrap().expect("two active nets");
    for (i, d) in res.down.iter().enumerate() {
        assert_close(&format!("down_residual_sum_{i}"), d, get(&r, &format!("down_residual_sum_{i}")), UNET_TOL);
    }
    assert_close("mid_residual_sum", &res.mid, get(&r, "mid_residual_sum"), UNET_TOL);
    let out = unet.forward(sample, t, ctx, Some(&res), &AttentionMode::Plain).unwrap();
    assert_close("unet out with two controlnets", &out, get(&r, "out"), UNET_TOL);
    // Scale 0 switches a net off: the sum is then the other net's residuals alone.
    let only_b = multi.forward(sample, t, ctx, &[(inputs[0].0, 0.0), inputs[1]]).unwrap().expect("one active net");
    assert_close("mid_residual_b", &only_b.mid, get(&r, "mid_residual_b"), UNET_TOL);
    assert!(multi.forward(sample, t, ctx, &[(inputs[0].0, 0.0), (inputs[1].0, 0.0)]).unwrap().is_none());
}

#[test]
fn mismatched_controlnet_is_refused_naming_its_config() {
    let mut base = load_unet("sd15").config().clone();
    base.cross_attention_dim = 1024;
    let err = ControlNetModel::from_folder(&controlnet_dir(), &base, DType::F32, &Device::Cpu).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("tiny-controlnet-sd15") && msg.contains("config.json"), "{msg}");
    assert!(msg.contains("cross_attention_dim"), "{msg}");
    let mut base = load_unet("sd15").config().clone();
    base.block_out_channels = vec![32, 64];
    let msg = ControlNetModel::from_folder(&controlnet_dir(), &base, DType::F32, &Device::Cpu).unwrap_err().to_string();
    assert!(msg.contains("block_out_channels"), "{msg}");
    let missing = ControlNetModel::from_folder(&fixtures().join("no-such-controlnet"), &base, DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(missing.contains("no-such-controlnet"), "{missing}");
}

#[test]
fn lora_merged_unet_matches_diffusers_fuse_lora() {
    use splatdiff_diffusion::loader::{load_parts, LoadOptions};
    use splatdiff_diffusion::lora::{merge_lora, LoraTargets};
    let r = refs("ref-lora-sd15.safetensors");
    let plain = refs("ref-sd15-unet.safetensors");
    for file in ["lora-kohya.safetensors", "lora-diffusers.safetensors"] {
        let mut parts = load_parts(&fixtures().join("tiny-sd15"), &LoadOptions::default()).unwrap();
        let merged = merge_lora(
            &fixtures().join(file),
            0.7,
            LoraTargets { unet: &mut parts.unet, text_encoder: &mut parts.text_encoder },
        )
        .unwrap();
        assert_eq!(merged.unet, 72, "{file}: UNet modules patched");
        let unet =
            UNet2DConditionModel::new(parts.unet.var_builder(DType::F32, &Device::Cpu), &parts.unet_config).unwrap();
        let out = unet
            .forward(
                get(&r, "sample"),
                scalar(&r, "timestep"),
                get(&r, "encoder_hidden_states"),
                None,
                &AttentionMode::Plain,
            )
            .unwrap();
        assert_close(&format!("{file} unet_out"), &out, get(&r, "unet_out"), UNET_TOL);
        // The LoRA must change the output, or the comparison proves nothing.
        assert!(max_diff(&out, get(&plain, "out")) > 1e-3);
    }
}

#[test]
fn single_file_checkpoint_unet_matches_the_folder() {
    use splatdiff_diffusion::loader::{load_parts, LoadOptions};
    let options = LoadOptions { config_dir: Some(fixtures().join("tiny-sd15")), ..Default::default() };
    let parts = load_parts(&fixtures().join("tiny-sd15.safetensors"), &options).unwrap();
    let unet = UNet2DConditionModel::new(parts.unet.var_builder(DType::F32, &Device::Cpu), &parts.unet_config).unwrap();
    let r = refs("ref-sd15-unet.safetensors");
    let out = unet
        .forward(
            get(&r, "sample"),
            scalar(&r, "timestep"),
            get(&r, "encoder_hidden_states"),
            None,
            &AttentionMode::Plain,
        )
        .unwrap();
    assert_close("single-file unet out", &out, get(&r, "out"), UNET_TOL);
}
