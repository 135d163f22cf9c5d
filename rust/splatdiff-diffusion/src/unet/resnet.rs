//! ResNet blocks, resampling convolutions and the timestep embedding
//! (diffusers' `ResnetBlock2D`, `Downsample2D`, `Upsample2D`, `Timesteps`,
//! `TimestepEmbedding`), with diffusers' weight names.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::ops::{Conv2d, GroupNorm};

/// `ResnetBlock2D`: two norm-SiLU-conv stages, the (already SiLU'd) timestep
/// embedding added between them, and a 1x1 shortcut when the width changes.
#[derive(Debug, Clone)]
pub(crate) struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Linear,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    output_scale_factor: f64,
}

impl ResnetBlock2D {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn load(
        vb: VarBuilder,
        c_in: usize,
        c_out: usize,
        temb_channels: usize,
        groups: usize,
        eps: f64,
        output_scale_factor: f64,
    ) -> Result<Self> {
        let conv_shortcut =
            if c_in != c_out { Some(Conv2d::load(vb.pp("conv_shortcut"), c_in, c_out, 1, 0, 1)?) } else { None };
        Ok(Self {
            norm1: GroupNorm::load(vb.pp("norm1"), groups, c_in, eps)?,
            conv1: Conv2d::load(vb.pp("conv1"), c_in, c_out, 3, 1, 1)?,
            time_emb_proj: candle_nn::linear(temb_channels, c_out, vb.pp("time_emb_proj"))?,
            norm2: GroupNorm::load(vb.pp("norm2"), groups, c_out, eps)?,
            conv2: Conv2d::load(vb.pp("conv2"), c_out, c_out, 3, 1, 1)?,
            conv_shortcut,
            output_scale_factor,
        })
    }

    /// `temb_silu` is `silu(time embedding)`, shape `(batch, temb_channels)`.
    pub(crate) fn forward(&self, x: &Tensor, temb_silu: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward_silu(x)?)?;
        let t = self.time_emb_proj.forward(temb_silu)?.unsqueeze(2)?.unsqueeze(3)?;
        let h = h.broadcast_add(&t)?;
        let h = self.conv2.forward(&self.norm2.forward_silu(&h)?)?;
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv.forward(x)?,
            None => x.clone(),
        };
        let out = (shortcut + h)?;
        if self.output_scale_factor == 1.0 {
            Ok(out)
        } else {
            out / self.output_scale_factor
        }
    }
}

/// `Downsample2D` with a convolution: 3x3, stride 2.
#[derive(Debug, Clone)]
pub(crate) struct Downsample2D {
    conv: Conv2d,
    padding: usize,
}

impl Downsample2D {
    pub(crate) fn load(vb: VarBuilder, channels: usize, padding: usize) -> Result<Self> {
        Ok(Self { conv: Conv2d::load(vb.pp("conv"), channels, channels, 3, padding, 2)?, padding })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.padding == 0 {
            // diffusers pads right and bottom by one when the conv has no padding.
            let x = x.pad_with_zeros(3, 0, 1)?.pad_with_zeros(2, 0, 1)?;
            self.conv.forward(&x)
        } else {
            self.conv.forward(x)
        }
    }
}

/// `Upsample2D` with a convolution: nearest-neighbour resize, then 3x3 conv.
#[derive(Debug, Clone)]
pub(crate) struct Upsample2D {
    conv: Conv2d,
}

impl Upsample2D {
    pub(crate) fn load(vb: VarBuilder, channels: usize) -> Result<Self> {
        Ok(Self { conv: Conv2d::load(vb.pp("conv"), channels, channels, 3, 1, 1)? })
    }

    /// Resizes to `(h, w)` (the size of the skip tensor it will be joined
    /// with, which handles latents whose sides are not multiples of 2^levels).
    pub(crate) fn forward(&self, x: &Tensor, (h, w): (usize, usize)) -> Result<Tensor> {
        self.conv.forward(&x.upsample_nearest2d(h, w)?)
    }
}

/// diffusers' `get_timestep_embedding`: `dim` sinusoids of `timestep` for
/// each of `batch` items.
pub(crate) fn timestep_embedding(
    timestep: f64,
    batch: usize,
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
    device: &Device,
) -> Result<Tensor> {
    let half = dim / 2;
    let mut emb = Vec::with_capacity(dim);
    // diffusers computes these in f32: exp(-ln(10000) * i / (half - shift)) * t.
    let args: Vec<f32> = (0..half)
        .map(|i| {
            let exponent = -(10000f32.ln()) * i as f32 / (half as f32 - freq_shift as f32);
            exponent.exp() * timestep as f32
        })
        .collect();
    let (first, second): (Vec<f32>, Vec<f32>) = if flip_sin_to_cos {
        (args.iter().map(|a| a.cos()).collect(), args.iter().map(|a| a.sin()).collect())
    } else {
        (args.iter().map(|a| a.sin()).collect(), args.iter().map(|a| a.cos()).collect())
    };
    emb.extend(first);
    emb.extend(second);
    if dim % 2 == 1 {
        emb.push(0.0);
    }
    Tensor::from_vec(emb, (1, dim), device)?.repeat((batch, 1))
}

/// `Timesteps` + `TimestepEmbedding`: sinusoids, linear, SiLU, linear.
#[derive(Debug, Clone)]
pub(crate) struct TimeEmbedding {
    linear_1: Linear,
    linear_2: Linear,
    channels: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
}

impl TimeEmbedding {
    /// Loads `time_embedding.linear_{1,2}` from `vb` (the model's root).
    pub(crate) fn load(
        vb: VarBuilder,
        channels: usize,
        embed_dim: usize,
        flip_sin_to_cos: bool,
        freq_shift: f64,
    ) -> Result<Self> {
        let vb = vb.pp("time_embedding");
        Ok(Self {
            linear_1: candle_nn::linear(channels, embed_dim, vb.pp("linear_1"))?,
            linear_2: candle_nn::linear(embed_dim, embed_dim, vb.pp("linear_2"))?,
            channels,
            flip_sin_to_cos,
            freq_shift,
        })
    }

    /// `silu(embedding(timestep))` for `batch` items (every consumer applies
    /// SiLU first, so it is done once here).
    pub(crate) fn forward_silu(&self, timestep: f64, batch: usize, dtype: DType, device: &Device) -> Result<Tensor> {
        let t = timestep_embedding(timestep, batch, self.channels, self.flip_sin_to_cos, self.freq_shift, device)?
            .to_dtype(dtype)?;
        let t = self.linear_1.forward(&t)?.silu()?;
        self.linear_2.forward(&t)?.silu()
    }
}
