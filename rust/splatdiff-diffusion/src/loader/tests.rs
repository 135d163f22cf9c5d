use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

use super::*;
use crate::clip::ClipTextModel;
use crate::test_support::{fixtures, load_ref, max_abs_diff};
use crate::vae::AutoencoderKL;

fn folder(name: &str) -> ModelParts {
    load_parts(&fixtures().join(name), &LoadOptions::default()).unwrap()
}

fn single_file_with_config(family_dir: &str) -> ModelParts {
    let options = LoadOptions { config_dir: Some(fixtures().join(family_dir)), ..LoadOptions::default() };
    load_parts(&fixtures().join("tiny-sd15.safetensors"), &options).unwrap()
}

fn text_out(parts: &ModelParts, ids: &Tensor) -> Tensor {
    let vb = parts.text_encoder.var_builder(DType::F32, &Device::Cpu);
    ClipTextModel::new(vb, &parts.text_encoder_config).unwrap().forward(ids).unwrap()
}

fn vae(parts: &ModelParts) -> AutoencoderKL {
    AutoencoderKL::new(parts.vae.var_builder(DType::F32, &Device::Cpu), &parts.vae_config).unwrap()
}

#[test]
fn folders_load_with_their_family_and_configs() {
    let sd15 = folder("tiny-sd15");
    assert_eq!(sd15.family, Family::Sd15);
    assert_eq!(sd15.scheduler_config.prediction_type, PredictionType::Epsilon);
    assert_eq!(sd15.unet_config.block_out_channels, vec![16, 32]);
    assert_eq!(sd15.tokenizer.pad_id(), sd15.tokenizer.eos_id());
    let sd21 = folder("tiny-sd21");
    assert_eq!(sd21.family, Family::Sd21);
    assert_eq!(sd21.scheduler_config.prediction_type, PredictionType::VPrediction);
    assert_eq!(sd21.tokenizer.pad_id(), 0);
    let forced = load_parts(
        &fixtures().join("tiny-sd21"),
        &LoadOptions { prediction_type: Some(PredictionType::Epsilon), ..LoadOptions::default() },
    )
    .unwrap();
    assert_eq!(forced.scheduler_config.prediction_type, PredictionType::Epsilon);
}

/// The single-file checkpoint (LDM layout, written by the fixture script's
/// own key mapping) loads to the folder's exact tensors and outputs.
#[test]
fn single_file_matches_folder() {
    let dir = folder("tiny-sd15");
    let file = single_file_with_config("tiny-sd15");
    assert_eq!(file.family, Family::Sd15);

    let r = load_ref("ref-sd15-text-encoder.safetensors");
    let ids = r["input_ids"].to_dtype(DType::U32).unwrap();
    let (a, b) = (text_out(&dir, &ids), text_out(&file, &ids));
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    assert!(max_abs_diff(&b, &r["last_hidden_state"]) < 1e-4);

    let r = load_ref("ref-sd15-vae.safetensors");
    let (va, vb) = (vae(&dir), vae(&file));
    let (ma, mb) = (va.encode(&r["image"]).unwrap(), vb.encode(&r["image"]).unwrap());
    assert_eq!(max_abs_diff(&ma.mean, &mb.mean), 0.0);
    assert_eq!(max_abs_diff(&ma.logvar, &mb.logvar), 0.0);
    let da = va.decode(&r["latents"]).unwrap();
    let db = vb.decode(&r["latents"]).unwrap();
    assert_eq!(max_abs_diff(&da, &db), 0.0);

    // UNet and VAE: the same names and bit-identical tensors.
    for (name, x, y) in [("unet", &dir.unet, &file.unet), ("vae", &dir.vae, &file.vae)] {
        let xs: Vec<&str> = x.names().collect();
        let ys: Vec<&str> = y.names().collect();
        assert_eq!(xs, ys, "{name} tensor names differ");
        for n in xs {
            let d = max_abs_diff(&x.get(n).unwrap(), &y.get(n).unwrap());
            assert_eq!(d, 0.0, "{name} tensor {n} differs");
        }
    }
}

/// Without a config folder, a single file's configs come from its shapes.
#[test]
fn single_file_configs_are_inferred_from_shapes() {
    let path = fixtures().join("tiny-sd15.safetensors");
    let file = MappedFile::open(&path).unwrap();
    let shapes = file.shapes();
    let unet = infer_unet_config(&path, &shapes, Family::Sd15).unwrap();
    let reference = read_json(&fixtures().join("tiny-sd15/unet/config.json")).unwrap();
    for key in [
        "in_channels",
        "out_channels",
        "block_out_channels",
        "down_block_types",
        "up_block_types",
        "layers_per_block",
        "attention_head_dim",
        "cross_attention_dim",
        "use_linear_projection",
    ] {
        assert_eq!(unet[key], reference[key], "unet config `{key}`");
    }
    let vae = infer_vae_config(&path, &shapes).unwrap();
    let reference = read_json(&fixtures().join("tiny-sd15/vae/config.json")).unwrap();
    for key in ["in_channels", "out_channels", "block_out_channels", "layers_per_block", "latent_channels"] {
        assert_eq!(vae[key], reference[key], "vae config `{key}`");
    }
    let weights = remap_single_file(&path, file, &shapes, Family::Sd15).unwrap();
    let text = infer_text_config(&path, &weights.text_encoder.shapes().unwrap(), Family::Sd15);
    // The tiny text encoder's width (32) does not reveal its heads: say so.
    let err = text.unwrap_err().to_string();
    assert!(err.contains("attention heads") && err.contains("config_dir"), "{err}");
    // And the whole load reports it instead of guessing.
    let err = load_parts(&path, &LoadOptions::default()).unwrap_err().to_string();
    assert!(err.contains("config"), "{err}");
}

fn write_safetensors(path: &std::path::Path, tensors: HashMap<String, Tensor>) {
    candle_core::safetensors::save(&tensors, path).unwrap();
}

fn dummy(keys: &[&str]) -> HashMap<String, Tensor> {
    keys.iter().map(|k| (k.to_string(), Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap())).collect()
}

#[test]
fn other_families_and_unknown_files_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("sdxl", "conditioner.embedders.0.transformer.text_model.x", "SDXL"),
        ("sd3", "model.diffusion_model.joint_blocks.0.x", "SD3"),
        ("flux", "double_blocks.0.img_attn.qkv.weight", "Flux"),
        ("lora", "lora_unet_down_blocks_0_x.lora_down.weight", "LoRA"),
        ("other", "some.random.tensor", "unknown checkpoint layout"),
    ];
    for (name, key, expect) in cases {
        let path = dir.path().join(format!("{name}.safetensors"));
        write_safetensors(&path, dummy(&[key]));
        let err = load_parts(&path, &LoadOptions::default()).unwrap_err();
        assert!(matches!(err, DiffusionError::Unsupported(_)), "{name}: {err}");
        assert!(err.to_string().contains(expect), "{name}: {err}");
    }
    let not_st = dir.path().join("garbage.safetensors");
    std::fs::write(&not_st, b"not a safetensors file").unwrap();
    let err = load_parts(&not_st, &LoadOptions::default()).unwrap_err().to_string();
    assert!(err.contains("garbage.safetensors"), "{err}");
    let ckpt = dir.path().join("v1-5-pruned.ckpt");
    std::fs::write(&ckpt, b"PK\x03\x04 pickle").unwrap();
    let err = load_parts(&ckpt, &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, DiffusionError::Unsupported(_)) && err.to_string().contains("safetensors"), "{err}");
    let err = load_parts(&dir.path().join("nope"), &LoadOptions::default()).unwrap_err().to_string();
    assert!(err.contains("nope"), "{err}");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn partial_folders_name_the_missing_file() {
    let tmp = tempfile::tempdir().unwrap();
    let removals = [
        "vae/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
        "tokenizer/merges.txt",
        "scheduler/scheduler_config.json",
    ];
    for (i, missing) in removals.iter().enumerate() {
        let dir = tmp.path().join(format!("m{i}"));
        copy_dir(&fixtures().join("tiny-sd15"), &dir);
        std::fs::remove_file(dir.join(missing)).unwrap();
        let err = load_parts(&dir, &LoadOptions::default()).unwrap_err().to_string();
        assert!(err.contains(missing), "removing {missing}: {err}");
    }
    // A folder of an unsupported pipeline is named as such.
    let dir = tmp.path().join("xl");
    copy_dir(&fixtures().join("tiny-sd15"), &dir);
    std::fs::write(dir.join("model_index.json"), r#"{"_class_name": "StableDiffusionXLPipeline"}"#).unwrap();
    let err = load_parts(&dir, &LoadOptions::default()).unwrap_err().to_string();
    assert!(err.contains("SDXL"), "{err}");
}

#[test]
fn a_missing_tensor_is_named_with_its_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    copy_dir(&fixtures().join("tiny-sd15"), &dir);
    let path = dir.join("vae/diffusion_pytorch_model.safetensors");
    let mut tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    tensors.remove("decoder.conv_out.weight");
    write_safetensors(&path, tensors);
    let parts = load_parts(&dir, &LoadOptions::default()).unwrap();
    let err =
        AutoencoderKL::new(parts.vae.var_builder(DType::F32, &Device::Cpu), &parts.vae_config).unwrap_err().to_string();
    assert!(err.contains("decoder.conv_out.weight") && err.contains("diffusion_pytorch_model.safetensors"), "{err}");
}

/// SD 2's OpenCLIP text tower (fused q/k/v, one layer past the penultimate)
/// loads to the same text encoder as its diffusers form.
#[test]
fn openclip_text_tower_is_remapped() {
    let te_dir = fixtures().join("tiny-sd21/text_encoder");
    let te = candle_core::safetensors::load(te_dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let get = |k: &str| te[&format!("text_model.{k}")].clone();
    // Base: the sd15 single file's UNet and VAE, its CLIP replaced by OpenCLIP keys.
    let mut tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load(fixtures().join("tiny-sd15.safetensors"), &Device::Cpu)
            .unwrap()
            .into_iter()
            .filter(|(k, _)| !k.starts_with("cond_stage_model."))
            .collect();
    let mut put = |k: &str, t: Tensor| {
        tensors.insert(format!("cond_stage_model.model.{k}"), t);
    };
    put("token_embedding.weight", get("embeddings.token_embedding.weight"));
    put("positional_embedding", get("embeddings.position_embedding.weight"));
    put("ln_final.weight", get("final_layer_norm.weight"));
    put("ln_final.bias", get("final_layer_norm.bias"));
    put("text_projection", Tensor::zeros((32, 32), DType::F32, &Device::Cpu).unwrap());
    for i in 0..5 {
        // Layer 4 does not exist in the diffusers model: a copy of layer 3,
        // which SD 2 skips (penultimate layer).
        let l = |k: &str| get(&format!("encoder.layers.{}.{k}", i.min(3)));
        let fused = |p: &str| {
            Tensor::cat(
                &[
                    l(&format!("self_attn.q_proj.{p}")),
                    l(&format!("self_attn.k_proj.{p}")),
                    l(&format!("self_attn.v_proj.{p}")),
                ],
                0,
            )
            .unwrap()
        };
        let b = format!("transformer.resblocks.{i}");
        put(&format!("{b}.attn.in_proj_weight"), fused("weight"));
        put(&format!("{b}.attn.in_proj_bias"), fused("bias"));
        for (ours, theirs) in [
            ("self_attn.out_proj", "attn.out_proj"),
            ("layer_norm1", "ln_1"),
            ("layer_norm2", "ln_2"),
            ("mlp.fc1", "mlp.c_fc"),
            ("mlp.fc2", "mlp.c_proj"),
        ] {
            put(&format!("{b}.{theirs}.weight"), l(&format!("{ours}.weight")));
            put(&format!("{b}.{theirs}.bias"), l(&format!("{ours}.bias")));
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("sd2.safetensors");
    write_safetensors(&path, tensors);

    let file = MappedFile::open(&path).unwrap();
    let shapes = file.shapes();
    assert_eq!(detect_family(&path, &shapes).unwrap(), Family::Sd21);
    let weights = remap_single_file(&path, file, &shapes, Family::Sd21).unwrap();
    let inferred = infer_text_config(&path, &weights.text_encoder.shapes().unwrap(), Family::Sd21);
    assert!(inferred.is_err(), "width 32 cannot give heads");

    let options = LoadOptions { config_dir: Some(fixtures().join("tiny-sd21")), ..LoadOptions::default() };
    let parts = load_parts(&path, &options).unwrap();
    assert_eq!(parts.family, Family::Sd21);
    let r = load_ref("ref-sd21-text-encoder.safetensors");
    let ids = r["input_ids"].to_dtype(DType::U32).unwrap();
    let diff = max_abs_diff(&text_out(&parts, &ids), &r["last_hidden_state"]);
    assert!(diff < 1e-4, "OpenCLIP remap: max abs diff {diff}");
}

#[test]
fn ldm_unet_names_map_to_diffusers() {
    let sd = LdmUnetLayout { levels: 4, layers_per_block: 2 };
    let cases = [
        ("time_embed.0.weight", "time_embedding.linear_1.weight"),
        ("input_blocks.0.0.bias", "conv_in.bias"),
        ("input_blocks.2.0.in_layers.2.weight", "down_blocks.0.resnets.1.conv1.weight"),
        ("input_blocks.3.0.op.weight", "down_blocks.0.downsamplers.0.conv.weight"),
        ("input_blocks.4.0.skip_connection.bias", "down_blocks.1.resnets.0.conv_shortcut.bias"),
        (
            "input_blocks.7.1.transformer_blocks.0.attn2.to_k.weight",
            "down_blocks.2.attentions.0.transformer_blocks.0.attn2.to_k.weight",
        ),
        ("middle_block.0.emb_layers.1.weight", "mid_block.resnets.0.time_emb_proj.weight"),
        ("middle_block.1.proj_in.weight", "mid_block.attentions.0.proj_in.weight"),
        ("middle_block.2.out_layers.3.bias", "mid_block.resnets.1.conv2.bias"),
        ("output_blocks.2.1.conv.weight", "up_blocks.0.upsamplers.0.conv.weight"),
        ("output_blocks.5.2.conv.bias", "up_blocks.1.upsamplers.0.conv.bias"),
        ("output_blocks.5.1.norm.weight", "up_blocks.1.attentions.2.norm.weight"),
        ("output_blocks.11.0.out_layers.0.weight", "up_blocks.3.resnets.2.norm2.weight"),
        ("out.2.weight", "conv_out.weight"),
    ];
    for (ldm, diffusers) in cases {
        assert_eq!(sd.rename(ldm).as_deref(), Some(diffusers), "{ldm}");
    }
    assert_eq!(
        vae_rename("decoder.up.3.upsample.conv.weight", 4),
        Some(("decoder.up_blocks.0.upsamplers.0.conv.weight".into(), Transform::AsIs))
    );
    assert_eq!(
        vae_rename("encoder.mid.attn_1.proj_out.weight", 4),
        Some(("encoder.mid_block.attentions.0.to_out.0.weight".into(), Transform::Conv1x1ToLinear))
    );
}

/// diffusers ControlNet name -> the original (cldm) single-file name, the
/// inverse of `controlnet_rename`, written independently for the test.
fn to_cldm(name: &str, per: usize, hint_blocks: usize) -> String {
    let resnet = |leaf: &str| {
        [
            ("norm1.", "in_layers.0."),
            ("conv1.", "in_layers.2."),
            ("norm2.", "out_layers.0."),
            ("conv2.", "out_layers.3."),
            ("time_emb_proj.", "emb_layers.1."),
            ("conv_shortcut.", "skip_connection."),
        ]
        .iter()
        .find_map(|(d, l)| leaf.strip_prefix(d).map(|r| format!("{l}{r}")))
        .unwrap_or_else(|| leaf.to_string())
    };
    let parts: Vec<&str> = name.split('.').collect();
    let tail = |n: usize| parts[n..].join(".");
    match parts[0] {
        "conv_in" => format!("input_blocks.0.0.{}", tail(1)),
        "time_embedding" => format!("time_embed.{}.{}", if parts[1] == "linear_1" { 0 } else { 2 }, tail(2)),
        "controlnet_down_blocks" => format!("zero_convs.{}.0.{}", parts[1], tail(2)),
        "controlnet_mid_block" => format!("middle_block_out.0.{}", tail(1)),
        "controlnet_cond_embedding" => {
            let conv = match parts[1] {
                "conv_in" => 0,
                "conv_out" => hint_blocks + 1,
                _ => parts[2].parse::<usize>().unwrap() + 1,
            };
            let leaf = if parts[1] == "blocks" { tail(3) } else { tail(2) };
            format!("input_hint_block.{}.{leaf}", 2 * conv)
        }
        "mid_block" => match (parts[1], parts[2]) {
            ("resnets", "0") => format!("middle_block.0.{}", resnet(&tail(3))),
            ("attentions", _) => format!("middle_block.1.{}", tail(3)),
            _ => format!("middle_block.2.{}", resnet(&tail(3))),
        },
        "down_blocks" => {
            let b: usize = parts[1].parse().unwrap();
            match parts[2] {
                "resnets" => {
                    format!("input_blocks.{}.0.{}", 1 + b * per + parts[3].parse::<usize>().unwrap(), resnet(&tail(4)))
                }
                "attentions" => {
                    format!("input_blocks.{}.1.{}", 1 + b * per + parts[3].parse::<usize>().unwrap(), tail(4))
                }
                _ => format!("input_blocks.{}.0.op.{}", b * per + per, tail(5)),
            }
        }
        other => panic!("unexpected ControlNet key {other}"),
    }
}

#[test]
fn original_layout_controlnet_loads_like_its_folder() {
    use crate::controlnet::ControlNetModel;
    let dir = fixtures().join("tiny-controlnet-sd15");
    let folder = candle_core::safetensors::load(dir.join("diffusion_pytorch_model.safetensors"), &Device::Cpu).unwrap();
    let hint_blocks = 6;
    let cldm: HashMap<String, Tensor> =
        folder.iter().map(|(k, t)| (format!("control_model.{}", to_cldm(k, 3, hint_blocks)), t.clone())).collect();
    assert_eq!(cldm.len(), folder.len());
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("control_tiny.safetensors");
    write_safetensors(&path, cldm);

    let base = folder_parts_unet_config();
    let (weights, config) = controlnet_from_single_file(&path, &base).unwrap();
    assert_eq!(config.conditioning_embedding_out_channels, vec![8, 16, 16, 16]);
    let from_file = ControlNetModel::new(weights.var_builder(DType::F32, &Device::Cpu), &config).unwrap();
    assert!(load_controlnet(&path, &base, DType::F32, &Device::Cpu).is_ok());
    assert!(load_controlnet(&dir, &base, DType::F32, &Device::Cpu).is_ok());
    let from_folder = ControlNetModel::from_folder(&dir, &base, DType::F32, &Device::Cpu).unwrap();
    let r = load_ref("ref-controlnet-sd15.safetensors");
    let t = r["timestep"].to_scalar::<f32>().unwrap() as f64;
    let scale = r["conditioning_scale"].to_scalar::<f32>().unwrap() as f64;
    let run = |m: &ControlNetModel| {
        m.forward(&r["sample"], t, &r["encoder_hidden_states"], &r["controlnet_cond"], scale).unwrap()
    };
    let (a, b) = (run(&from_folder), run(&from_file));
    for (i, (x, y)) in a.down.iter().zip(&b.down).enumerate() {
        assert_eq!(max_abs_diff(x, y), 0.0, "down residual {i}");
        assert!(max_abs_diff(y, &r[&format!("down_residual_{i}")]) < 1e-4);
    }
    assert_eq!(max_abs_diff(&a.mid, &b.mid), 0.0);

    // A ControlNet for a 1024-wide text encoder does not fit an SD 1.x base.
    let mut sd2_base = base.clone();
    sd2_base.cross_attention_dim = 1024;
    let err = controlnet_from_single_file(&path, &sd2_base).unwrap_err().to_string();
    assert!(err.contains("another model family"), "{err}");
    // A checkpoint that is not a ControlNet is refused.
    let err = controlnet_from_single_file(&fixtures().join("tiny-sd15.safetensors"), &base).unwrap_err().to_string();
    assert!(err.contains("not an original-layout ControlNet"), "{err}");
}

fn folder_parts_unet_config() -> UNetConfig {
    folder("tiny-sd15").unet_config
}

/// The LDM-layout UNet shapes that config inference reads, for a UNet of
/// `channels` levels (attention in the levels flagged), 2 ResNets per level.
fn ldm_unet_shapes(
    channels: &[usize],
    attention: &[bool],
    context: usize,
    linear: bool,
) -> BTreeMap<String, Vec<usize>> {
    let mut s = BTreeMap::new();
    let mut put = |k: String, shape: Vec<usize>| {
        s.insert(format!("{UNET_PREFIX}{k}"), shape);
    };
    put("input_blocks.0.0.weight".into(), vec![channels[0], 4, 3, 3]);
    put("out.2.weight".into(), vec![4, channels[0], 3, 3]);
    let per = 3;
    for (b, (&c, &attn)) in channels.iter().zip(attention).enumerate() {
        for l in 0..2 {
            let i = 1 + b * per + l;
            put(format!("input_blocks.{i}.0.out_layers.3.weight"), vec![c, c, 3, 3]);
            if attn {
                let proj = if linear { vec![c, c] } else { vec![c, c, 1, 1] };
                put(format!("input_blocks.{i}.1.proj_in.weight"), proj);
                put(format!("input_blocks.{i}.1.transformer_blocks.0.attn2.to_k.weight"), vec![c, context]);
            }
        }
        if b + 1 < channels.len() {
            put(format!("input_blocks.{}.0.op.weight", b * per + per), vec![c, c, 3, 3]);
        }
        // Up block u mirrors down level (levels - 1 - u).
        let u = channels.len() - 1 - b;
        if attn {
            put(format!("output_blocks.{}.1.proj_in.weight", u * per), vec![c, c]);
        }
    }
    s
}

fn text_shapes(width: usize, layers: usize, mlp: usize) -> BTreeMap<String, Vec<usize>> {
    let mut s = BTreeMap::new();
    s.insert("text_model.embeddings.token_embedding.weight".to_string(), vec![49408, width]);
    s.insert("text_model.embeddings.position_embedding.weight".to_string(), vec![77, width]);
    for i in 0..layers {
        s.insert(format!("text_model.encoder.layers.{i}.mlp.fc1.weight"), vec![mlp, width]);
    }
    s
}

/// Real-size SD 1.5 and SD 2.1 checkpoints get diffusers' published configs.
#[test]
fn family_defaults_give_the_published_configs() {
    let path = Path::new("model.safetensors");
    let attn = [true, true, true, false];
    let sd15 =
        infer_unet_config(path, &ldm_unet_shapes(&[320, 640, 1280, 1280], &attn, 768, false), Family::Sd15).unwrap();
    let c = UNetConfig::from_json(&sd15.to_string()).unwrap();
    assert_eq!(c, UNetConfig::sd15());
    assert_eq!(
        sd15["up_block_types"],
        json!(["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"])
    );

    let sd21 =
        infer_unet_config(path, &ldm_unet_shapes(&[320, 640, 1280, 1280], &attn, 1024, true), Family::Sd21).unwrap();
    assert_eq!(sd21["attention_head_dim"], json!([5, 10, 20, 20]));
    assert_eq!(sd21["use_linear_projection"], json!(true));
    assert_eq!(sd21["sample_size"], json!(96));
    let c = UNetConfig::from_json(&sd21.to_string()).unwrap();
    assert_eq!(c.cross_attention_dim, 1024);
    assert_eq!(c.num_attention_heads, vec![5, 10, 20, 20]);

    // CLIP ViT-L/14 (SD 1.x) and OpenCLIP ViT-H/14 up to its penultimate layer (SD 2.x).
    let clip_l = infer_text_config(path, &text_shapes(768, 12, 3072), Family::Sd15).unwrap();
    let clip_l = ClipTextConfig::from_json(&clip_l.to_string()).unwrap();
    assert_eq!((clip_l.num_attention_heads, clip_l.num_hidden_layers), (12, 12));
    assert_eq!(clip_l.hidden_act, crate::clip::ClipActivation::QuickGelu);
    let open_h = infer_text_config(path, &text_shapes(1024, 24, 4096), Family::Sd21).unwrap();
    let open_h = ClipTextConfig::from_json(&open_h.to_string()).unwrap();
    assert_eq!((open_h.num_attention_heads, open_h.num_hidden_layers), (16, 23));
    assert_eq!(open_h.hidden_act, crate::clip::ClipActivation::Gelu);
}

/// fp16-variant and sharded component files load to the same tensors;
/// pickle-only components are refused by name.
#[test]
fn variant_sharded_and_pickle_component_files() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = folder("tiny-sd15");

    let dir = tmp.path().join("variant");
    copy_dir(&fixtures().join("tiny-sd15"), &dir);
    std::fs::rename(
        dir.join("unet/diffusion_pytorch_model.safetensors"),
        dir.join("unet/diffusion_pytorch_model.fp16.safetensors"),
    )
    .unwrap();
    assert_eq!(load_parts(&dir, &LoadOptions::default()).unwrap().unet.len(), reference.unet.len());

    let dir = tmp.path().join("sharded");
    copy_dir(&fixtures().join("tiny-sd15"), &dir);
    let path = dir.join("unet/diffusion_pytorch_model.safetensors");
    let all = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    std::fs::remove_file(&path).unwrap();
    let mut shards: [HashMap<String, Tensor>; 2] = Default::default();
    let mut weight_map = serde_json::Map::new();
    for (i, (k, t)) in all.into_iter().enumerate() {
        let shard = format!("diffusion_pytorch_model-0000{}-of-00002.safetensors", i % 2 + 1);
        weight_map.insert(k.clone(), Value::String(shard));
        shards[i % 2].insert(k, t);
    }
    for (i, shard) in shards.into_iter().enumerate() {
        write_safetensors(&dir.join(format!("unet/diffusion_pytorch_model-0000{}-of-00002.safetensors", i + 1)), shard);
    }
    let index = json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(dir.join("unet/diffusion_pytorch_model.safetensors.index.json"), index.to_string()).unwrap();
    let sharded = load_parts(&dir, &LoadOptions::default()).unwrap();
    for name in reference.unet.names() {
        let d = max_abs_diff(&reference.unet.get(name).unwrap(), &sharded.unet.get(name).unwrap());
        assert_eq!(d, 0.0, "{name}");
    }
    assert_eq!(sharded.unet.len(), reference.unet.len());

    let dir = tmp.path().join("pickle");
    copy_dir(&fixtures().join("tiny-sd15"), &dir);
    std::fs::rename(dir.join("vae/diffusion_pytorch_model.safetensors"), dir.join("vae/diffusion_pytorch_model.bin"))
        .unwrap();
    let err = load_parts(&dir, &LoadOptions::default()).unwrap_err().to_string();
    assert!(err.contains("diffusion_pytorch_model.bin") && err.contains("safetensors"), "{err}");
}

/// VAE folders from diffusers < 0.14 name the attention `query/key/value/proj_attn`.
#[test]
fn legacy_vae_attention_names_are_read() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("old");
    copy_dir(&fixtures().join("tiny-sd15"), &dir);
    let path = dir.join("vae/diffusion_pytorch_model.safetensors");
    let renamed: HashMap<String, Tensor> = candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap()
        .into_iter()
        .map(|(k, t)| {
            let k = k
                .replace("attentions.0.to_q.", "attentions.0.query.")
                .replace("attentions.0.to_k.", "attentions.0.key.")
                .replace("attentions.0.to_v.", "attentions.0.value.")
                .replace("attentions.0.to_out.0.", "attentions.0.proj_attn.");
            (k, t)
        })
        .collect();
    assert!(renamed.contains_key("decoder.mid_block.attentions.0.proj_attn.weight"));
    write_safetensors(&path, renamed);
    let r = load_ref("ref-sd15-vae.safetensors");
    let decoded = vae(&load_parts(&dir, &LoadOptions::default()).unwrap()).decode(&r["latents"]).unwrap();
    assert!(max_abs_diff(&decoded, &r["decoded"]) < 1e-4);
}
