//! The UNet's down, mid and up blocks (diffusers' `CrossAttnDownBlock2D` /
//! `DownBlock2D`, `UNetMidBlock2DCrossAttn`, `CrossAttnUpBlock2D` /
//! `UpBlock2D`). The down and mid blocks are shared with the ControlNet.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::attention::{AttentionMode, Transformer2D, TransformerSpec};
use super::config::{BlockKind, UNetConfig};
use super::resnet::{Downsample2D, ResnetBlock2D, Upsample2D};

fn transformer_spec(config: &UNetConfig, level: usize) -> TransformerSpec {
    TransformerSpec {
        heads: config.num_attention_heads[level],
        layers: config.transformer_layers_per_block[level],
        context_dim: config.cross_attention_dim,
        groups: config.norm_num_groups,
        linear_projection: config.use_linear_projection,
    }
}

/// One down block: ResNets (each followed by a transformer in cross-attention
/// blocks) and, except at the last level, a stride-2 downsampler.
#[derive(Debug, Clone)]
pub(crate) struct DownBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2D>,
    downsampler: Option<Downsample2D>,
}

impl DownBlock {
    /// Loads `down_blocks.{level}` of a UNet or ControlNet.
    pub(crate) fn load(vb: VarBuilder, config: &UNetConfig, level: usize) -> Result<Self> {
        let c_out = config.block_out_channels[level];
        let c_in = if level == 0 { c_out } else { config.block_out_channels[level - 1] };
        let temb = config.time_embed_dim();
        let resnets = (0..config.layers_per_block)
            .map(|j| {
                ResnetBlock2D::load(
                    vb.pp(format!("resnets.{j}")),
                    if j == 0 { c_in } else { c_out },
                    c_out,
                    temb,
                    config.norm_num_groups,
                    config.norm_eps,
                    1.0,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let attentions = match config.down_blocks[level] {
            BlockKind::Plain => Vec::new(),
            BlockKind::CrossAttn => (0..config.layers_per_block)
                .map(|j| Transformer2D::load(vb.pp(format!("attentions.{j}")), c_out, transformer_spec(config, level)))
                .collect::<Result<Vec<_>>>()?,
        };
        let last = level + 1 == config.block_out_channels.len();
        let downsampler = if last {
            None
        } else {
            Some(Downsample2D::load(vb.pp("downsamplers.0"), c_out, config.downsample_padding)?)
        };
        Ok(Self { resnets, attentions, downsampler })
    }

    /// Runs the block, pushing each intermediate output (the UNet's skip
    /// connections, the ControlNet's residual taps) onto `skips`.
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        temb: &Tensor,
        context: &Tensor,
        mode: &AttentionMode,
        skips: &mut Vec<Tensor>,
    ) -> Result<Tensor> {
        let mut x = x.clone();
        for (j, resnet) in self.resnets.iter().enumerate() {
            x = resnet.forward(&x, temb)?;
            if let Some(attn) = self.attentions.get(j) {
                x = attn.forward(&x, context, mode)?;
            }
            skips.push(x.clone());
        }
        if let Some(down) = &self.downsampler {
            x = down.forward(&x)?;
            skips.push(x.clone());
        }
        Ok(x)
    }
}

/// The mid block: ResNet, transformer, ResNet at the lowest resolution.
#[derive(Debug, Clone)]
pub(crate) struct MidBlock {
    resnet_0: ResnetBlock2D,
    attention: Transformer2D,
    resnet_1: ResnetBlock2D,
}

impl MidBlock {
    /// Loads `mid_block` of a UNet or ControlNet.
    pub(crate) fn load(vb: VarBuilder, config: &UNetConfig) -> Result<Self> {
        let level = config.block_out_channels.len() - 1;
        let c = config.block_out_channels[level];
        let resnet = |j: usize| {
            ResnetBlock2D::load(
                vb.pp(format!("resnets.{j}")),
                c,
                c,
                config.time_embed_dim(),
                config.norm_num_groups,
                config.norm_eps,
                config.mid_block_scale_factor,
            )
        };
        Ok(Self {
            resnet_0: resnet(0)?,
            attention: Transformer2D::load(vb.pp("attentions.0"), c, transformer_spec(config, level))?,
            resnet_1: resnet(1)?,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, temb: &Tensor, context: &Tensor, mode: &AttentionMode) -> Result<Tensor> {
        let x = self.resnet_0.forward(x, temb)?;
        let x = self.attention.forward(&x, context, mode)?;
        self.resnet_1.forward(&x, temb)
    }
}

/// One up block: `layers_per_block + 1` ResNets, each reading the previous
/// output concatenated with a skip tensor (popped from the end), each
/// followed by a transformer in cross-attention blocks; then, except at the
/// last level, an upsampler.
#[derive(Debug, Clone)]
pub(crate) struct UpBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2D>,
    upsampler: Option<Upsample2D>,
}

impl UpBlock {
    /// Loads `up_blocks.{index}` (index 0 is the lowest resolution).
    pub(crate) fn load(vb: VarBuilder, config: &UNetConfig, index: usize) -> Result<Self> {
        let levels = config.block_out_channels.len();
        let rev = |i: usize| config.block_out_channels[levels - 1 - i];
        let c_out = rev(index);
        let c_prev = rev(index.saturating_sub(1));
        let c_in = rev((index + 1).min(levels - 1));
        let level = levels - 1 - index;
        let layers = config.layers_per_block + 1;
        let resnets = (0..layers)
            .map(|j| {
                let skip = if j + 1 == layers { c_in } else { c_out };
                let input = if j == 0 { c_prev } else { c_out };
                ResnetBlock2D::load(
                    vb.pp(format!("resnets.{j}")),
                    input + skip,
                    c_out,
                    config.time_embed_dim(),
                    config.norm_num_groups,
                    config.norm_eps,
                    1.0,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let spec = transformer_spec(config, level);
        let attentions = match config.up_blocks[index] {
            BlockKind::Plain => Vec::new(),
            BlockKind::CrossAttn => (0..layers)
                .map(|j| Transformer2D::load(vb.pp(format!("attentions.{j}")), c_out, spec))
                .collect::<Result<Vec<_>>>()?,
        };
        let upsampler = if index + 1 == levels { None } else { Some(Upsample2D::load(vb.pp("upsamplers.0"), c_out)?) };
        Ok(Self { resnets, attentions, upsampler })
    }

    /// Number of skip tensors this block consumes.
    pub(crate) fn skips_needed(&self) -> usize {
        self.resnets.len()
    }

    /// `skips` are this block's skip tensors in the order they were produced.
    /// `upsample_to` is the size of the next block's last skip.
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        skips: &[Tensor],
        temb: &Tensor,
        context: &Tensor,
        mode: &AttentionMode,
        upsample_to: Option<(usize, usize)>,
    ) -> Result<Tensor> {
        let mut x = x.clone();
        for (j, resnet) in self.resnets.iter().enumerate() {
            let skip = &skips[skips.len() - 1 - j];
            x = resnet.forward(&Tensor::cat(&[&x, skip], 1)?, temb)?;
            if let Some(attn) = self.attentions.get(j) {
                x = attn.forward(&x, context, mode)?;
            }
        }
        match (&self.upsampler, upsample_to) {
            (Some(up), Some(size)) => up.forward(&x, size),
            (Some(up), None) => {
                let (_, _, h, w) = x.dims4()?;
                up.forward(&x, (2 * h, 2 * w))
            }
            (None, _) => Ok(x),
        }
    }
}
