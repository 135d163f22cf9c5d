//! The UNet's architecture, read from a diffusers `unet/config.json`.
//!
//! Only the settings that SD 1.x / 2.x UNets use are accepted; anything that
//! changes the architecture in ways this module does not implement (SDXL's
//! added embeddings, class embeddings, LCM's guidance embedding, ...) is
//! refused with an error naming the setting, rather than silently ignored.

use std::path::Path;

use serde::Deserialize;

use crate::{DiffusionError, Result};

/// An integer or a per-block list, as diffusers allows for several settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum PerBlock {
    /// One value for every block.
    Same(usize),
    /// One value per down block (in down-block order).
    List(Vec<usize>),
}

impl PerBlock {
    /// The value for each of `blocks` blocks; a list of the wrong length is an error.
    fn expand(&self, blocks: usize, what: &str) -> std::result::Result<Vec<usize>, String> {
        match self {
            PerBlock::Same(v) => Ok(vec![*v; blocks]),
            PerBlock::List(v) if v.len() == blocks => Ok(v.clone()),
            PerBlock::List(v) => Err(format!("`{what}` has {} entries but there are {blocks} down blocks", v.len())),
        }
    }
}

/// The kinds of down/up block of SD 1.x / 2.x UNets (and their ControlNets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// ResNets only (`DownBlock2D` / `UpBlock2D`).
    Plain,
    /// ResNets each followed by a spatial transformer (`CrossAttnDownBlock2D` / `CrossAttnUpBlock2D`).
    CrossAttn,
}

/// The UNet's architecture, with per-block settings expanded (all `Vec`s
/// have one entry per down block, in down-block order).
#[derive(Debug, Clone, PartialEq)]
pub struct UNetConfig {
    /// Latent channels in (4; 9 for inpainting UNets).
    pub in_channels: usize,
    /// Channels out (the predicted noise / velocity).
    pub out_channels: usize,
    /// Channels of each resolution level.
    pub block_out_channels: Vec<usize>,
    /// Kind of each down block.
    pub down_blocks: Vec<BlockKind>,
    /// Kind of each up block (in up-block order, i.e. lowest resolution first).
    pub up_blocks: Vec<BlockKind>,
    /// ResNets per down block (up blocks have one more).
    pub layers_per_block: usize,
    /// Attention heads of each level's transformers (diffusers' `num_attention_heads`,
    /// which older configs spell `attention_head_dim`; see [`UNetConfig::from_json`]).
    pub num_attention_heads: Vec<usize>,
    /// Transformer blocks inside each level's spatial transformers.
    pub transformer_layers_per_block: Vec<usize>,
    /// Width of the text embeddings the cross-attention reads (768 for SD 1.x, 1024 for SD 2.x).
    pub cross_attention_dim: usize,
    /// GroupNorm groups.
    pub norm_num_groups: usize,
    /// GroupNorm epsilon of the ResNets and the output norm.
    pub norm_eps: f64,
    /// Linear (SD 2.x) instead of 1x1-conv (SD 1.x) projections into and out of the transformers.
    pub use_linear_projection: bool,
    /// Sinusoidal timestep embedding puts cosines first.
    pub flip_sin_to_cos: bool,
    /// Timestep embedding frequency shift.
    pub freq_shift: f64,
    /// Padding of the down-sampling convolutions.
    pub downsample_padding: usize,
    /// Output scale of the mid block's ResNets.
    pub mid_block_scale_factor: f64,
    /// Map the input sample from [0, 1] to [-1, 1] first.
    pub center_input_sample: bool,
    /// Latent side the model was trained at (64 for 512 px SD 1.5).
    pub sample_size: usize,
}

/// The subset of diffusers' config.json this crate reads; unknown keys are ignored
/// only when they cannot change the computation (see [`UNetConfig::from_json`]).
#[derive(Debug, Deserialize)]
struct RawConfig {
    #[serde(default = "default_in_channels")]
    in_channels: usize,
    #[serde(default = "default_in_channels")]
    out_channels: usize,
    block_out_channels: Vec<usize>,
    down_block_types: Vec<String>,
    /// Absent from ControlNet configs (which have no up path): mirrored from the down blocks.
    #[serde(default)]
    up_block_types: Option<Vec<String>>,
    #[serde(default = "default_layers")]
    layers_per_block: PerBlock,
    #[serde(default)]
    attention_head_dim: Option<PerBlock>,
    #[serde(default)]
    num_attention_heads: Option<PerBlock>,
    #[serde(default)]
    transformer_layers_per_block: Option<PerBlock>,
    cross_attention_dim: PerBlock,
    #[serde(default = "default_groups")]
    norm_num_groups: usize,
    #[serde(default = "default_eps")]
    norm_eps: f64,
    #[serde(default)]
    use_linear_projection: bool,
    #[serde(default = "default_true")]
    flip_sin_to_cos: bool,
    #[serde(default)]
    freq_shift: f64,
    #[serde(default = "default_one")]
    downsample_padding: usize,
    #[serde(default = "default_one_f")]
    mid_block_scale_factor: f64,
    #[serde(default)]
    center_input_sample: bool,
    #[serde(default = "default_sample_size")]
    sample_size: PerBlock,
    #[serde(default)]
    mid_block_type: Option<String>,
    #[serde(default)]
    act_fn: Option<String>,
    #[serde(default)]
    resnet_time_scale_shift: Option<String>,
    #[serde(default)]
    only_cross_attention: Option<serde_json::Value>,
    #[serde(default)]
    dual_cross_attention: Option<bool>,
    #[serde(default)]
    class_embed_type: Option<String>,
    #[serde(default)]
    num_class_embeds: Option<usize>,
    #[serde(default)]
    addition_embed_type: Option<String>,
    #[serde(default)]
    encoder_hid_dim: Option<usize>,
    #[serde(default)]
    time_cond_proj_dim: Option<usize>,
    #[serde(default)]
    time_embedding_type: Option<String>,
    #[serde(default)]
    conv_in_kernel: Option<usize>,
    #[serde(default)]
    conv_out_kernel: Option<usize>,
    #[serde(default)]
    attention_type: Option<String>,
    #[serde(default)]
    reverse_transformer_layers_per_block: Option<serde_json::Value>,
    #[serde(default)]
    time_embedding_dim: Option<usize>,
    #[serde(default)]
    time_embedding_act_fn: Option<String>,
    #[serde(default)]
    timestep_post_act: Option<String>,
    #[serde(default)]
    cross_attention_norm: Option<String>,
    #[serde(default)]
    resnet_skip_time_act: Option<bool>,
    #[serde(default)]
    resnet_out_scale_factor: Option<f64>,
}

fn default_in_channels() -> usize {
    4
}
fn default_layers() -> PerBlock {
    PerBlock::Same(2)
}
fn default_groups() -> usize {
    32
}
fn default_eps() -> f64 {
    1e-5
}
fn default_true() -> bool {
    true
}
fn default_one() -> usize {
    1
}
fn default_one_f() -> f64 {
    1.0
}
fn default_sample_size() -> PerBlock {
    PerBlock::Same(64)
}

fn block_kind(name: &str, up: bool) -> Option<BlockKind> {
    match (name, up) {
        ("DownBlock2D", false) | ("UpBlock2D", true) => Some(BlockKind::Plain),
        ("CrossAttnDownBlock2D", false) | ("CrossAttnUpBlock2D", true) => Some(BlockKind::CrossAttn),
        _ => None,
    }
}

impl UNetConfig {
    /// Reads and checks a diffusers `config.json` (of a UNet or a ControlNet).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| DiffusionError::io(path, e))?;
        Self::from_json(&text).map_err(|message| DiffusionError::format(path, message))
    }

    /// Parses the JSON text of a diffusers UNet (or ControlNet) config.
    ///
    /// Head counts follow diffusers exactly: when `num_attention_heads` is
    /// absent, `attention_head_dim` is used *as the number of heads* (a naming
    /// slip diffusers keeps for compatibility). SD 1.5 says `8` (8 heads of
    /// 40..160 channels); SD 2.1 says `[5, 10, 20, 20]` (heads of 64 channels).
    pub fn from_json(text: &str) -> std::result::Result<Self, String> {
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| format!("not a UNet config: {e}"))?;
        raw.check_supported()?;
        let levels = raw.block_out_channels.len();
        let up_types = raw
            .up_block_types
            .clone()
            .unwrap_or_else(|| raw.down_block_types.iter().rev().map(|t| t.replace("Down", "Up")).collect());
        if levels == 0 || raw.down_block_types.len() != levels || up_types.len() != levels {
            return Err(format!(
                "block_out_channels ({levels}), down_block_types ({}) and up_block_types ({}) must have the same non-zero length",
                raw.down_block_types.len(),
                up_types.len()
            ));
        }
        let kinds = |names: &[String], up: bool| -> std::result::Result<Vec<BlockKind>, String> {
            names
                .iter()
                .map(|n| {
                    block_kind(n, up)
                        .ok_or_else(|| format!("unsupported {} block type `{n}`", if up { "up" } else { "down" }))
                })
                .collect()
        };
        let down_blocks = kinds(&raw.down_block_types, false)?;
        let up_blocks = kinds(&up_types, true)?;
        let layers = raw.layers_per_block.expand(levels, "layers_per_block")?;
        if layers.iter().any(|&l| l != layers[0]) {
            return Err("per-block `layers_per_block` lists are not supported".into());
        }
        let heads = raw
            .num_attention_heads
            .as_ref()
            .or(raw.attention_head_dim.as_ref())
            .cloned()
            .unwrap_or(PerBlock::Same(8))
            .expand(levels, "attention_head_dim")?;
        let transformer_layers = raw
            .transformer_layers_per_block
            .clone()
            .unwrap_or(PerBlock::Same(1))
            .expand(levels, "transformer_layers_per_block")?;
        let cross_attention_dim = match &raw.cross_attention_dim {
            PerBlock::Same(d) => *d,
            PerBlock::List(_) => return Err("per-block `cross_attention_dim` is not supported".into()),
        };
        for (i, (&ch, &h)) in raw.block_out_channels.iter().zip(&heads).enumerate() {
            if h == 0 || ch % h != 0 {
                return Err(format!("block {i}: {ch} channels cannot be split into {h} attention heads"));
            }
            if raw.norm_num_groups == 0 || ch % raw.norm_num_groups != 0 {
                return Err(format!(
                    "block {i}: {ch} channels are not divisible by norm_num_groups {}",
                    raw.norm_num_groups
                ));
            }
        }
        let sample_size = match raw.sample_size {
            PerBlock::Same(s) => s,
            PerBlock::List(v) => v.first().copied().unwrap_or(64),
        };
        Ok(Self {
            in_channels: raw.in_channels,
            out_channels: raw.out_channels,
            block_out_channels: raw.block_out_channels,
            down_blocks,
            up_blocks,
            layers_per_block: layers[0],
            num_attention_heads: heads,
            transformer_layers_per_block: transformer_layers,
            cross_attention_dim,
            norm_num_groups: raw.norm_num_groups,
            norm_eps: raw.norm_eps,
            use_linear_projection: raw.use_linear_projection,
            flip_sin_to_cos: raw.flip_sin_to_cos,
            freq_shift: raw.freq_shift,
            downsample_padding: raw.downsample_padding,
            mid_block_scale_factor: raw.mid_block_scale_factor,
            center_input_sample: raw.center_input_sample,
            sample_size,
        })
    }

    /// The Stable Diffusion 1.5 UNet (as in `runwayml/stable-diffusion-v1-5/unet/config.json`).
    pub fn sd15() -> Self {
        use BlockKind::*;
        Self {
            in_channels: 4,
            out_channels: 4,
            block_out_channels: vec![320, 640, 1280, 1280],
            down_blocks: vec![CrossAttn, CrossAttn, CrossAttn, Plain],
            up_blocks: vec![Plain, CrossAttn, CrossAttn, CrossAttn],
            layers_per_block: 2,
            num_attention_heads: vec![8; 4],
            transformer_layers_per_block: vec![1; 4],
            cross_attention_dim: 768,
            norm_num_groups: 32,
            norm_eps: 1e-5,
            use_linear_projection: false,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            downsample_padding: 1,
            mid_block_scale_factor: 1.0,
            center_input_sample: false,
            sample_size: 64,
        }
    }

    /// Width of the timestep embedding (4x the first level's channels).
    pub fn time_embed_dim(&self) -> usize {
        self.block_out_channels[0] * 4
    }

    /// Number of skip tensors the down path produces, i.e. how many down
    /// residuals a ControlNet must supply.
    pub fn num_down_residuals(&self) -> usize {
        let levels = self.block_out_channels.len();
        1 + levels * self.layers_per_block + (levels - 1)
    }
}

impl RawConfig {
    fn check_supported(&self) -> std::result::Result<(), String> {
        let refuse =
            |what: &str| Err(format!("unsupported UNet setting {what} (only SD 1.x / 2.x UNets are supported)"));
        if let Some(t) = &self.addition_embed_type {
            return refuse(&format!("addition_embed_type = {t:?} (SDXL-style added embeddings)"));
        }
        if let Some(t) = &self.class_embed_type {
            return refuse(&format!("class_embed_type = {t:?}"));
        }
        if self.num_class_embeds.is_some() {
            return refuse("num_class_embeds");
        }
        if self.encoder_hid_dim.is_some() {
            return refuse("encoder_hid_dim");
        }
        if self.time_cond_proj_dim.is_some() {
            return refuse("time_cond_proj_dim (an LCM-distilled UNet; use LCM-LoRA on a base model instead)");
        }
        if self.dual_cross_attention == Some(true) {
            return refuse("dual_cross_attention");
        }
        match &self.only_cross_attention {
            None | Some(serde_json::Value::Bool(false)) => {}
            Some(serde_json::Value::Array(v)) if v.iter().all(|b| b == &serde_json::Value::Bool(false)) => {}
            Some(v) => return refuse(&format!("only_cross_attention = {v}")),
        }
        let is = |v: &Option<String>, ok: &str| v.as_deref().is_none_or(|s| s == ok);
        if !is(&self.mid_block_type, "UNetMidBlock2DCrossAttn") {
            return refuse(&format!("mid_block_type = {:?}", self.mid_block_type));
        }
        if !is(&self.act_fn, "silu") {
            return refuse(&format!("act_fn = {:?}", self.act_fn));
        }
        if !is(&self.resnet_time_scale_shift, "default") {
            return refuse(&format!("resnet_time_scale_shift = {:?}", self.resnet_time_scale_shift));
        }
        if !is(&self.time_embedding_type, "positional") {
            return refuse(&format!("time_embedding_type = {:?}", self.time_embedding_type));
        }
        if !is(&self.attention_type, "default") {
            return refuse(&format!("attention_type = {:?}", self.attention_type));
        }
        if self.conv_in_kernel.is_some_and(|k| k != 3) || self.conv_out_kernel.is_some_and(|k| k != 3) {
            return refuse("conv_in_kernel / conv_out_kernel other than 3");
        }
        for (name, value) in [
            ("time_embedding_dim", self.time_embedding_dim.map(|d| d.to_string())),
            ("time_embedding_act_fn", self.time_embedding_act_fn.clone()),
            ("timestep_post_act", self.timestep_post_act.clone()),
            ("cross_attention_norm", self.cross_attention_norm.clone()),
        ] {
            if let Some(v) = value {
                return refuse(&format!("{name} = {v}"));
            }
        }
        if self.resnet_skip_time_act == Some(true) {
            return refuse("resnet_skip_time_act = true");
        }
        if self.resnet_out_scale_factor.is_some_and(|f| f != 1.0) {
            return refuse("resnet_out_scale_factor other than 1");
        }
        if self.reverse_transformer_layers_per_block.as_ref().is_some_and(|v| !v.is_null()) {
            return refuse("reverse_transformer_layers_per_block");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd15_and_sd21_head_conventions() {
        let sd15 = r#"{"block_out_channels":[320,640,1280,1280],
            "down_block_types":["CrossAttnDownBlock2D","CrossAttnDownBlock2D","CrossAttnDownBlock2D","DownBlock2D"],
            "up_block_types":["UpBlock2D","CrossAttnUpBlock2D","CrossAttnUpBlock2D","CrossAttnUpBlock2D"],
            "attention_head_dim":8,"cross_attention_dim":768,"layers_per_block":2}"#;
        let c = UNetConfig::from_json(sd15).unwrap();
        assert_eq!(c, UNetConfig::sd15());
        assert_eq!(c.num_down_residuals(), 12);
        let sd21 = sd15
            .replace("\"attention_head_dim\":8", "\"attention_head_dim\":[5,10,20,20],\"use_linear_projection\":true")
            .replace("768", "1024");
        let c = UNetConfig::from_json(&sd21).unwrap();
        assert_eq!(c.num_attention_heads, vec![5, 10, 20, 20]);
        assert!(c.use_linear_projection);
        assert_eq!(c.cross_attention_dim, 1024);
    }

    #[test]
    fn refuses_sdxl_and_bad_lists() {
        let sdxl = r#"{"block_out_channels":[320,640,1280],
            "down_block_types":["DownBlock2D","CrossAttnDownBlock2D","CrossAttnDownBlock2D"],
            "up_block_types":["CrossAttnUpBlock2D","CrossAttnUpBlock2D","UpBlock2D"],
            "attention_head_dim":[5,10,20],"cross_attention_dim":2048,"addition_embed_type":"text_time"}"#;
        let e = UNetConfig::from_json(sdxl).unwrap_err();
        assert!(e.contains("addition_embed_type"), "{e}");
        let bad = sdxl.replace(",\"addition_embed_type\":\"text_time\"", "").replace("[5,10,20]", "[5,10]");
        let e = UNetConfig::from_json(&bad).unwrap_err();
        assert!(e.contains("attention_head_dim"), "{e}");
    }
}
