//! Spatial transformers (diffusers' `Transformer2DModel`,
//! `BasicTransformerBlock`, `Attention`) with a hook on self-attention for
//! cross-frame attention.

use candle_core::{Module, Result, Tensor};
use candle_nn::{LayerNorm, Linear, VarBuilder};

use super::ops::{self, Conv2d, GroupNorm};

/// How the UNet's self-attention layers (`attn1`) pick their keys and values.
///
/// Cross-attention to the text (`attn2`) is never affected.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AttentionMode {
    /// Every image attends to itself only: plain Stable Diffusion.
    #[default]
    Plain,
    /// Frames of a batch share keys and values so they come out alike.
    CrossFrame(CrossFrameAttention),
}

/// Which keys and values a frame's self-attention reads under cross-frame attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrossFrameKeys {
    /// Only the anchor frames' (diffusers' `CrossFrameAttnProcessor` of
    /// Text2Video-Zero, where the single anchor is frame 0).
    AnchorsOnly,
    /// The frame's own, followed by each anchor's (Pix2Video), a plain
    /// concatenation: an anchor frame sees its own keys twice, which with a
    /// single anchor gives exactly its plain self-attention result (equal
    /// keys share weight equally), so the anchor comes out as it would
    /// without cross-frame attention.
    OwnAndAnchors,
}

/// Cross-frame attention over a batch laid out as groups of frames.
///
/// The batch is `groups x frames_per_group` images, group-major: item
/// `g * frames_per_group + f` is frame `f` of group `g`. Classifier-free
/// guidance runs the unconditional and the conditional batch together, so
/// for `F` keyframes the batch is `[uncond f0..f(F-1), cond f0..f(F-1)]`
/// with `frames_per_group = F`: frames only borrow keys from frames of
/// their own group. `anchors` are frame indices within a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrossFrameAttention {
    /// Frames per group (the number of keyframes denoised together).
    pub frames_per_group: usize,
    /// The anchor frames, as indices within a group.
    pub anchors: Vec<usize>,
    /// Whether a frame's own keys are kept.
    pub keys: CrossFrameKeys,
}

impl CrossFrameAttention {
    /// The product default (Pix2Video-style): each frame attends to its own
    /// keys and values and those of the `anchors`.
    pub fn with_anchors(frames_per_group: usize, anchors: Vec<usize>) -> Self {
        Self { frames_per_group, anchors, keys: CrossFrameKeys::OwnAndAnchors }
    }

    /// diffusers' `CrossFrameAttnProcessor` semantics: every frame attends
    /// to the first frame's keys and values only.
    pub fn first_frame_only(frames_per_group: usize) -> Self {
        Self { frames_per_group, anchors: vec![0], keys: CrossFrameKeys::AnchorsOnly }
    }

    /// For batch item `item`, the batch items whose keys/values it reads, in order.
    fn sources(&self, item: usize) -> Vec<usize> {
        let f = self.frames_per_group;
        let (group, frame) = (item / f, item % f);
        let own = match self.keys {
            CrossFrameKeys::AnchorsOnly => None,
            CrossFrameKeys::OwnAndAnchors => Some(frame),
        };
        own.iter().chain(&self.anchors).map(|&fr| group * f + fr).collect()
    }

    /// Checks the layout against a batch of `batch` items.
    pub(crate) fn check(&self, batch: usize) -> Result<()> {
        let f = self.frames_per_group;
        if f == 0 || batch % f != 0 {
            candle_core::bail!("cross-frame attention: batch of {batch} is not a whole number of groups of {f} frames")
        }
        if self.anchors.is_empty() {
            candle_core::bail!("cross-frame attention: no anchor frames given")
        }
        if let Some(a) = self.anchors.iter().find(|&&a| a >= f) {
            candle_core::bail!("cross-frame attention: anchor frame {a} is not below frames_per_group {f}")
        }
        Ok(())
    }
}

/// diffusers' `Attention` with the default processor: separate q/k/v
/// projections without bias, output projection with bias.
#[derive(Debug, Clone)]
struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    scale: f64,
}

impl Attention {
    fn load(vb: VarBuilder, query_dim: usize, context_dim: usize, heads: usize, head_dim: usize) -> Result<Self> {
        let inner = heads * head_dim;
        Ok(Self {
            to_q: candle_nn::linear_no_bias(query_dim, inner, vb.pp("to_q"))?,
            to_k: candle_nn::linear_no_bias(context_dim, inner, vb.pp("to_k"))?,
            to_v: candle_nn::linear_no_bias(context_dim, inner, vb.pp("to_v"))?,
            to_out: candle_nn::linear(inner, query_dim, vb.pp("to_out.0"))?,
            heads,
            scale: 1.0 / (head_dim as f64).sqrt(),
        })
    }

    /// Cross-attention to `context`.
    fn forward_cross(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let q = self.to_q.forward(x)?;
        let k = self.to_k.forward(context)?;
        let v = self.to_v.forward(context)?;
        self.to_out.forward(&ops::attention(&q, &k, &v, self.heads, self.scale)?)
    }

    /// Self-attention, with keys/values chosen by `mode`.
    fn forward_self(&self, x: &Tensor, mode: &AttentionMode) -> Result<Tensor> {
        let q = self.to_q.forward(x)?;
        let k = self.to_k.forward(x)?;
        let v = self.to_v.forward(x)?;
        let out = match mode {
            AttentionMode::Plain => ops::attention(&q, &k, &v, self.heads, self.scale)?,
            AttentionMode::CrossFrame(cf) => {
                let batch = x.dim(0)?;
                cf.check(batch)?;
                let gather = |t: &Tensor, sources: &[usize]| -> Result<Tensor> {
                    let parts = sources.iter().map(|&s| t.narrow(0, s, 1)).collect::<Result<Vec<_>>>()?;
                    Tensor::cat(&parts, 1)
                };
                // Every item reads the same number of frames, so one batched call serves.
                let (ks, vs): (Vec<_>, Vec<_>) = (0..batch)
                    .map(|i| {
                        let sources = cf.sources(i);
                        Ok((gather(&k, &sources)?, gather(&v, &sources)?))
                    })
                    .collect::<Result<Vec<_>>>()?
                    .into_iter()
                    .unzip();
                ops::attention(&q, &Tensor::cat(&ks, 0)?, &Tensor::cat(&vs, 0)?, self.heads, self.scale)?
            }
        };
        self.to_out.forward(&out)
    }
}

/// GEGLU feed-forward: `net.0.proj` to twice the inner width, `h * gelu(gate)`, `net.2`.
#[derive(Debug, Clone)]
struct FeedForward {
    proj_in: Linear,
    proj_out: Linear,
}

impl FeedForward {
    fn load(vb: VarBuilder, dim: usize) -> Result<Self> {
        let inner = dim * 4;
        Ok(Self {
            proj_in: candle_nn::linear(dim, inner * 2, vb.pp("net.0.proj"))?,
            proj_out: candle_nn::linear(inner, dim, vb.pp("net.2"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.proj_out.forward(&ops::geglu(&self.proj_in.forward(x)?)?)
    }
}

/// Self-attention, cross-attention and feed-forward, each pre-normed and residual.
#[derive(Debug, Clone)]
struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
}

impl BasicTransformerBlock {
    fn load(vb: VarBuilder, dim: usize, heads: usize, head_dim: usize, context_dim: usize) -> Result<Self> {
        Ok(Self {
            norm1: candle_nn::layer_norm(dim, 1e-5, vb.pp("norm1"))?,
            attn1: Attention::load(vb.pp("attn1"), dim, dim, heads, head_dim)?,
            norm2: candle_nn::layer_norm(dim, 1e-5, vb.pp("norm2"))?,
            attn2: Attention::load(vb.pp("attn2"), dim, context_dim, heads, head_dim)?,
            norm3: candle_nn::layer_norm(dim, 1e-5, vb.pp("norm3"))?,
            ff: FeedForward::load(vb.pp("ff"), dim)?,
        })
    }

    fn forward(&self, x: &Tensor, context: &Tensor, mode: &AttentionMode) -> Result<Tensor> {
        let x = (self.attn1.forward_self(&self.norm1.forward(x)?, mode)? + x)?;
        let x = (self.attn2.forward_cross(&self.norm2.forward(&x)?, context)? + x)?;
        self.ff.forward(&self.norm3.forward(&x)?)? + x
    }
}

#[derive(Debug, Clone)]
enum Projection {
    /// SD 1.x: 1x1 convolutions on the feature map.
    Conv(Conv2d),
    /// SD 2.x: linear layers on the token sequence.
    Linear(Linear),
}

/// `Transformer2DModel`: group norm, projection in, transformer blocks over
/// the `h*w` tokens, projection out, residual.
#[derive(Debug, Clone)]
pub(crate) struct Transformer2D {
    norm: GroupNorm,
    proj_in: Projection,
    blocks: Vec<BasicTransformerBlock>,
    proj_out: Projection,
}

/// Shape settings of a [`Transformer2D`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct TransformerSpec {
    pub heads: usize,
    pub layers: usize,
    pub context_dim: usize,
    pub groups: usize,
    pub linear_projection: bool,
}

impl Transformer2D {
    pub(crate) fn load(vb: VarBuilder, channels: usize, spec: TransformerSpec) -> Result<Self> {
        let head_dim = channels / spec.heads;
        let inner = spec.heads * head_dim;
        let projection = |name: &str, c_in: usize, c_out: usize| -> Result<Projection> {
            Ok(if spec.linear_projection {
                Projection::Linear(candle_nn::linear(c_in, c_out, vb.pp(name))?)
            } else {
                Projection::Conv(Conv2d::load(vb.pp(name), c_in, c_out, 1, 0, 1)?)
            })
        };
        let blocks = (0..spec.layers)
            .map(|i| {
                BasicTransformerBlock::load(
                    vb.pp(format!("transformer_blocks.{i}")),
                    inner,
                    spec.heads,
                    head_dim,
                    spec.context_dim,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            norm: GroupNorm::load(vb.pp("norm"), spec.groups, channels, 1e-6)?,
            proj_in: projection("proj_in", channels, inner)?,
            blocks,
            proj_out: projection("proj_out", inner, channels)?,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, context: &Tensor, mode: &AttentionMode) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let normed = self.norm.forward(x)?;
        let to_tokens = |t: &Tensor| -> Result<Tensor> {
            let ch = t.dim(1)?;
            t.reshape((b, ch, h * w))?.transpose(1, 2)?.contiguous()
        };
        let mut tokens = match &self.proj_in {
            Projection::Conv(conv) => to_tokens(&conv.forward(&normed)?)?,
            Projection::Linear(lin) => lin.forward(&to_tokens(&normed)?)?,
        };
        for block in &self.blocks {
            tokens = block.forward(&tokens, context, mode)?;
        }
        let to_map = |t: &Tensor| -> Result<Tensor> {
            let ch = t.dim(2)?;
            t.transpose(1, 2)?.contiguous()?.reshape((b, ch, h, w))
        };
        let out = match &self.proj_out {
            Projection::Conv(conv) => conv.forward(&to_map(&tokens)?)?,
            Projection::Linear(lin) => to_map(&lin.forward(&tokens)?)?,
        };
        debug_assert_eq!(out.dim(1)?, c);
        out + x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_frame_sources_follow_the_group_layout() {
        let cf = CrossFrameAttention::with_anchors(3, vec![0, 2]);
        // Group 1 (items 3..6): frame 1 reads itself, then anchors 0 and 2.
        assert_eq!(cf.sources(4), vec![4, 3, 5]);
        // An anchor reads itself, then every anchor (itself included).
        assert_eq!(cf.sources(3), vec![3, 3, 5]);
        let first = CrossFrameAttention::first_frame_only(3);
        assert_eq!(first.sources(5), vec![3]);
        assert!(cf.check(6).is_ok());
        assert!(cf.check(4).is_err());
        assert!(CrossFrameAttention::with_anchors(2, vec![2]).check(4).is_err());
    }
}
