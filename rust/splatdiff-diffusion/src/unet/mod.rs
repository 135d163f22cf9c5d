//! Our own `UNet2DConditionModel` (SD 1.x and 2.x) on candle-nn, loading
//! diffusers' weights under diffusers' names, with two hooks that
//! candle-transformers' UNet lacks: ControlNet residuals added to the skip
//! connections and mid block, and cross-frame self-attention
//! ([`AttentionMode`]). On the CPU its convolutions, group norms and
//! attention run through fused f32 kernels (see `ops`).

mod attention;
mod blocks;
mod config;
mod ops;
mod resnet;

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

pub use attention::{AttentionMode, CrossFrameAttention, CrossFrameKeys};
pub use config::{BlockKind, PerBlock, UNetConfig};

pub(crate) use blocks::{DownBlock, MidBlock};
pub(crate) use ops::{Conv2d, GroupNorm};
pub(crate) use resnet::TimeEmbedding;

use crate::{DiffusionError, Result};

/// What a ControlNet adds to the UNet: one tensor per skip connection of the
/// down path (in the order they are produced) and one for the mid block,
/// already multiplied by the conditioning scale.
#[derive(Debug, Clone)]
pub struct ControlResiduals {
    /// Residuals for the down-path skips (`UNetConfig::num_down_residuals` of them).
    pub down: Vec<Tensor>,
    /// Residual for the mid block's output.
    pub mid: Tensor,
}

impl ControlResiduals {
    /// Element-wise sum of two sets of residuals (several ControlNets at once).
    pub fn add(&self, other: &ControlResiduals) -> Result<ControlResiduals> {
        if self.down.len() != other.down.len() {
            return Err(DiffusionError::Invalid(format!(
                "cannot sum ControlNet residuals: {} vs {} down residuals",
                self.down.len(),
                other.down.len()
            )));
        }
        let down = self.down.iter().zip(&other.down).map(|(a, b)| a + b).collect::<candle_core::Result<Vec<_>>>()?;
        Ok(ControlResiduals { down, mid: (&self.mid + &other.mid)? })
    }
}

/// The denoising UNet of Stable Diffusion 1.x / 2.x.
#[derive(Debug, Clone)]
pub struct UNet2DConditionModel {
    config: UNetConfig,
    conv_in: Conv2d,
    time_embedding: TimeEmbedding,
    down_blocks: Vec<DownBlock>,
    mid_block: MidBlock,
    up_blocks: Vec<blocks::UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl UNet2DConditionModel {
    /// Builds the UNet from weights under diffusers' names (`conv_in.weight`,
    /// `down_blocks.0.attentions.0...`). A missing or misshapen tensor is
    /// reported with its name.
    pub fn new(vb: VarBuilder, config: &UNetConfig) -> Result<Self> {
        let levels = config.block_out_channels.len();
        let c0 = config.block_out_channels[0];
        let down_blocks = (0..levels)
            .map(|i| DownBlock::load(vb.pp(format!("down_blocks.{i}")), config, i))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let up_blocks = (0..levels)
            .map(|i| blocks::UpBlock::load(vb.pp(format!("up_blocks.{i}")), config, i))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            conv_in: Conv2d::load(vb.pp("conv_in"), config.in_channels, c0, 3, 1, 1)?,
            time_embedding: TimeEmbedding::load(
                vb.clone(),
                c0,
                config.time_embed_dim(),
                config.flip_sin_to_cos,
                config.freq_shift,
            )?,
            down_blocks,
            mid_block: MidBlock::load(vb.pp("mid_block"), config)?,
            up_blocks,
            conv_norm_out: GroupNorm::load(vb.pp("conv_norm_out"), config.norm_num_groups, c0, config.norm_eps)?,
            conv_out: Conv2d::load(vb.pp("conv_out"), c0, config.out_channels, 3, 1, 1)?,
            config: config.clone(),
        })
    }

    /// The architecture this model was built with.
    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// One denoising evaluation: predicts noise (or velocity, for
    /// v-prediction models) for `sample` `(batch, in_channels, h, w)` at
    /// `timestep`, conditioned on `encoder_hidden_states`
    /// `(batch, tokens, cross_attention_dim)`, with optional ControlNet
    /// `residuals` and the self-attention `attention` mode.
    pub fn forward(
        &self,
        sample: &Tensor,
        timestep: f64,
        encoder_hidden_states: &Tensor,
        residuals: Option<&ControlResiduals>,
        attention: &AttentionMode,
    ) -> Result<Tensor> {
        let (batch, channels, _, _) = sample.dims4()?;
        if channels != self.config.in_channels {
            return Err(DiffusionError::Invalid(format!(
                "UNet sample has {channels} channels, the model takes {}",
                self.config.in_channels
            )));
        }
        let (ctx_batch, _, ctx_dim) = encoder_hidden_states.dims3()?;
        if ctx_batch != batch || ctx_dim != self.config.cross_attention_dim {
            return Err(DiffusionError::Invalid(format!(
                "text embeddings {:?} do not fit a batch of {batch} and cross_attention_dim {}",
                encoder_hidden_states.dims(),
                self.config.cross_attention_dim
            )));
        }
        if let Some(r) = residuals {
            if r.down.len() != self.config.num_down_residuals() {
                return Err(DiffusionError::Invalid(format!(
                    "ControlNet gave {} down residuals, the UNet has {} skip connections",
                    r.down.len(),
                    self.config.num_down_residuals()
                )));
            }
        }
        let temb = self.time_embedding.forward_silu(timestep, batch, sample.dtype(), sample.device())?;
        let sample = if self.config.center_input_sample { ((sample * 2.0)? - 1.0)? } else { sample.clone() };
        let mut x = self.conv_in.forward(&sample)?;
        let mut skips = vec![x.clone()];
        for block in &self.down_blocks {
            x = block.forward(&x, &temb, encoder_hidden_states, attention, &mut skips)?;
        }
        x = self.mid_block.forward(&x, &temb, encoder_hidden_states, attention)?;
        if let Some(r) = residuals {
            skips = skips.iter().zip(&r.down).map(|(s, c)| s + c).collect::<candle_core::Result<Vec<_>>>()?;
            x = (x + &r.mid)?;
        }
        for block in &self.up_blocks {
            let n = block.skips_needed();
            let mine = skips.split_off(skips.len() - n);
            let upsample_to = match skips.last() {
                Some(s) => {
                    let (_, _, h, w) = s.dims4()?;
                    Some((h, w))
                }
                None => None,
            };
            x = block.forward(&x, &mine, &temb, encoder_hidden_states, attention, upsample_to)?;
        }
        let x = self.conv_norm_out.forward_silu(&x)?;
        Ok(self.conv_out.forward(&x)?)
    }
}
