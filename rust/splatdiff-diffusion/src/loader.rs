//! Finding a model's parts on disk: a diffusers folder or a single-file
//! checkpoint in the original (LDM/CompVis) layout, as the community shares
//! them.
//!
//! Both end as [`ModelParts`]: each component's [`Weights`] under diffusers'
//! names (a single file's keys are remapped, its 1x1-conv VAE attention
//! reshaped to linear and SD 2's fused OpenCLIP q/k/v split), each
//! component's config, the tokenizer and the scheduler config. A single file
//! has no configs: they are inferred from tensor shapes with the family's
//! defaults (SD 1.x: 8 heads, CLIP ViT-L; SD 2.x: 64-channel heads, OpenCLIP-H
//! up to its penultimate layer, v-prediction) unless a diffusers folder is
//! given for them ([`LoadOptions::config_dir`], like diffusers'
//! `from_single_file(config=...)`).
//!
//! Checkpoints of other families (SDXL, SD3, Flux) are refused by name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use serde_json::{json, Value};

use crate::clip::ClipTextConfig;
use crate::controlnet::{ControlNetConfig, ControlNetModel};
use crate::error::{DiffusionError, Result};
use crate::scheduler::{PredictionType, SchedulerConfig};
use crate::tokenizer::ClipTokenizer;
use crate::unet::UNetConfig;
use crate::vae::VaeConfig;
use crate::weights::{MappedFile, Transform, Weights};

/// The Stable Diffusion families this crate runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// SD 1.x (CLIP ViT-L/14 text encoder, 768-wide conditioning).
    Sd15,
    /// SD 2.x (OpenCLIP ViT-H/14 text encoder, 1024-wide conditioning).
    Sd21,
}

/// How to load a model.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// A diffusers folder whose `unet/`, `vae/`, `text_encoder/` configs,
    /// `tokenizer/` and `scheduler/` replace those inferred for a
    /// single-file checkpoint (its weights are not read). Ignored for folders.
    pub config_dir: Option<PathBuf>,
    /// Overrides the model's prediction type (e.g. epsilon for an SD 2.x
    /// 512 px base checkpoint, which cannot be told from its weights).
    pub prediction_type: Option<PredictionType>,
}

/// A model's components, found and configured but not yet built.
#[derive(Debug, Clone)]
pub struct ModelParts {
    /// Which family the model belongs to.
    pub family: Family,
    /// The folder or file loaded.
    pub source: PathBuf,
    /// The prompt tokenizer.
    pub tokenizer: ClipTokenizer,
    /// Text encoder weights (`text_model.*`).
    pub text_encoder: Weights,
    /// Text encoder architecture.
    pub text_encoder_config: ClipTextConfig,
    /// UNet weights (diffusers `UNet2DConditionModel` names).
    pub unet: Weights,
    /// UNet architecture.
    pub unet_config: UNetConfig,
    /// VAE weights (diffusers `AutoencoderKL` names).
    pub vae: Weights,
    /// VAE architecture.
    pub vae_config: VaeConfig,
    /// Noise schedule and prediction type.
    pub scheduler_config: SchedulerConfig,
}

/// Loads the parts of the model at `path`: a diffusers folder or a
/// single-file `.safetensors` checkpoint.
pub fn load_parts(path: &Path, options: &LoadOptions) -> Result<ModelParts> {
    let mut parts = if path.is_dir() {
        load_folder(path)?
    } else if path.is_file() {
        load_single_file(path, options)?
    } else {
        return Err(DiffusionError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such model folder or file"),
        ));
    };
    if let Some(p) = options.prediction_type {
        parts.scheduler_config.prediction_type = p;
    }
    check_consistent(&parts)?;
    Ok(parts)
}

fn check_consistent(parts: &ModelParts) -> Result<()> {
    let text = parts.text_encoder_config.hidden_size;
    if parts.unet_config.cross_attention_dim != text {
        return Err(DiffusionError::format(
            &parts.source,
            format!(
                "the UNet's cross_attention_dim {} does not match the text encoder's hidden_size {text}",
                parts.unet_config.cross_attention_dim
            ),
        ));
    }
    if parts.unet_config.in_channels != parts.vae_config.latent_channels {
        return Err(DiffusionError::Unsupported(format!(
            "{}: the UNet takes {} input channels but the VAE has {} latent channels \
             (inpainting and depth-to-image models are not supported)",
            parts.source.display(),
            parts.unet_config.in_channels,
            parts.vae_config.latent_channels
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------- folders

fn require(path: PathBuf) -> Result<PathBuf> {
    if path.exists() {
        Ok(path)
    } else {
        Err(DiffusionError::io(
            &path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "missing from the model folder"),
        ))
    }
}

/// The safetensors weights of a diffusers component folder: `{stem}.safetensors`,
/// its fp16 variant, or a sharded set listed in `{stem}.safetensors.index.json`.
fn component_weights(dir: &Path, stem: &str) -> Result<Weights> {
    let single = dir.join(format!("{stem}.safetensors"));
    if single.is_file() {
        return Weights::from_file(&single);
    }
    let fp16 = dir.join(format!("{stem}.fp16.safetensors"));
    if fp16.is_file() {
        return Weights::from_file(&fp16);
    }
    let index = dir.join(format!("{stem}.safetensors.index.json"));
    if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|e| DiffusionError::io(&index, e))?;
        let json: Value =
            serde_json::from_str(&text).map_err(|e| DiffusionError::format(&index, format!("invalid JSON: {e}")))?;
        let map = json
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| DiffusionError::format(&index, "no `weight_map` object"))?;
        let mut shards: Vec<PathBuf> = map.values().filter_map(Value::as_str).map(|f| dir.join(f)).collect();
        shards.sort();
        shards.dedup();
        return Weights::from_files(&index, &shards);
    }
    let legacy = dir.join(format!("{stem}.bin"));
    if legacy.is_file() {
        return Err(DiffusionError::Unsupported(format!(
            "{}: PyTorch pickle weights are not loaded (they can run code); \
             convert them to {stem}.safetensors",
            legacy.display()
        )));
    }
    Err(DiffusionError::io(&single, std::io::Error::new(std::io::ErrorKind::NotFound, "missing from the model folder")))
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| DiffusionError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| DiffusionError::format(path, format!("invalid JSON: {e}")))
}

/// Refuses pipelines of other families by their `model_index.json` class.
fn check_model_index(dir: &Path) -> Result<()> {
    let path = dir.join("model_index.json");
    if !path.is_file() {
        return Ok(());
    }
    let class = read_json(&path)?.get("_class_name").and_then(Value::as_str).unwrap_or_default().to_string();
    let other = [
        ("XL", "SDXL"),
        ("StableDiffusion3", "SD3"),
        ("Flux", "Flux"),
        ("Kandinsky", "Kandinsky"),
        ("PixArt", "PixArt"),
    ];
    if let Some((_, family)) = other.iter().find(|(k, _)| class.contains(k)) {
        return Err(DiffusionError::Unsupported(format!(
            "{}: `{class}` is a {family} pipeline; only Stable Diffusion 1.x and 2.x are supported",
            path.display()
        )));
    }
    Ok(())
}

fn configs_from_folder(dir: &Path) -> Result<(UNetConfig, VaeConfig, ClipTextConfig, SchedulerConfig)> {
    let unet = UNetConfig::from_file(&require(dir.join("unet/config.json"))?)?;
    let vae = VaeConfig::from_file(&require(dir.join("vae/config.json"))?)?;
    let text = ClipTextConfig::from_file(&require(dir.join("text_encoder/config.json"))?)?;
    let scheduler = SchedulerConfig::from_file(&require(dir.join("scheduler/scheduler_config.json"))?)?;
    Ok((unet, vae, text, scheduler))
}

fn tokenizer_from(dir: &Path) -> Result<ClipTokenizer> {
    let tok_dir = dir.join("tokenizer");
    require(tok_dir.join("vocab.json"))?;
    require(tok_dir.join("merges.txt"))?;
    ClipTokenizer::from_folder(&tok_dir)
}

fn family_of(text: &ClipTextConfig, unet: &UNetConfig) -> Family {
    if text.hidden_act == crate::clip::ClipActivation::Gelu || unet.cross_attention_dim == 1024 {
        Family::Sd21
    } else {
        Family::Sd15
    }
}

fn load_folder(dir: &Path) -> Result<ModelParts> {
    check_model_index(dir)?;
    let (unet_config, vae_config, text_encoder_config, scheduler_config) = configs_from_folder(dir)?;
    let tokenizer = tokenizer_from(dir)?;
    let text_encoder = component_weights(&dir.join("text_encoder"), "model")?;
    let unet = component_weights(&dir.join("unet"), "diffusion_pytorch_model")?;
    let vae = legacy_vae_names(component_weights(&dir.join("vae"), "diffusion_pytorch_model")?);
    Ok(ModelParts {
        family: family_of(&text_encoder_config, &unet_config),
        source: dir.to_path_buf(),
        tokenizer,
        text_encoder,
        text_encoder_config,
        unet,
        unet_config,
        vae,
        vae_config,
        scheduler_config,
    })
}

/// Folders written by diffusers before 0.14 name the VAE attention
/// `query/key/value/proj_attn`; expose them under today's names.
fn legacy_vae_names(mut vae: Weights) -> Weights {
    let renames: Vec<(String, String)> = vae
        .names()
        .filter_map(|n| {
            let (head, leaf) = n.rsplit_once('.')?;
            let (block, old) = head.rsplit_once('.')?;
            let new = match old {
                "query" => "to_q",
                "key" => "to_k",
                "value" => "to_v",
                "proj_attn" => "to_out.0",
                _ => return None,
            };
            block.contains("attentions").then(|| (n.to_string(), format!("{block}.{new}.{leaf}")))
        })
        .collect();
    for (old, new) in renames {
        vae.alias(&old, new);
    }
    vae
}

// ---------------------------------------------------------------- single files

const UNET_PREFIX: &str = "model.diffusion_model.";
const VAE_PREFIX: &str = "first_stage_model.";
const CLIP_PREFIX: &str = "cond_stage_model.transformer.";
const OPENCLIP_PREFIX: &str = "cond_stage_model.model.";

/// Which family a checkpoint's keys belong to; other families are refused by name.
fn detect_family(path: &Path, shapes: &BTreeMap<String, Vec<usize>>) -> Result<Family> {
    let any = |f: &dyn Fn(&str) -> bool| shapes.keys().any(|k| f(k));
    let refuse = |family: &str, evidence: &str| {
        Err(DiffusionError::Unsupported(format!(
            "{}: this is a {family} checkpoint ({evidence} keys); only Stable Diffusion 1.x and 2.x are supported",
            path.display()
        )))
    };
    if any(&|k| k.starts_with("conditioner.embedders")) {
        return refuse("SDXL", "conditioner.embedders.*");
    }
    if any(&|k| k.contains("joint_blocks")) {
        return refuse("SD3", "joint_blocks");
    }
    if any(&|k| k.contains("double_blocks")) {
        return refuse("Flux", "double_blocks");
    }
    if !any(&|k| k.starts_with(UNET_PREFIX)) {
        let hint = if any(&|k| k.starts_with("lora_") || k.contains(".lora_")) {
            "it holds LoRA weights; pass it as a LoRA on top of a base model"
        } else if any(&|k| k.starts_with("down_blocks.") || k.starts_with("text_model.")) {
            "it is one diffusers component; pass the whole model folder"
        } else {
            "no `model.diffusion_model.*` keys of an LDM/CompVis Stable Diffusion checkpoint"
        };
        return Err(DiffusionError::Unsupported(format!("{}: unknown checkpoint layout: {hint}", path.display())));
    }
    if any(&|k| k.starts_with(OPENCLIP_PREFIX)) {
        return Ok(Family::Sd21);
    }
    let context = shapes
        .iter()
        .find(|(k, _)| k.starts_with(UNET_PREFIX) && k.ends_with("attn2.to_k.weight"))
        .and_then(|(_, s)| s.get(1).copied());
    Ok(if context == Some(1024) { Family::Sd21 } else { Family::Sd15 })
}

/// Largest `N + 1` over keys `{prefix}N.` (0 if none).
fn count_indexed(shapes: &BTreeMap<String, Vec<usize>>, prefix: &str) -> usize {
    shapes
        .keys()
        .filter_map(|k| k.strip_prefix(prefix)?.split('.').next()?.parse::<usize>().ok())
        .map(|n| n + 1)
        .max()
        .unwrap_or(0)
}

/// Size `axis` of tensor `key`; a missing key or a tensor with too few
/// dimensions is an error naming it.
fn dim_of(path: &Path, shapes: &BTreeMap<String, Vec<usize>>, key: &str, axis: usize) -> Result<usize> {
    let shape = shapes.get(key).ok_or_else(|| DiffusionError::missing_key(path, key))?;
    dim_in(path, key, shape, axis)
}

fn dim_in(path: &Path, key: &str, shape: &[usize], axis: usize) -> Result<usize> {
    shape.get(axis).copied().ok_or_else(|| {
        DiffusionError::format(
            path,
            format!("tensor `{key}` has shape {shape:?}; expected at least {} dimensions", axis + 1),
        )
    })
}

/// The UNet's layout in an LDM checkpoint: levels and ResNets per level.
#[derive(Debug, Clone, Copy)]
struct LdmUnetLayout {
    levels: usize,
    layers_per_block: usize,
}

impl LdmUnetLayout {
    /// Reads the layout of the UNet (or ControlNet) whose keys start with `prefix`.
    fn infer(path: &Path, shapes: &BTreeMap<String, Vec<usize>>, prefix: &str) -> Result<Self> {
        let p = format!("{prefix}input_blocks.");
        let inputs = count_indexed(shapes, &p);
        let downsamplers = (0..inputs).filter(|i| shapes.contains_key(&format!("{p}{i}.0.op.weight"))).count();
        let levels = downsamplers + 1;
        if inputs < 2 || inputs % levels != 0 {
            return Err(DiffusionError::format(
                path,
                format!("cannot read the UNet layout: {inputs} input blocks for {levels} levels"),
            ));
        }
        Ok(Self { levels, layers_per_block: inputs / levels - 1 })
    }

    /// The diffusers name of LDM UNet key `rest` (after `model.diffusion_model.`).
    fn rename(&self, rest: &str) -> Option<String> {
        let per = self.layers_per_block + 1;
        let fixed = [
            ("time_embed.0.", "time_embedding.linear_1."),
            ("time_embed.2.", "time_embedding.linear_2."),
            ("input_blocks.0.0.", "conv_in."),
            ("out.0.", "conv_norm_out."),
            ("out.2.", "conv_out."),
        ];
        for (old, new) in fixed {
            if let Some(leaf) = rest.strip_prefix(old) {
                return Some(format!("{new}{leaf}"));
            }
        }
        if let Some(mid) = rest.strip_prefix("middle_block.") {
            let (i, leaf) = mid.split_once('.')?;
            return match i {
                "0" => Some(format!("mid_block.resnets.0.{}", resnet_leaf(leaf))),
                "1" => Some(format!("mid_block.attentions.0.{leaf}")),
                "2" => Some(format!("mid_block.resnets.1.{}", resnet_leaf(leaf))),
                _ => None,
            };
        }
        let mut it = rest.splitn(4, '.');
        let (group, i, j, leaf) = (it.next()?, it.next()?, it.next()?, it.next()?);
        let (i, j): (usize, usize) = (i.parse().ok()?, j.parse().ok()?);
        match group {
            "input_blocks" if i >= 1 => {
                let (b, l) = ((i - 1) / per, (i - 1) % per);
                match (j, leaf.strip_prefix("op.")) {
                    (0, Some(op)) => Some(format!("down_blocks.{b}.downsamplers.0.conv.{op}")),
                    (0, None) => Some(format!("down_blocks.{b}.resnets.{l}.{}", resnet_leaf(leaf))),
                    (1, _) => Some(format!("down_blocks.{b}.attentions.{l}.{leaf}")),
                    _ => None,
                }
            }
            "output_blocks" => {
                let (b, l) = (i / per, i % per);
                match j {
                    0 => Some(format!("up_blocks.{b}.resnets.{l}.{}", resnet_leaf(leaf))),
                    1 if leaf.starts_with("conv.") => Some(format!("up_blocks.{b}.upsamplers.0.{leaf}")),
                    1 => Some(format!("up_blocks.{b}.attentions.{l}.{leaf}")),
                    2 => Some(format!("up_blocks.{b}.upsamplers.0.{leaf}")),
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

/// LDM ResNet parameter names to diffusers'.
fn resnet_leaf(leaf: &str) -> String {
    let renames = [
        ("in_layers.0.", "norm1."),
        ("in_layers.2.", "conv1."),
        ("out_layers.0.", "norm2."),
        ("out_layers.3.", "conv2."),
        ("emb_layers.1.", "time_emb_proj."),
        ("skip_connection.", "conv_shortcut."),
        ("nin_shortcut.", "conv_shortcut."),
    ];
    for (old, new) in renames {
        if let Some(rest) = leaf.strip_prefix(old) {
            return format!("{new}{rest}");
        }
    }
    leaf.to_string()
}

/// The diffusers name (and transform) of LDM VAE key `rest` (after
/// `first_stage_model.`); `up_levels` is the decoder's level count (LDM
/// numbers them from the highest resolution, diffusers from the lowest).
fn vae_rename(rest: &str, up_levels: usize) -> Option<(String, Transform)> {
    let (side, rest) = rest.split_once('.')?;
    if side != "encoder" && side != "decoder" {
        return Some((format!("{side}.{rest}"), Transform::AsIs));
    }
    if let Some(leaf) = rest.strip_prefix("norm_out.") {
        return Some((format!("{side}.conv_norm_out.{leaf}"), Transform::AsIs));
    }
    if let Some(mid) = rest.strip_prefix("mid.") {
        if let Some(leaf) = mid.strip_prefix("block_1.") {
            return Some((format!("{side}.mid_block.resnets.0.{}", resnet_leaf(leaf)), Transform::AsIs));
        }
        if let Some(leaf) = mid.strip_prefix("block_2.") {
            return Some((format!("{side}.mid_block.resnets.1.{}", resnet_leaf(leaf)), Transform::AsIs));
        }
        let leaf = mid.strip_prefix("attn_1.")?;
        let (module, param) = leaf.split_once('.')?;
        let (new, transform) = match module {
            "norm" => ("group_norm", Transform::AsIs),
            "q" => ("to_q", Transform::Conv1x1ToLinear),
            "k" => ("to_k", Transform::Conv1x1ToLinear),
            "v" => ("to_v", Transform::Conv1x1ToLinear),
            "proj_out" => ("to_out.0", Transform::Conv1x1ToLinear),
            _ => return None,
        };
        let transform = if param == "weight" { transform } else { Transform::AsIs };
        return Some((format!("{side}.mid_block.attentions.0.{new}.{param}"), transform));
    }
    let (group, diffusers_group) = if side == "encoder" { ("down.", "down_blocks") } else { ("up.", "up_blocks") };
    if let Some(level_rest) = rest.strip_prefix(group) {
        let (i, leaf) = level_rest.split_once('.')?;
        let i: usize = i.parse().ok()?;
        let b = if side == "encoder" { i } else { up_levels.checked_sub(i + 1)? };
        let base = format!("{side}.{diffusers_group}.{b}");
        if let Some(block) = leaf.strip_prefix("block.") {
            let (j, leaf) = block.split_once('.')?;
            return Some((format!("{base}.resnets.{j}.{}", resnet_leaf(leaf)), Transform::AsIs));
        }
        for sampler in ["downsample.", "upsample."] {
            if let Some(leaf) = leaf.strip_prefix(sampler) {
                let kind = if side == "encoder" { "downsamplers" } else { "upsamplers" };
                return Some((format!("{base}.{kind}.0.{leaf}"), Transform::AsIs));
            }
        }
        return None;
    }
    Some((format!("{side}.{rest}"), Transform::AsIs))
}

/// The diffusers names (and transforms) of one OpenCLIP text-tower key
/// (after `cond_stage_model.model.`); fused q/k/v give three names.
fn openclip_rename(rest: &str) -> Vec<(String, Transform)> {
    let one = |name: String| vec![(name, Transform::AsIs)];
    match rest {
        "token_embedding.weight" => return one("text_model.embeddings.token_embedding.weight".into()),
        "positional_embedding" => return one("text_model.embeddings.position_embedding.weight".into()),
        "ln_final.weight" => return one("text_model.final_layer_norm.weight".into()),
        "ln_final.bias" => return one("text_model.final_layer_norm.bias".into()),
        _ => {}
    }
    let Some(block) = rest.strip_prefix("transformer.resblocks.") else {
        return Vec::new();
    };
    let Some((i, leaf)) = block.split_once('.') else {
        return Vec::new();
    };
    let base = format!("text_model.encoder.layers.{i}");
    let fused = |param: &str| {
        ["q_proj", "k_proj", "v_proj"]
            .iter()
            .enumerate()
            .map(|(index, p)| (format!("{base}.self_attn.{p}.{param}"), Transform::Slice { index, parts: 3 }))
            .collect()
    };
    match leaf {
        "attn.in_proj_weight" => fused("weight"),
        "attn.in_proj_bias" => fused("bias"),
        _ => {
            let renames = [
                ("ln_1.", "layer_norm1."),
                ("ln_2.", "layer_norm2."),
                ("attn.out_proj.", "self_attn.out_proj."),
                ("mlp.c_fc.", "mlp.fc1."),
                ("mlp.c_proj.", "mlp.fc2."),
            ];
            renames
                .iter()
                .find_map(|(old, new)| leaf.strip_prefix(old).map(|p| one(format!("{base}.{new}{p}"))))
                .unwrap_or_default()
        }
    }
}

/// A single-file checkpoint's tensors under diffusers' names, per component.
struct SingleFileWeights {
    unet: Weights,
    vae: Weights,
    text_encoder: Weights,
}

fn remap_single_file(
    path: &Path,
    file: MappedFile,
    shapes: &BTreeMap<String, Vec<usize>>,
    family: Family,
) -> Result<SingleFileWeights> {
    let layout = LdmUnetLayout::infer(path, shapes, UNET_PREFIX)?;
    let up_levels = count_indexed(shapes, &format!("{VAE_PREFIX}decoder.up."));
    let mut unet = Weights::empty(path);
    let mut vae = Weights::empty(path);
    let mut text = Weights::empty(path);
    let (u, v, t) = (unet.add_file(file.clone()), vae.add_file(file.clone()), text.add_file(file));
    for key in shapes.keys() {
        if let Some(rest) = key.strip_prefix(UNET_PREFIX) {
            if let Some(name) = layout.rename(rest) {
                unet.map(name, u, key, Transform::AsIs);
            }
        } else if let Some(rest) = key.strip_prefix(VAE_PREFIX) {
            if let Some((name, transform)) = vae_rename(rest, up_levels) {
                vae.map(name, v, key, transform);
            }
        } else if let Some(rest) = key.strip_prefix(CLIP_PREFIX) {
            if family == Family::Sd15 && !rest.ends_with("position_ids") {
                let rest = rest.strip_prefix("text_model.").unwrap_or(rest);
                text.map(format!("text_model.{rest}"), t, key, Transform::AsIs);
            }
        } else if let Some(rest) = key.strip_prefix(OPENCLIP_PREFIX) {
            for (name, transform) in openclip_rename(rest) {
                text.map(name, t, key, transform);
            }
        }
    }
    let missing = |w: &Weights, what: &str, prefix: &str| {
        if w.is_empty() {
            Err(DiffusionError::format(path, format!("the checkpoint has no {what} (`{prefix}*` keys)")))
        } else {
            Ok(())
        }
    };
    missing(&vae, "VAE", VAE_PREFIX)?;
    let clip_prefix = if family == Family::Sd15 { CLIP_PREFIX } else { OPENCLIP_PREFIX };
    missing(&text, "text encoder", clip_prefix)?;
    Ok(SingleFileWeights { unet, vae, text_encoder: text })
}

/// Heads of `width` channels at 64 channels per head (CLIP-L, OpenCLIP-H, SD 2.x UNet).
fn heads_of_64(path: &Path, what: &str, width: usize) -> Result<usize> {
    if width == 0 || width % 64 != 0 {
        return Err(DiffusionError::format(
            path,
            format!(
                "cannot infer the {what}'s attention heads: width {width} is not a multiple of 64; \
                 pass a diffusers folder with its config (config_dir)"
            ),
        ));
    }
    Ok(width / 64)
}

/// diffusers' `unet/config.json` for the checkpoint's UNet, from its shapes
/// and the family's defaults.
fn infer_unet_config(path: &Path, shapes: &BTreeMap<String, Vec<usize>>, family: Family) -> Result<Value> {
    let layout = LdmUnetLayout::infer(path, shapes, UNET_PREFIX)?;
    let per = layout.layers_per_block + 1;
    let key = |k: String| format!("{UNET_PREFIX}{k}");
    let mut channels = Vec::new();
    let mut down_types = Vec::new();
    let mut up_types = Vec::new();
    let mut linear_projection = false;
    let mut transformer_layers = 1;
    for b in 0..layout.levels {
        let first = 1 + b * per;
        channels.push(dim_of(path, shapes, &key(format!("input_blocks.{first}.0.out_layers.3.weight")), 0)?);
        let proj_in = key(format!("input_blocks.{first}.1.proj_in.weight"));
        if let Some(s) = shapes.get(&proj_in) {
            linear_projection = s.len() == 2;
            transformer_layers = count_indexed(shapes, &key(format!("input_blocks.{first}.1.transformer_blocks.")));
            down_types.push("CrossAttnDownBlock2D");
        } else {
            down_types.push("DownBlock2D");
        }
        let up_attn = key(format!("output_blocks.{}.1.proj_in.weight", b * per));
        up_types.push(if shapes.contains_key(&up_attn) { "CrossAttnUpBlock2D" } else { "UpBlock2D" });
    }
    let cross_attention_dim = shapes
        .iter()
        .find(|(k, _)| k.starts_with(UNET_PREFIX) && k.ends_with("attn2.to_k.weight"))
        .and_then(|(_, s)| s.get(1).copied())
        .ok_or_else(|| DiffusionError::missing_key(path, key("*.attn2.to_k.weight".into())))?;
    let heads: Value = match family {
        Family::Sd15 => json!(8),
        Family::Sd21 => json!(channels.iter().map(|&c| heads_of_64(path, "UNet", c)).collect::<Result<Vec<_>>>()?),
    };
    Ok(json!({
        "in_channels": dim_of(path, shapes, &key("input_blocks.0.0.weight".into()), 1)?,
        "out_channels": dim_of(path, shapes, &key("out.2.weight".into()), 0)?,
        "block_out_channels": channels,
        "down_block_types": down_types,
        "up_block_types": up_types,
        "layers_per_block": layout.layers_per_block,
        "attention_head_dim": heads,
        "transformer_layers_per_block": transformer_layers,
        "cross_attention_dim": cross_attention_dim,
        "use_linear_projection": linear_projection,
        "norm_num_groups": 32,
        "sample_size": if family == Family::Sd21 { 96 } else { 64 },
    }))
}

/// diffusers' `vae/config.json` for the checkpoint's VAE.
fn infer_vae_config(path: &Path, shapes: &BTreeMap<String, Vec<usize>>) -> Result<Value> {
    let key = |k: &str| format!("{VAE_PREFIX}{k}");
    let levels = count_indexed(shapes, &key("encoder.down."));
    let channels = (0..levels)
        .map(|i| dim_of(path, shapes, &key(&format!("encoder.down.{i}.block.0.conv2.weight")), 0))
        .collect::<Result<Vec<_>>>()?;
    Ok(json!({
        "in_channels": dim_of(path, shapes, &key("encoder.conv_in.weight"), 1)?,
        "out_channels": dim_of(path, shapes, &key("decoder.conv_out.weight"), 0)?,
        "block_out_channels": channels,
        "layers_per_block": count_indexed(shapes, &key("encoder.down.0.block.")),
        "latent_channels": dim_of(path, shapes, &key("decoder.conv_in.weight"), 1)?,
        "norm_num_groups": 32,
        "scaling_factor": 0.18215,
        "use_quant_conv": shapes.contains_key(&key("quant_conv.weight")),
        "use_post_quant_conv": shapes.contains_key(&key("post_quant_conv.weight")),
    }))
}

/// transformers' `text_encoder/config.json` for the checkpoint's text encoder.
fn infer_text_config(path: &Path, shapes: &BTreeMap<String, Vec<usize>>, family: Family) -> Result<Value> {
    let dim = |name: &str, axis: usize| dim_of(path, shapes, name, axis);
    let token = "text_model.embeddings.token_embedding.weight";
    let (vocab, width) = (dim(token, 0)?, dim(token, 1)?);
    let stored_layers = count_indexed(shapes, "text_model.encoder.layers.");
    // SD 2.x conditions on OpenCLIP's penultimate layer (then ln_final).
    let layers = match family {
        Family::Sd15 => stored_layers,
        Family::Sd21 => stored_layers.saturating_sub(1),
    };
    Ok(json!({
        "vocab_size": vocab,
        "hidden_size": width,
        "intermediate_size": dim("text_model.encoder.layers.0.mlp.fc1.weight", 0)?,
        "num_hidden_layers": layers,
        "num_attention_heads": heads_of_64(path, "text encoder", width)?,
        "max_position_embeddings": dim("text_model.embeddings.position_embedding.weight", 0)?,
        "hidden_act": if family == Family::Sd21 { "gelu" } else { "quick_gelu" },
        "layer_norm_eps": 1e-5,
    }))
}

fn parse_inferred<T>(
    path: &Path,
    what: &str,
    json: Value,
    parse: fn(&str) -> std::result::Result<T, String>,
) -> Result<T> {
    parse(&json.to_string()).map_err(|m| {
        DiffusionError::format(
            path,
            format!("inferred {what} config is not usable ({m}); pass a diffusers folder with its config (config_dir)"),
        )
    })
}

fn load_single_file(path: &Path, options: &LoadOptions) -> Result<ModelParts> {
    let file = MappedFile::open(path)?;
    let shapes = file.shapes();
    let family = detect_family(path, &shapes)?;
    let weights = remap_single_file(path, file, &shapes, family)?;
    let (unet_config, vae_config, text_encoder_config, scheduler_config, tokenizer) = match &options.config_dir {
        Some(dir) => {
            let (u, v, t, s) = configs_from_folder(dir)?;
            (u, v, t, s, tokenizer_from(dir)?)
        }
        None => {
            let unet = parse_inferred(path, "UNet", infer_unet_config(path, &shapes, family)?, UNetConfig::from_json)?;
            let vae = parse_inferred(path, "VAE", infer_vae_config(path, &shapes)?, VaeConfig::from_json)?;
            let text = parse_inferred(
                path,
                "text encoder",
                infer_text_config(path, &weights.text_encoder.shapes()?, family)?,
                ClipTextConfig::from_json,
            )?;
            let scheduler = SchedulerConfig {
                prediction_type: match family {
                    Family::Sd15 => PredictionType::Epsilon,
                    Family::Sd21 => PredictionType::VPrediction,
                },
                ..SchedulerConfig::default()
            };
            (unet, vae, text, scheduler, sibling_tokenizer(path)?)
        }
    };
    Ok(ModelParts {
        family,
        source: path.to_path_buf(),
        tokenizer,
        text_encoder: weights.text_encoder,
        text_encoder_config,
        unet: weights.unet,
        unet_config,
        vae: weights.vae,
        vae_config,
        scheduler_config,
    })
}

// ---------------------------------------------------------------- ControlNet files

/// The diffusers name of a key of an original-layout ControlNet (`cldm`,
/// as the AUTOMATIC1111 extension loads them), after its optional
/// `control_model.` prefix; `hint_convs` is the number of convolutions in
/// `input_hint_block`.
fn controlnet_rename(layout: &LdmUnetLayout, rest: &str, hint_convs: usize) -> Option<String> {
    if let Some(zero) = rest.strip_prefix("zero_convs.") {
        let (i, leaf) = zero.split_once('.')?;
        return Some(format!("controlnet_down_blocks.{i}.{}", leaf.strip_prefix("0.")?));
    }
    if let Some(leaf) = rest.strip_prefix("middle_block_out.0.") {
        return Some(format!("controlnet_mid_block.{leaf}"));
    }
    if let Some(hint) = rest.strip_prefix("input_hint_block.") {
        // Convolutions sit at even indices, with SiLUs between them.
        let (i, leaf) = hint.split_once('.')?;
        let conv = i.parse::<usize>().ok()? / 2;
        let name = match conv {
            0 => "conv_in".to_string(),
            c if c + 1 == hint_convs => "conv_out".to_string(),
            c => format!("blocks.{}", c - 1),
        };
        return Some(format!("controlnet_cond_embedding.{name}.{leaf}"));
    }
    layout.rename(rest)
}

/// A ControlNet in the original single-file layout (`control_model.*` or
/// unprefixed `input_blocks.*`, `zero_convs.*`, `input_hint_block.*`, as
/// shared for the AUTOMATIC1111 web UI), for a UNet of architecture `base`:
/// its weights under diffusers' names and its config (the base's, plus the
/// conditioning embedding read from the shapes). A ControlNet made for
/// another text-encoder width (SD 1.x vs 2.x) is refused by name.
pub fn controlnet_from_single_file(path: &Path, base: &UNetConfig) -> Result<(Weights, ControlNetConfig)> {
    let file = MappedFile::open(path)?;
    let all = file.shapes();
    let prefix = if all.keys().any(|k| k.starts_with("control_model.")) { "control_model." } else { "" };
    let shapes: BTreeMap<String, Vec<usize>> =
        all.iter().filter_map(|(k, s)| Some((k.strip_prefix(prefix)?.to_string(), s.clone()))).collect();
    if !shapes.keys().any(|k| k.starts_with("zero_convs.")) || !shapes.contains_key("input_hint_block.0.weight") {
        return Err(DiffusionError::Unsupported(format!(
            "{}: not an original-layout ControlNet (no `zero_convs.*` / `input_hint_block.*` keys);              pass a diffusers ControlNet folder instead",
            path.display()
        )));
    }
    if let Some((key, s)) = shapes.iter().find(|(k, _)| k.ends_with("attn2.to_k.weight")) {
        if s.get(1) != Some(&base.cross_attention_dim) {
            return Err(DiffusionError::Invalid(format!(
                "{}: ControlNet conditions on {}-wide text (`{prefix}{key}`), the base model on {}-wide: \
                 it was made for another model family",
                path.display(),
                s.get(1).copied().unwrap_or(0),
                base.cross_attention_dim
            )));
        }
    }
    let layout = LdmUnetLayout::infer(path, &shapes, "")?;
    let hint_convs = (0..).take_while(|i| shapes.contains_key(&format!("input_hint_block.{}.weight", 2 * i))).count();
    // conv_in, then (same-size, downsampling) pairs, then conv_out.
    if hint_convs < 2 || hint_convs % 2 != 0 {
        return Err(DiffusionError::format(
            path,
            format!("`input_hint_block` has {hint_convs} convolutions; expected an even number >= 2"),
        ));
    }
    let out_of =
        |conv: usize| -> Result<usize> { dim_of(path, &shapes, &format!("input_hint_block.{}.weight", 2 * conv), 0) };
    let conditioning_embedding_out_channels =
        std::iter::once(0).chain((1..hint_convs - 1).filter(|c| c % 2 == 0)).map(out_of).collect::<Result<Vec<_>>>()?;
    let config = ControlNetConfig {
        unet: base.clone(),
        conditioning_channels: dim_of(path, &shapes, "input_hint_block.0.weight", 1)?,
        conditioning_embedding_out_channels,
    };
    let mut weights = Weights::empty(path);
    let f = weights.add_file(file);
    for key in shapes.keys() {
        if let Some(name) = controlnet_rename(&layout, key, hint_convs) {
            weights.map(name, f, &format!("{prefix}{key}"), Transform::AsIs);
        }
    }
    Ok((weights, config))
}

/// Loads a ControlNet for a UNet of architecture `base`, from a diffusers
/// folder or an original-layout single `.safetensors` file.
pub fn load_controlnet(path: &Path, base: &UNetConfig, dtype: DType, device: &Device) -> Result<ControlNetModel> {
    if path.is_dir() {
        return ControlNetModel::from_folder(path, base, dtype, device);
    }
    let (weights, config) = controlnet_from_single_file(path, base)?;
    ControlNetModel::new(weights.var_builder(dtype, device), &config)
}

/// A single file carries no tokenizer: use a `tokenizer/` folder beside it.
fn sibling_tokenizer(path: &Path) -> Result<ClipTokenizer> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tok = dir.join("tokenizer");
    if tok.join("vocab.json").is_file() {
        return ClipTokenizer::from_folder(&tok);
    }
    Err(DiffusionError::format(
        path,
        format!(
            "a single-file checkpoint has no tokenizer: put a CLIP `tokenizer/` folder (vocab.json, merges.txt) \
             at {} or pass a diffusers folder of the same family as config_dir",
            tok.display()
        ),
    ))
}

#[cfg(test)]
mod tests;
