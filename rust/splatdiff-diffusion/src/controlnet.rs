//! ControlNet (diffusers' `ControlNetModel`): a trainable copy of the UNet's
//! down and mid blocks that reads a conditioning image (depth, normals,
//! lines) and emits, through zero-initialised 1x1 convolutions, residuals
//! that the UNet adds to its skip connections and mid block.
//!
//! The down and mid blocks are the UNet module's own; this file adds the
//! conditioning-image embedding and the residual taps.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

use crate::unet::{AttentionMode, ControlResiduals, Conv2d, DownBlock, MidBlock, TimeEmbedding, UNetConfig};
use crate::weights::Weights;
use crate::{DiffusionError, Result};

/// A ControlNet's architecture: the UNet-shaped part plus the conditioning embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlNetConfig {
    /// The down/mid architecture (must match the base UNet's).
    pub unet: UNetConfig,
    /// Channels of the conditioning image (3 for RGB control images).
    pub conditioning_channels: usize,
    /// Widths of the conditioning embedding's stages; each after the first halves the resolution.
    pub conditioning_embedding_out_channels: Vec<usize>,
}

#[derive(Deserialize)]
struct RawControlNet {
    #[serde(default = "default_cond_channels")]
    conditioning_channels: usize,
    #[serde(default = "default_embedding_channels")]
    conditioning_embedding_out_channels: Vec<usize>,
    #[serde(default)]
    global_pool_conditions: bool,
    #[serde(default)]
    controlnet_conditioning_channel_order: Option<String>,
}

fn default_cond_channels() -> usize {
    3
}
fn default_embedding_channels() -> Vec<usize> {
    vec![16, 32, 96, 256]
}

impl ControlNetConfig {
    /// Reads and checks a diffusers ControlNet `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| DiffusionError::io(path, e))?;
        Self::from_json(&text).map_err(|m| DiffusionError::format(path, m))
    }

    /// Parses the JSON text of a diffusers ControlNet config.
    pub fn from_json(text: &str) -> std::result::Result<Self, String> {
        let unet = UNetConfig::from_json(text)?;
        let raw: RawControlNet = serde_json::from_str(text).map_err(|e| format!("not a ControlNet config: {e}"))?;
        if raw.global_pool_conditions {
            return Err("unsupported ControlNet setting global_pool_conditions = true".into());
        }
        if raw.controlnet_conditioning_channel_order.as_deref().is_some_and(|o| o != "rgb") {
            return Err(format!(
                "unsupported controlnet_conditioning_channel_order {:?} (only \"rgb\")",
                raw.controlnet_conditioning_channel_order
            ));
        }
        if raw.conditioning_embedding_out_channels.is_empty() {
            return Err("conditioning_embedding_out_channels is empty".into());
        }
        Ok(Self {
            unet,
            conditioning_channels: raw.conditioning_channels,
            conditioning_embedding_out_channels: raw.conditioning_embedding_out_channels,
        })
    }

    /// Factor by which the conditioning image is larger than the latent (8 for SD ControlNets).
    pub fn downscale(&self) -> usize {
        1 << (self.conditioning_embedding_out_channels.len() - 1)
    }

    /// Checks that this ControlNet's residuals fit `base`; `source` names the
    /// ControlNet's config file in the error.
    pub fn check_fits(&self, base: &UNetConfig, source: &Path) -> Result<()> {
        let mine = &self.unet;
        let mismatch = |what: &str, a: String, b: String| {
            Err(DiffusionError::format(
                source,
                format!("this ControlNet does not match the base model: its {what} is {a}, the UNet's is {b} (is it for another Stable Diffusion version?)"),
            ))
        };
        if mine.cross_attention_dim != base.cross_attention_dim {
            return mismatch(
                "cross_attention_dim",
                mine.cross_attention_dim.to_string(),
                base.cross_attention_dim.to_string(),
            );
        }
        if mine.block_out_channels != base.block_out_channels {
            return mismatch(
                "block_out_channels",
                format!("{:?}", mine.block_out_channels),
                format!("{:?}", base.block_out_channels),
            );
        }
        if mine.layers_per_block != base.layers_per_block {
            return mismatch("layers_per_block", mine.layers_per_block.to_string(), base.layers_per_block.to_string());
        }
        if mine.in_channels != base.in_channels {
            return mismatch("in_channels", mine.in_channels.to_string(), base.in_channels.to_string());
        }
        Ok(())
    }
}

/// Convolutions that turn the conditioning image into a latent-sized map.
#[derive(Debug, Clone)]
struct ConditioningEmbedding {
    conv_in: Conv2d,
    blocks: Vec<Conv2d>,
    conv_out: Conv2d,
}

impl ConditioningEmbedding {
    fn load(vb: VarBuilder, config: &ControlNetConfig) -> candle_core::Result<Self> {
        let ch = &config.conditioning_embedding_out_channels;
        let mut blocks = Vec::with_capacity(2 * (ch.len() - 1));
        for i in 0..ch.len() - 1 {
            blocks.push(Conv2d::load(vb.pp(format!("blocks.{}", 2 * i)), ch[i], ch[i], 3, 1, 1)?);
            blocks.push(Conv2d::load(vb.pp(format!("blocks.{}", 2 * i + 1)), ch[i], ch[i + 1], 3, 1, 2)?);
        }
        Ok(Self {
            conv_in: Conv2d::load(vb.pp("conv_in"), config.conditioning_channels, ch[0], 3, 1, 1)?,
            blocks,
            conv_out: Conv2d::load(vb.pp("conv_out"), ch[ch.len() - 1], config.unet.block_out_channels[0], 3, 1, 1)?,
        })
    }

    fn forward(&self, image: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = self.conv_in.forward(image)?.silu()?;
        for block in &self.blocks {
            x = block.forward(&x)?.silu()?;
        }
        self.conv_out.forward(&x)
    }
}

/// One ControlNet.
#[derive(Debug, Clone)]
pub struct ControlNetModel {
    config: ControlNetConfig,
    conv_in: Conv2d,
    time_embedding: TimeEmbedding,
    cond_embedding: ConditioningEmbedding,
    down_blocks: Vec<DownBlock>,
    mid_block: MidBlock,
    down_taps: Vec<Conv2d>,
    mid_tap: Conv2d,
}

/// Names of the weight files a diffusers ControlNet folder may hold, in order of preference.
const WEIGHT_FILES: [&str; 2] = ["diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"];

impl ControlNetModel {
    /// Builds the ControlNet from weights under diffusers' names.
    pub fn new(vb: VarBuilder, config: &ControlNetConfig) -> Result<Self> {
        let unet = &config.unet;
        let levels = unet.block_out_channels.len();
        let c0 = unet.block_out_channels[0];
        let down_blocks = (0..levels)
            .map(|i| DownBlock::load(vb.pp(format!("down_blocks.{i}")), unet, i))
            .collect::<candle_core::Result<Vec<_>>>()?;
        // One tap per skip tensor, with that skip's width.
        let mut tap_channels = vec![c0];
        for (i, &c) in unet.block_out_channels.iter().enumerate() {
            tap_channels.extend(std::iter::repeat_n(c, unet.layers_per_block));
            if i + 1 < levels {
                tap_channels.push(c);
            }
        }
        let down_taps = tap_channels
            .iter()
            .enumerate()
            .map(|(i, &c)| Conv2d::load(vb.pp(format!("controlnet_down_blocks.{i}")), c, c, 1, 0, 1))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let c_mid = unet.block_out_channels[levels - 1];
        Ok(Self {
            conv_in: Conv2d::load(vb.pp("conv_in"), unet.in_channels, c0, 3, 1, 1)?,
            time_embedding: TimeEmbedding::load(
                vb.clone(),
                c0,
                unet.time_embed_dim(),
                unet.flip_sin_to_cos,
                unet.freq_shift,
            )?,
            cond_embedding: ConditioningEmbedding::load(vb.pp("controlnet_cond_embedding"), config)?,
            down_blocks,
            mid_block: MidBlock::load(vb.pp("mid_block"), unet)?,
            down_taps,
            mid_tap: Conv2d::load(vb.pp("controlnet_mid_block"), c_mid, c_mid, 1, 0, 1)?,
            config: config.clone(),
        })
    }

    /// Loads a diffusers ControlNet folder (`config.json` +
    /// `diffusion_pytorch_model.safetensors`, memory-mapped) for use with a
    /// UNet of architecture `base`. A ControlNet made for another base
    /// (different text width or block widths) is refused naming its config file.
    pub fn from_folder(dir: &Path, base: &UNetConfig, dtype: DType, device: &Device) -> Result<Self> {
        let config_path = dir.join("config.json");
        if !dir.is_dir() {
            return Err(DiffusionError::io(
                dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "ControlNet folder not found"),
            ));
        }
        let config = ControlNetConfig::from_file(&config_path)?;
        config.check_fits(base, &config_path)?;
        let weights: PathBuf = WEIGHT_FILES.iter().map(|f| dir.join(f)).find(|p| p.is_file()).ok_or_else(|| {
            DiffusionError::io(
                dir.join(WEIGHT_FILES[0]),
                std::io::Error::new(std::io::ErrorKind::NotFound, "ControlNet weights not found"),
            )
        })?;
        let vb = Weights::from_file(&weights)?.var_builder(dtype, device);
        Self::new(vb, &config).map_err(|e| match e {
            DiffusionError::Candle(e) => DiffusionError::format(&weights, e.to_string()),
            e => e,
        })
    }

    /// The architecture this ControlNet was built with.
    pub fn config(&self) -> &ControlNetConfig {
        &self.config
    }

    /// Residuals for `sample` `(batch, in_channels, h, w)` at `timestep`,
    /// given the text embeddings and the conditioning `image`
    /// `(batch, conditioning_channels, h*8, w*8)` with values in [0, 1],
    /// all multiplied by `scale`.
    pub fn forward(
        &self,
        sample: &Tensor,
        timestep: f64,
        encoder_hidden_states: &Tensor,
        image: &Tensor,
        scale: f64,
    ) -> Result<ControlResiduals> {
        let (batch, _, h, w) = sample.dims4()?;
        let (ib, ic, ih, iw) = image.dims4()?;
        let f = self.config.downscale();
        if ib != batch || ic != self.config.conditioning_channels || ih != h * f || iw != w * f {
            return Err(DiffusionError::Invalid(format!(
                "ControlNet image is {:?}; for a latent of {h}x{w} and batch {batch} it must be ({batch}, {}, {}, {})",
                image.dims(),
                self.config.conditioning_channels,
                h * f,
                w * f
            )));
        }
        let temb = self.time_embedding.forward_silu(timestep, batch, sample.dtype(), sample.device())?;
        let cond = self.cond_embedding.forward(&image.to_dtype(sample.dtype())?)?;
        let mut x = (self.conv_in.forward(sample)? + cond)?;
        let mut skips = vec![x.clone()];
        let plain = AttentionMode::Plain;
        for block in &self.down_blocks {
            x = block.forward(&x, &temb, encoder_hidden_states, &plain, &mut skips)?;
        }
        let x = self.mid_block.forward(&x, &temb, encoder_hidden_states, &plain)?;
        let down = skips
            .iter()
            .zip(&self.down_taps)
            .map(|(s, tap)| tap.forward(s)? * scale)
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(ControlResiduals { down, mid: (self.mid_tap.forward(&x)? * scale)? })
    }
}

/// Several ControlNets applied together; their residuals add up.
#[derive(Debug, Clone, Default)]
pub struct MultiControlNet {
    nets: Vec<ControlNetModel>,
}

impl MultiControlNet {
    /// Combines `nets` (each already checked against the base UNet).
    pub fn new(nets: Vec<ControlNetModel>) -> Self {
        Self { nets }
    }

    /// The ControlNets, in order.
    pub fn nets(&self) -> &[ControlNetModel] {
        &self.nets
    }

    /// Sum of each ControlNet's residuals for its `(image, scale)` in
    /// `inputs` (one per net, same order). A net with scale 0 (e.g. outside
    /// its start/end range) is skipped; `None` when every net is skipped.
    pub fn forward(
        &self,
        sample: &Tensor,
        timestep: f64,
        encoder_hidden_states: &Tensor,
        inputs: &[(&Tensor, f64)],
    ) -> Result<Option<ControlResiduals>> {
        if inputs.len() != self.nets.len() {
            return Err(DiffusionError::Invalid(format!(
                "{} ControlNet inputs given for {} ControlNets",
                inputs.len(),
                self.nets.len()
            )));
        }
        let mut total: Option<ControlResiduals> = None;
        for (net, &(image, scale)) in self.nets.iter().zip(inputs) {
            if scale == 0.0 {
                continue;
            }
            let r = net.forward(sample, timestep, encoder_hidden_states, image, scale)?;
            total = Some(match total {
                None => r,
                Some(t) => t.add(&r)?,
            });
        }
        Ok(total)
    }
}
