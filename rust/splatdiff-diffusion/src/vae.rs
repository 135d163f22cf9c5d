//! Stable Diffusion's image autoencoder (diffusers' `AutoencoderKL`) on
//! candle-nn: images in [-1, 1] to the latent distribution and latents back
//! to images, loading diffusers' `vae/` weights under their names.
//!
//! Our own module rather than candle-transformers' because img2img needs the
//! latent distribution itself (its mean, and samples drawn with noise the
//! caller supplies so a seed reproduces the image), which that module keeps
//! private.

use std::path::Path;

use candle_core::{DType, Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use serde::Deserialize;

use crate::error::{DiffusionError, Result};
// The UNet's convolution and group norm: fused f32 kernels on the CPU.
use crate::unet::{Conv2d, GroupNorm};

/// The settings of diffusers' `vae/config.json` that shape the network.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct VaeConfig {
    /// Image channels in (3).
    #[serde(default = "three")]
    pub in_channels: usize,
    /// Image channels out (3).
    #[serde(default = "three")]
    pub out_channels: usize,
    /// Channels per resolution level; the image is downsampled
    /// `2^(levels - 1)` times (8 for SD).
    pub block_out_channels: Vec<usize>,
    /// ResNets per encoder level (the decoder has one more).
    #[serde(default = "one")]
    pub layers_per_block: usize,
    /// Latent channels (4).
    #[serde(default = "four")]
    pub latent_channels: usize,
    /// GroupNorm groups.
    #[serde(default = "thirty_two")]
    pub norm_num_groups: usize,
    /// Factor from raw latents to the UNet's latent space (0.18215 for SD).
    #[serde(default = "sd_scaling")]
    pub scaling_factor: f64,
    /// Shift subtracted before scaling (null for SD 1.x / 2.x).
    #[serde(default)]
    pub shift_factor: Option<f64>,
    /// Whether the 1x1 `quant_conv` follows the encoder.
    #[serde(default = "yes")]
    pub use_quant_conv: bool,
    /// Whether the 1x1 `post_quant_conv` precedes the decoder.
    #[serde(default = "yes")]
    pub use_post_quant_conv: bool,
    /// Run the VAE in f32 even when the rest of the model is f16 (SD's VAE
    /// overflows in f16; diffusers' `force_upcast`).
    #[serde(default = "yes")]
    pub force_upcast: bool,
    /// Whether the mid blocks have their self-attention.
    #[serde(default = "yes")]
    pub mid_block_add_attention: bool,
    /// Block types, checked to be the plain encoder/decoder blocks.
    #[serde(default)]
    pub down_block_types: Vec<String>,
    /// Block types, checked to be the plain encoder/decoder blocks.
    #[serde(default)]
    pub up_block_types: Vec<String>,
}

fn three() -> usize {
    3
}
fn one() -> usize {
    1
}
fn four() -> usize {
    4
}
fn thirty_two() -> usize {
    32
}
fn sd_scaling() -> f64 {
    0.18215
}
fn yes() -> bool {
    true
}

impl VaeConfig {
    /// Reads a diffusers `vae/config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| DiffusionError::io(path, e))?;
        Self::from_json(&text).map_err(|m| DiffusionError::format(path, m))
    }

    /// Parses and checks the JSON of an `AutoencoderKL` config.
    pub fn from_json(text: &str) -> std::result::Result<Self, String> {
        let c: Self = serde_json::from_str(text).map_err(|e| e.to_string())?;
        c.check()?;
        Ok(c)
    }

    fn check(&self) -> std::result::Result<(), String> {
        let c = self;
        if c.block_out_channels.is_empty() {
            return Err("block_out_channels is empty".into());
        }
        if let Some(&bad) =
            c.block_out_channels.iter().find(|&&ch| c.norm_num_groups == 0 || ch % c.norm_num_groups != 0)
        {
            return Err(format!(
                "block_out_channels entry {bad} is not divisible by norm_num_groups {}",
                c.norm_num_groups
            ));
        }
        let plain = |types: &[String], want: &str| types.iter().find(|t| *t != want).cloned();
        if let Some(t) =
            plain(&c.down_block_types, "DownEncoderBlock2D").or_else(|| plain(&c.up_block_types, "UpDecoderBlock2D"))
        {
            return Err(format!("unsupported VAE block type `{t}`"));
        }
        Ok(())
    }

    /// How many times the image side is halved to reach the latent (8 for SD).
    pub fn downscale_factor(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

const EPS: f64 = 1e-6;

/// A `k x k` convolution: "same" padding at stride 1; no padding at stride 2
/// (the encoder pads right and bottom itself, as diffusers does).
fn conv(vb: VarBuilder, cin: usize, cout: usize, k: usize, stride: usize) -> candle_core::Result<Conv2d> {
    let padding = if stride == 1 { k / 2 } else { 0 };
    Conv2d::load(vb, cin, cout, k, padding, stride)
}

fn norm(vb: VarBuilder, groups: usize, channels: usize) -> candle_core::Result<GroupNorm> {
    GroupNorm::load(vb, groups, channels, EPS)
}

/// diffusers' `ResnetBlock2D` without a time embedding.
#[derive(Debug, Clone)]
struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    norm2: GroupNorm,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
}

impl ResnetBlock {
    fn load(vb: VarBuilder, cin: usize, cout: usize, groups: usize) -> candle_core::Result<Self> {
        Ok(Self {
            norm1: norm(vb.pp("norm1"), groups, cin)?,
            conv1: conv(vb.pp("conv1"), cin, cout, 3, 1)?,
            norm2: norm(vb.pp("norm2"), groups, cout)?,
            conv2: conv(vb.pp("conv2"), cout, cout, 3, 1)?,
            shortcut: if cin != cout { Some(conv(vb.pp("conv_shortcut"), cin, cout, 1, 1)?) } else { None },
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward_silu(x)?)?;
        let h = self.conv2.forward(&self.norm2.forward_silu(&h)?)?;
        match &self.shortcut {
            Some(s) => s.forward(x)? + h,
            None => x + h,
        }
    }
}

/// The mid block's single-head spatial self-attention.
#[derive(Debug, Clone)]
struct Attention {
    norm: GroupNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
}

impl Attention {
    fn load(vb: VarBuilder, channels: usize, groups: usize) -> candle_core::Result<Self> {
        let lin = |name: &str| candle_nn::linear(channels, channels, vb.pp(name));
        Ok(Self {
            norm: norm(vb.pp("group_norm"), groups, channels)?,
            q: lin("to_q")?,
            k: lin("to_k")?,
            v: lin("to_v")?,
            out: lin("to_out.0")?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let seq = self.norm.forward(x)?.reshape((b, c, h * w))?.transpose(1, 2)?.contiguous()?;
        let q = self.q.forward(&seq)?.to_dtype(DType::F32)?;
        let k = self.k.forward(&seq)?.to_dtype(DType::F32)?;
        let v = self.v.forward(&seq)?.to_dtype(DType::F32)?;
        let scores = (q.matmul(&k.t()?)? * (c as f64).powf(-0.5))?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let y = probs.matmul(&v)?.to_dtype(x.dtype())?;
        let y = self.out.forward(&y)?.transpose(1, 2)?.reshape((b, c, h, w))?;
        x + y
    }
}

#[derive(Debug, Clone)]
struct MidBlock {
    resnet1: ResnetBlock,
    attention: Option<Attention>,
    resnet2: ResnetBlock,
}

impl MidBlock {
    fn load(vb: VarBuilder, channels: usize, c: &VaeConfig) -> candle_core::Result<Self> {
        let g = c.norm_num_groups;
        Ok(Self {
            resnet1: ResnetBlock::load(vb.pp("resnets.0"), channels, channels, g)?,
            attention: if c.mid_block_add_attention {
                Some(Attention::load(vb.pp("attentions.0"), channels, g)?)
            } else {
                None
            },
            resnet2: ResnetBlock::load(vb.pp("resnets.1"), channels, channels, g)?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = self.resnet1.forward(x)?;
        if let Some(a) = &self.attention {
            x = a.forward(&x)?;
        }
        self.resnet2.forward(&x)
    }
}

/// ResNets of one resolution level, then an optional resampling conv.
#[derive(Debug, Clone)]
struct Level {
    resnets: Vec<ResnetBlock>,
    resample: Option<Conv2d>,
}

#[derive(Debug, Clone)]
struct Encoder {
    conv_in: Conv2d,
    levels: Vec<Level>,
    mid: MidBlock,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Encoder {
    fn load(vb: VarBuilder, c: &VaeConfig) -> candle_core::Result<Self> {
        let ch = &c.block_out_channels;
        let g = c.norm_num_groups;
        let mut levels = Vec::with_capacity(ch.len());
        for (i, &cout) in ch.iter().enumerate() {
            let vb = vb.pp(format!("down_blocks.{i}"));
            let cin = if i == 0 { ch[0] } else { ch[i - 1] };
            let resnets = (0..c.layers_per_block)
                .map(|j| ResnetBlock::load(vb.pp(format!("resnets.{j}")), if j == 0 { cin } else { cout }, cout, g))
                .collect::<candle_core::Result<Vec<_>>>()?;
            let resample =
                if i + 1 < ch.len() { Some(conv(vb.pp("downsamplers.0.conv"), cout, cout, 3, 2)?) } else { None };
            levels.push(Level { resnets, resample });
        }
        let top = ch[ch.len() - 1];
        Ok(Self {
            conv_in: conv(vb.pp("conv_in"), c.in_channels, ch[0], 3, 1)?,
            levels,
            mid: MidBlock::load(vb.pp("mid_block"), top, c)?,
            norm_out: norm(vb.pp("conv_norm_out"), g, top)?,
            conv_out: conv(vb.pp("conv_out"), top, 2 * c.latent_channels, 3, 1)?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = self.conv_in.forward(x)?;
        for level in &self.levels {
            for r in &level.resnets {
                x = r.forward(&x)?;
            }
            if let Some(down) = &level.resample {
                // diffusers pads right and bottom by one, then a stride-2 conv.
                x = down.forward(&x.pad_with_zeros(3, 0, 1)?.pad_with_zeros(2, 0, 1)?)?;
            }
        }
        let x = self.mid.forward(&x)?;
        self.conv_out.forward(&self.norm_out.forward_silu(&x)?)
    }
}

#[derive(Debug, Clone)]
struct Decoder {
    conv_in: Conv2d,
    mid: MidBlock,
    levels: Vec<Level>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Decoder {
    fn load(vb: VarBuilder, c: &VaeConfig) -> candle_core::Result<Self> {
        let rev: Vec<usize> = c.block_out_channels.iter().rev().copied().collect();
        let g = c.norm_num_groups;
        let mut levels = Vec::with_capacity(rev.len());
        for (i, &cout) in rev.iter().enumerate() {
            let vb = vb.pp(format!("up_blocks.{i}"));
            let cin = if i == 0 { rev[0] } else { rev[i - 1] };
            let resnets = (0..=c.layers_per_block)
                .map(|j| ResnetBlock::load(vb.pp(format!("resnets.{j}")), if j == 0 { cin } else { cout }, cout, g))
                .collect::<candle_core::Result<Vec<_>>>()?;
            let resample =
                if i + 1 < rev.len() { Some(conv(vb.pp("upsamplers.0.conv"), cout, cout, 3, 1)?) } else { None };
            levels.push(Level { resnets, resample });
        }
        let last = rev[rev.len() - 1];
        Ok(Self {
            conv_in: conv(vb.pp("conv_in"), c.latent_channels, rev[0], 3, 1)?,
            mid: MidBlock::load(vb.pp("mid_block"), rev[0], c)?,
            levels,
            norm_out: norm(vb.pp("conv_norm_out"), g, last)?,
            conv_out: conv(vb.pp("conv_out"), last, c.out_channels, 3, 1)?,
        })
    }

    fn forward(&self, z: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = self.mid.forward(&self.conv_in.forward(z)?)?;
        for level in &self.levels {
            for r in &level.resnets {
                x = r.forward(&x)?;
            }
            if let Some(up) = &level.resample {
                let (_, _, h, w) = x.dims4()?;
                x = up.forward(&x.upsample_nearest2d(2 * h, 2 * w)?)?;
            }
        }
        self.conv_out.forward(&self.norm_out.forward_silu(&x)?)
    }
}

/// The encoder's diagonal Gaussian over latents (raw, before the scaling factor).
#[derive(Debug, Clone)]
pub struct LatentDistribution {
    /// Mean `(batch, latent_channels, h/8, w/8)`.
    pub mean: Tensor,
    /// Log-variance, clamped to [-30, 20] as diffusers does.
    pub logvar: Tensor,
}

impl LatentDistribution {
    /// A sample `mean + exp(logvar / 2) * noise`, with `noise` N(0, 1) of the
    /// mean's shape drawn by the caller (so a seed reproduces it).
    pub fn sample(&self, noise: &Tensor) -> Result<Tensor> {
        if noise.dims() != self.mean.dims() {
            return Err(DiffusionError::Invalid(format!(
                "latent noise has shape {:?}, the latents {:?}",
                noise.dims(),
                self.mean.dims()
            )));
        }
        let std = (&self.logvar * 0.5)?.exp()?;
        let noise = noise.to_device(self.mean.device())?.to_dtype(self.mean.dtype())?;
        Ok((&self.mean + std.mul(&noise)?)?)
    }
}

/// diffusers' `AutoencoderKL`.
#[derive(Debug, Clone)]
pub struct AutoencoderKL {
    encoder: Encoder,
    decoder: Decoder,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
    config: VaeConfig,
    dtype: DType,
}

impl AutoencoderKL {
    /// Builds the autoencoder from weights under diffusers' names
    /// (`encoder.down_blocks.0...`, `decoder.up_blocks.0...`, `quant_conv`),
    /// in f32 when the config asks for `force_upcast`, else in `vb`'s dtype.
    pub fn new(vb: VarBuilder, config: &VaeConfig) -> Result<Self> {
        config.check().map_err(|m| DiffusionError::Invalid(format!("VAE config: {m}")))?;
        let vb = if config.force_upcast { vb.to_dtype(DType::F32) } else { vb };
        let dtype = vb.dtype();
        let l = config.latent_channels;
        Ok(Self {
            encoder: Encoder::load(vb.pp("encoder"), config)?,
            decoder: Decoder::load(vb.pp("decoder"), config)?,
            quant_conv: if config.use_quant_conv { Some(conv(vb.pp("quant_conv"), 2 * l, 2 * l, 1, 1)?) } else { None },
            post_quant_conv: if config.use_post_quant_conv {
                Some(conv(vb.pp("post_quant_conv"), l, l, 1, 1)?)
            } else {
                None
            },
            config: config.clone(),
            dtype,
        })
    }

    /// The architecture this model was built with.
    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// The dtype the VAE computes in; [`Self::encode`] and [`Self::decode`]
    /// convert their input to it and return results in it.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    fn check_size(&self, what: &str, t: &Tensor, channels: usize, multiple: usize) -> Result<()> {
        let (_, c, h, w) = t.dims4().map_err(|_| {
            DiffusionError::Invalid(format!("{what} must be (batch, channels, h, w), got {:?}", t.dims()))
        })?;
        if c != channels || h % multiple != 0 || w % multiple != 0 || h == 0 || w == 0 {
            return Err(DiffusionError::Invalid(format!(
                "{what} {:?} must have {channels} channels and sides that are non-zero multiples of {multiple}",
                t.dims()
            )));
        }
        Ok(())
    }

    /// The latent distribution of `image` `(batch, 3, h, w)` in [-1, 1];
    /// `h` and `w` must be multiples of [`VaeConfig::downscale_factor`].
    pub fn encode(&self, image: &Tensor) -> Result<LatentDistribution> {
        self.check_size("image", image, self.config.in_channels, self.config.downscale_factor())?;
        let mut moments = self.encoder.forward(&image.to_dtype(self.dtype)?)?;
        if let Some(q) = &self.quant_conv {
            moments = q.forward(&moments)?;
        }
        let l = self.config.latent_channels;
        Ok(LatentDistribution {
            mean: moments.narrow(1, 0, l)?,
            logvar: moments.narrow(1, l, l)?.clamp(-30f32, 20f32)?,
        })
    }

    /// The image `(batch, 3, 8h, 8w)` (about [-1, 1]) for raw latents
    /// `(batch, latent_channels, h, w)` (divide the UNet's latents by the
    /// scaling factor first: [`Self::unscale_latents`]).
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        self.check_size("latents", latents, self.config.latent_channels, 1)?;
        let latents = latents.to_dtype(self.dtype)?;
        let z = match &self.post_quant_conv {
            Some(p) => p.forward(&latents)?,
            None => latents,
        };
        Ok(self.decoder.forward(&z)?)
    }

    /// Raw VAE latents to the UNet's latent space: `(z - shift) * scaling_factor`.
    pub fn scale_latents(&self, raw: &Tensor) -> Result<Tensor> {
        let shifted = (raw - self.config.shift_factor.unwrap_or(0.0))?;
        Ok((shifted * self.config.scaling_factor)?)
    }

    /// The UNet's latents back to raw VAE latents: `z / scaling_factor + shift`.
    pub fn unscale_latents(&self, latents: &Tensor) -> Result<Tensor> {
        let raw = (latents / self.config.scaling_factor)?;
        Ok((raw + self.config.shift_factor.unwrap_or(0.0))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{fixtures, load_ref, max_abs_diff};
    use crate::weights::Weights;
    use candle_core::Device;

    fn model(name: &str) -> AutoencoderKL {
        let dir = fixtures().join(name).join("vae");
        let config = VaeConfig::from_file(&dir.join("config.json")).unwrap();
        let weights = Weights::from_file(&dir.join("diffusion_pytorch_model.safetensors")).unwrap();
        AutoencoderKL::new(weights.var_builder(DType::F32, &Device::Cpu), &config).unwrap()
    }

    fn parity(name: &str, reference: &str) {
        let r = load_ref(reference);
        let vae = model(name);
        let dist = vae.encode(&r["image"]).unwrap();
        let checks = [
            ("latent_mean", dist.mean.clone()),
            ("latent_logvar", dist.logvar.clone()),
            ("decoded", vae.decode(&r["latents"]).unwrap()),
            ("decoded_rect", vae.decode(&r["latents_rect"]).unwrap()),
        ];
        for (key, got) in checks {
            let diff = max_abs_diff(&got, &r[key]);
            println!("{name} vae {key}: max abs diff {diff:e}");
            assert!(diff < 1e-4, "{name} {key}: max abs diff {diff}");
        }
    }

    #[test]
    fn sd15_vae_matches_diffusers() {
        parity("tiny-sd15", "ref-sd15-vae.safetensors");
    }

    #[test]
    fn sd21_vae_matches_diffusers() {
        parity("tiny-sd21", "ref-sd21-vae.safetensors");
    }

    #[test]
    fn force_upcast_keeps_the_vae_in_f32() {
        let mut config = VaeConfig::from_file(&fixtures().join("tiny-sd15/vae/config.json")).unwrap();
        let path = fixtures().join("tiny-sd15/vae/diffusion_pytorch_model.safetensors");
        let weights = Weights::from_file(&path).unwrap();
        assert!(config.force_upcast);
        let vae = AutoencoderKL::new(weights.var_builder(DType::F16, &Device::Cpu), &config).unwrap();
        assert_eq!(vae.dtype(), DType::F32);
        config.force_upcast = false;
        let vae = AutoencoderKL::new(weights.var_builder(DType::F16, &Device::Cpu), &config).unwrap();
        assert_eq!(vae.dtype(), DType::F16);
    }

    #[test]
    fn sampling_uses_the_given_noise_and_sizes_are_checked() {
        let vae = model("tiny-sd15");
        assert_eq!(vae.config().downscale_factor(), 8);
        let image = Tensor::zeros((1, 3, 60, 64), DType::F32, &Device::Cpu).unwrap();
        assert!(vae.encode(&image).unwrap_err().to_string().contains("multiples of 8"));
        let image = Tensor::zeros((1, 3, 16, 16), DType::F32, &Device::Cpu).unwrap();
        let dist = vae.encode(&image).unwrap();
        let zero = dist.mean.zeros_like().unwrap();
        assert_eq!(max_abs_diff(&dist.sample(&zero).unwrap(), &dist.mean), 0.0);
        let one = dist.mean.ones_like().unwrap();
        let std = (&dist.logvar * 0.5).unwrap().exp().unwrap();
        let expected = (&dist.mean + std).unwrap();
        assert!(max_abs_diff(&dist.sample(&one).unwrap(), &expected) < 1e-6);
        let scaled = vae.scale_latents(&dist.mean).unwrap();
        assert!(max_abs_diff(&vae.unscale_latents(&scaled).unwrap(), &dist.mean) < 1e-6);
        assert!(dist.sample(&Tensor::zeros((1, 4, 3, 3), DType::F32, &Device::Cpu).unwrap()).is_err());
    }
}
