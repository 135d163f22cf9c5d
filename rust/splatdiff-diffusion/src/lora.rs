//! LoRA adapters merged into the base weights at load time:
//! `W += scale * (alpha / rank) * up @ down`, before the modules are built,
//! so inference costs nothing extra.
//!
//! Two file layouts are read:
//! - kohya / A1111: `lora_unet_<module path with _>.lora_down.weight`,
//!   `.lora_up.weight`, `.alpha`; text encoder under `lora_te_`; linear and
//!   convolution (incl. 3x3 "LoCon") modules.
//! - diffusers / PEFT: `unet.<module>.lora_A.weight` / `.lora_B.weight`
//!   (alpha = rank unless `<module>.alpha` is stored), older diffusers
//!   `<module>.lora.down.weight` / `.lora.up.weight`, `text_encoder.` for the
//!   text encoder.
//!
//! Every key must land on a weight of the model with a matching shape;
//! otherwise the merge fails naming the key, rather than silently ignoring
//! part of the adapter.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::Tensor;

use crate::error::{DiffusionError, Result};
use crate::weights::{MappedFile, Weights};

/// Which component a LoRA module patches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Unet,
    TextEncoder,
}

/// One low-rank pair, as found in the file.
#[derive(Debug, Default)]
struct Pair {
    down: Option<String>,
    up: Option<String>,
    alpha: Option<String>,
}

/// The weights a LoRA may patch.
pub struct LoraTargets<'a> {
    /// UNet weights (diffusers names).
    pub unet: &'a mut Weights,
    /// Text encoder weights (`text_model.*`).
    pub text_encoder: &'a mut Weights,
}

/// How many weights a merge changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoraMerge {
    /// UNet weights patched.
    pub unet: usize,
    /// Text encoder weights patched.
    pub text_encoder: usize,
}

/// Merges the LoRA at `path` into `targets` with strength `scale`
/// (1.0 = as trained). Several LoRAs can be merged one after another.
pub fn merge_lora(path: &Path, scale: f64, targets: LoraTargets<'_>) -> Result<LoraMerge> {
    let file = MappedFile::open(path)?;
    let shapes = file.shapes();
    let pairs = collect_pairs(path, &shapes)?;
    let unet_index = underscore_index(targets.unet);
    let text_index = underscore_index(targets.text_encoder);
    let mut merged = LoraMerge::default();
    for ((target, module), pair) in &pairs {
        let (weights, index): (&mut Weights, _) = match target {
            Target::Unet => (&mut *targets.unet, &unet_index),
            Target::TextEncoder => (&mut *targets.text_encoder, &text_index),
        };
        let first_key = pair.down.as_ref().or(pair.up.as_ref()).cloned().unwrap_or_default();
        let (Some(down_key), Some(up_key)) = (&pair.down, &pair.up) else {
            return Err(DiffusionError::format(
                path,
                format!("`{first_key}`: LoRA module `{module}` lacks its down or up matrix"),
            ));
        };
        let weight_name = resolve(module, weights, index).ok_or_else(|| {
            DiffusionError::format(
                path,
                format!("`{down_key}`: no weight `{module}.weight` in the model for this LoRA key"),
            )
        })?;
        let down = file.load_f32(down_key)?;
        let up = file.load_f32(up_key)?;
        let rank = down.dim(0)?;
        if rank == 0 {
            return Err(DiffusionError::format(path, format!("`{down_key}`: rank 0")));
        }
        let alpha = match &pair.alpha {
            Some(k) => file.load_f32(k)?.flatten_all()?.to_vec1::<f32>()?.first().copied().map(f64::from),
            None => None,
        }
        .unwrap_or(rank as f64);
        let base = weights.get(&weight_name)?;
        let delta =
            low_rank_product(&up, &down).map_err(|m| DiffusionError::format(path, format!("`{down_key}`: {m}")))?;
        if delta.elem_count() != base.elem_count() {
            return Err(DiffusionError::format(
                path,
                format!(
                    "`{down_key}`: LoRA update of shape {:?} does not fit `{weight_name}` of shape {:?}",
                    delta.dims(),
                    base.dims()
                ),
            ));
        }
        let factor = scale * alpha / rank as f64;
        let patched = (base.clone() + (delta.reshape(base.shape())? * factor)?)?;
        weights.insert(&weight_name, patched);
        match target {
            Target::Unet => merged.unet += 1,
            Target::TextEncoder => merged.text_encoder += 1,
        }
    }
    Ok(merged)
}

/// `up @ down` for linear `(out, r) @ (r, in)` or convolution
/// `(out, r, 1, 1) @ (r, in, kh, kw)` factors, returned as `(out, in*kh*kw)`.
fn low_rank_product(up: &Tensor, down: &Tensor) -> std::result::Result<Tensor, String> {
    let (out, r_up) = match up.dims() {
        [o, r] | [o, r, 1, 1] => (*o, *r),
        d => return Err(format!("up matrix has unsupported shape {d:?}")),
    };
    let r_down = down.dim(0).map_err(|e| e.to_string())?;
    if r_up != r_down {
        return Err(format!("ranks differ: up {:?}, down {:?}", up.dims(), down.dims()));
    }
    let inner = down.elem_count() / r_down.max(1);
    let up = up.reshape((out, r_up)).map_err(|e| e.to_string())?;
    let down = down.reshape((r_down, inner)).map_err(|e| e.to_string())?;
    up.matmul(&down).map_err(|e| e.to_string())
}

/// Groups the file's keys by (component, module); the module is in
/// diffusers dotted form, or kohya's underscore form prefixed with `_`
/// (resolved against the model's names later).
fn collect_pairs(path: &Path, shapes: &BTreeMap<String, Vec<usize>>) -> Result<BTreeMap<(Target, String), Pair>> {
    let mut pairs: BTreeMap<(Target, String), Pair> = BTreeMap::new();
    for key in shapes.keys() {
        let unknown = || DiffusionError::format(path, format!("`{key}`: not a LoRA key this loader understands"));
        if key.contains("hada_") || key.contains("lokr_") {
            return Err(DiffusionError::Unsupported(format!(
                "{}: `{key}` is a LyCORIS LoHa/LoKr weight; only LoRA (down/up) adapters are supported",
                path.display()
            )));
        }
        let (target, rest) = if let Some(r) = key.strip_prefix("lora_unet_") {
            (Target::Unet, format!("_{r}"))
        } else if let Some(r) = key.strip_prefix("lora_te_") {
            (Target::TextEncoder, format!("_{r}"))
        } else if let Some(r) = key.strip_prefix("unet.") {
            (Target::Unet, r.to_string())
        } else if let Some(r) = key.strip_prefix("text_encoder.") {
            (Target::TextEncoder, r.to_string())
        } else {
            return Err(unknown());
        };
        let suffixes: [(&str, u8); 9] = [
            (".lora_down.weight", 0),
            (".lora_A.weight", 0),
            (".lora.down.weight", 0),
            (".lora_linear_layer.down.weight", 0),
            (".lora_up.weight", 1),
            (".lora_B.weight", 1),
            (".lora.up.weight", 1),
            (".lora_linear_layer.up.weight", 1),
            (".alpha", 2),
        ];
        let (module, role) = suffixes
            .iter()
            .find_map(|(s, role)| rest.strip_suffix(s).map(|m| (m.to_string(), *role)))
            .ok_or_else(unknown)?;
        let pair = pairs.entry((target, module)).or_default();
        match role {
            0 => pair.down = Some(key.clone()),
            1 => pair.up = Some(key.clone()),
            _ => pair.alpha = Some(key.clone()),
        }
    }
    Ok(pairs)
}

/// Underscore form of every `X.weight` name -> `X.weight` (kohya's naming).
fn underscore_index(weights: &Weights) -> HashMap<String, String> {
    weights
        .names()
        .filter_map(|n| {
            let module = n.strip_suffix(".weight")?;
            Some((format!("_{}", module.replace('.', "_")), n.to_string()))
        })
        .collect()
}

/// The weight a LoRA module patches.
fn resolve(module: &str, weights: &Weights, index: &HashMap<String, String>) -> Option<String> {
    if module.starts_with('_') {
        return index.get(module).cloned();
    }
    let name = format!("{module}.weight");
    weights.contains(&name).then_some(name)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candle_core::{DType, Device};

    use super::*;
    use crate::clip::ClipTextModel;
    use crate::loader::{load_parts, LoadOptions, ModelParts};
    use crate::test_support::{fixtures, load_ref, max_abs_diff};
    use crate::unet::{AttentionMode, UNet2DConditionModel};

    fn parts() -> ModelParts {
        load_parts(&fixtures().join("tiny-sd15"), &LoadOptions::default()).unwrap()
    }

    fn merge(parts: &mut ModelParts, path: &Path, scale: f64) -> Result<LoraMerge> {
        merge_lora(path, scale, LoraTargets { unet: &mut parts.unet, text_encoder: &mut parts.text_encoder })
    }

    /// Both layouts merge at scale 0.7 to diffusers' `fuse_lora` weights and outputs.
    #[test]
    fn kohya_and_peft_loras_merge_like_diffusers() {
        let r = load_ref("ref-lora-sd15.safetensors");
        for file in ["lora-kohya.safetensors", "lora-diffusers.safetensors"] {
            let mut parts = parts();
            let merged = merge(&mut parts, &fixtures().join(file), 0.7).unwrap();
            assert_eq!(merged, LoraMerge { unet: 72, text_encoder: 24 }, "{file}");
            for (key, expected) in r.iter().filter(|(k, _)| k.starts_with("merged/")) {
                let (component, name) = key["merged/".len()..].split_once('/').unwrap();
                let weights = if component == "unet" { &parts.unet } else { &parts.text_encoder };
                let diff = max_abs_diff(&weights.get(name).unwrap(), expected);
                assert!(diff < 1e-6, "{file}: {key} differs by {diff}");
            }
            let te = ClipTextModel::new(
                parts.text_encoder.var_builder(DType::F32, &Device::Cpu),
                &parts.text_encoder_config,
            )
            .unwrap();
            let ids = r["input_ids"].to_dtype(DType::U32).unwrap();
            let diff = max_abs_diff(&te.forward(&ids).unwrap(), &r["text_last_hidden_state"]);
            println!("{file}: text encoder max abs diff {diff:e}");
            assert!(diff < 1e-4, "{file}: text encoder differs by {diff}");
            let unet = UNet2DConditionModel::new(parts.unet.var_builder(DType::F32, &Device::Cpu), &parts.unet_config)
                .unwrap();
            let t = r["timestep"].to_scalar::<f32>().unwrap() as f64;
            let out = unet.forward(&r["sample"], t, &r["encoder_hidden_states"], None, &AttentionMode::Plain).unwrap();
            let diff = max_abs_diff(&out, &r["unet_out"]);
            println!("{file}: unet max abs diff {diff:e}");
            assert!(diff < 1e-4, "{file}: unet differs by {diff}");
        }
    }

    fn write(dir: &Path, name: &str, tensors: &[(&str, &[usize])]) -> std::path::PathBuf {
        let map: HashMap<String, Tensor> =
            tensors.iter().map(|(k, s)| (k.to_string(), Tensor::ones(*s, DType::F32, &Device::Cpu).unwrap())).collect();
        let path = dir.join(name);
        candle_core::safetensors::save(&map, &path).unwrap();
        path
    }

    #[test]
    fn bad_lora_keys_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        type Case<'a> = (&'a str, &'a [(&'a str, &'a [usize])], &'a str);
        let cases: [Case; 5] = [
            (
                "unknown_module",
                &[
                    ("lora_unet_down_blocks_9_nothing.lora_down.weight", &[4, 16]),
                    ("lora_unet_down_blocks_9_nothing.lora_up.weight", &[16, 4]),
                ],
                "lora_unet_down_blocks_9_nothing.lora_down.weight",
            ),
            (
                "bad_shape",
                &[("unet.conv_in.lora_A.weight", &[4, 5]), ("unet.conv_in.lora_B.weight", &[16, 4])],
                "unet.conv_in.lora_A.weight",
            ),
            (
                "half",
                &[("lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight", &[4, 32])],
                "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight",
            ),
            ("foreign", &[("model.something.weight", &[2, 2])], "model.something.weight"),
            ("loha", &[("lora_unet_x.hada_w1_a", &[2, 2])], "LoHa"),
        ];
        for (name, tensors, expect) in cases {
            let path = write(tmp.path(), &format!("{name}.safetensors"), tensors);
            let err = merge(&mut parts(), &path, 1.0).unwrap_err().to_string();
            assert!(err.contains(expect), "{name}: {err}");
        }
    }

    #[test]
    fn conv_lora_merges_into_3x3_convolutions() {
        let tmp = tempfile::tempdir().unwrap();
        let path = write(
            tmp.path(),
            "locon.safetensors",
            &[
                ("lora_unet_conv_in.lora_down.weight", &[2, 4, 3, 3]),
                ("lora_unet_conv_in.lora_up.weight", &[16, 2, 1, 1]),
                ("lora_unet_conv_in.alpha", &[]),
            ],
        );
        let mut p = parts();
        let before = p.unet.get("conv_in.weight").unwrap();
        let merged = merge(&mut p, &path, 0.5).unwrap();
        assert_eq!(merged, LoraMerge { unet: 1, text_encoder: 0 });
        let after = p.unet.get("conv_in.weight").unwrap();
        // up @ down of ones = rank (2) everywhere; times 0.5 * alpha (1) / rank (2).
        let expected = (before + 0.5).unwrap();
        assert!(max_abs_diff(&after, &expected) < 1e-6);
    }
}
