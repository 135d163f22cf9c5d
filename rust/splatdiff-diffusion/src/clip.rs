//! The CLIP text transformer that turns prompt ids into the UNet's
//! conditioning (`last_hidden_state`), on candle-nn, loading transformers'
//! `CLIPTextModel` weights under their names (`text_model.embeddings...`,
//! `text_model.encoder.layers.N...`, `text_model.final_layer_norm`).
//!
//! Token and position embeddings, pre-LayerNorm encoder layers with causal
//! self-attention and a quick-GELU or GELU MLP, then the final LayerNorm, as
//! Stable Diffusion uses it (no padding mask). Textual-inversion vectors are
//! extra rows of the token embedding ([`ClipTextModel::append_token_embeddings`]).

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

use crate::error::{DiffusionError, Result};

/// The MLP's activation (`hidden_act` in `config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClipActivation {
    /// `x * sigmoid(1.702 x)`: OpenAI CLIP (SD 1.x).
    QuickGelu,
    /// Exact (erf) GELU: OpenCLIP (SD 2.x).
    Gelu,
}

/// The fields of transformers' `CLIPTextConfig` that shape the network.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ClipTextConfig {
    /// Rows of the token embedding.
    pub vocab_size: usize,
    /// Width of the transformer.
    pub hidden_size: usize,
    /// Width of the MLP's hidden layer.
    pub intermediate_size: usize,
    /// Number of encoder layers run.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Rows of the position embedding (77).
    pub max_position_embeddings: usize,
    /// The MLP's activation.
    pub hidden_act: ClipActivation,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
}

fn default_eps() -> f64 {
    1e-5
}

impl ClipTextConfig {
    /// Reads a transformers `text_encoder/config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| DiffusionError::io(path, e))?;
        Self::from_json(&text).map_err(|m| DiffusionError::format(path, m))
    }

    /// Parses the JSON of a `CLIPTextConfig` and checks its consistency.
    pub fn from_json(text: &str) -> std::result::Result<Self, String> {
        let config: Self = serde_json::from_str(text).map_err(|e| e.to_string())?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> std::result::Result<(), String> {
        if self.num_attention_heads == 0 || self.hidden_size % self.num_attention_heads != 0 {
            return Err(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
}

impl Attention {
    fn load(vb: VarBuilder, c: &ClipTextConfig) -> candle_core::Result<Self> {
        let d = c.hidden_size;
        Ok(Self {
            q: candle_nn::linear(d, d, vb.pp("q_proj"))?,
            k: candle_nn::linear(d, d, vb.pp("k_proj"))?,
            v: candle_nn::linear(d, d, vb.pp("v_proj"))?,
            out: candle_nn::linear(d, d, vb.pp("out_proj"))?,
            heads: c.num_attention_heads,
        })
    }

    /// Causal multi-head self-attention; `mask` is `(T, T)` with `-inf`
    /// above the diagonal. Scores and softmax run in f32.
    fn forward(&self, x: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let hd = d / self.heads;
        let split = |y: Tensor| -> candle_core::Result<Tensor> {
            y.reshape((b, t, self.heads, hd))?.transpose(1, 2)?.contiguous()?.to_dtype(DType::F32)
        };
        let q = split((self.q.forward(x)? * (hd as f64).powf(-0.5))?)?;
        let k = split(self.k.forward(x)?)?;
        let v = split(self.v.forward(x)?)?;
        let scores = q.matmul(&k.t()?)?.broadcast_add(mask)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let y = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, t, d))?.to_dtype(x.dtype())?;
        self.out.forward(&y)
    }
}

#[derive(Debug, Clone)]
struct EncoderLayer {
    norm1: LayerNorm,
    attn: Attention,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    act: ClipActivation,
}

impl EncoderLayer {
    fn load(vb: VarBuilder, c: &ClipTextConfig) -> candle_core::Result<Self> {
        let d = c.hidden_size;
        Ok(Self {
            norm1: candle_nn::layer_norm(d, c.layer_norm_eps, vb.pp("layer_norm1"))?,
            attn: Attention::load(vb.pp("self_attn"), c)?,
            norm2: candle_nn::layer_norm(d, c.layer_norm_eps, vb.pp("layer_norm2"))?,
            fc1: candle_nn::linear(d, c.intermediate_size, vb.pp("mlp.fc1"))?,
            fc2: candle_nn::linear(c.intermediate_size, d, vb.pp("mlp.fc2"))?,
            act: c.hidden_act,
        })
    }

    fn forward(&self, x: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let x = (x + self.attn.forward(&self.norm1.forward(x)?, mask)?)?;
        let h = self.fc1.forward(&self.norm2.forward(&x)?)?;
        let h = match self.act {
            ClipActivation::QuickGelu => (&h * candle_nn::ops::sigmoid(&(&h * 1.702)?)?)?,
            ClipActivation::Gelu => h.gelu_erf()?,
        };
        x + self.fc2.forward(&h)?
    }
}

/// CLIP's text transformer up to `last_hidden_state`.
#[derive(Debug, Clone)]
pub struct ClipTextModel {
    token_embedding: Embedding,
    position_embedding: Tensor,
    layers: Vec<EncoderLayer>,
    final_norm: LayerNorm,
    config: ClipTextConfig,
}

impl ClipTextModel {
    /// Builds the model from weights under transformers' names, rooted at
    /// the `text_encoder/` component (keys start with `text_model.`).
    pub fn new(vb: VarBuilder, config: &ClipTextConfig) -> Result<Self> {
        config.check().map_err(|m| DiffusionError::Invalid(format!("text encoder config: {m}")))?;
        let vb = vb.pp("text_model");
        let d = config.hidden_size;
        let emb = vb.pp("embeddings");
        let token_embedding = candle_nn::embedding(config.vocab_size, d, emb.pp("token_embedding"))?;
        let position_embedding = emb.get((config.max_position_embeddings, d), "position_embedding.weight")?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| EncoderLayer::load(vb.pp(format!("encoder.layers.{i}")), config))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let final_norm = candle_nn::layer_norm(d, config.layer_norm_eps, vb.pp("final_layer_norm"))?;
        Ok(Self { token_embedding, position_embedding, layers, final_norm, config: config.clone() })
    }

    /// The architecture this model was built with.
    pub fn config(&self) -> &ClipTextConfig {
        &self.config
    }

    /// Rows in the token embedding (vocabulary plus appended rows).
    pub fn num_token_embeddings(&self) -> Result<usize> {
        Ok(self.token_embedding.embeddings().dim(0)?)
    }

    /// Appends `rows` `(n, hidden_size)` to the token embedding, so ids
    /// `old_rows..old_rows + n` embed to them (textual inversion).
    pub fn append_token_embeddings(&mut self, rows: &Tensor) -> Result<()> {
        let table = self.token_embedding.embeddings();
        let d = self.config.hidden_size;
        let (_, width) = rows
            .dims2()
            .map_err(|_| DiffusionError::Invalid(format!("embedding rows {:?} are not a matrix", rows.dims())))?;
        if width != d {
            return Err(DiffusionError::Invalid(format!(
                "embedding vectors have width {width}, the text encoder's is {d}"
            )));
        }
        let rows = rows.to_device(table.device())?.to_dtype(table.dtype())?;
        let table = Tensor::cat(&[table, &rows], 0)?;
        self.token_embedding = Embedding::new(table, d);
        Ok(())
    }

    /// `last_hidden_state` `(batch, tokens, hidden_size)` for `input_ids`
    /// `(batch, tokens)` (u32), tokens <= `max_position_embeddings`.
    pub fn forward(&self, input_ids: &Tensor) -> Result<Tensor> {
        let (_, t) = input_ids.dims2()?;
        if t > self.config.max_position_embeddings {
            return Err(DiffusionError::Invalid(format!(
                "{t} tokens exceed the text encoder's {} positions",
                self.config.max_position_embeddings
            )));
        }
        let rows = self.num_token_embeddings()? as u32;
        let max_id = input_ids.max_all()?.to_dtype(DType::U32)?.to_scalar::<u32>()?;
        if max_id >= rows {
            return Err(DiffusionError::Invalid(format!(
                "token id {max_id} is outside the text encoder's {rows} embeddings"
            )));
        }
        let x = self.token_embedding.forward(input_ids)?;
        let x = x.broadcast_add(&self.position_embedding.narrow(0, 0, t)?)?;
        let mask = causal_mask(t, x.device())?;
        let mut x = x;
        for layer in &self.layers {
            x = layer.forward(&x, &mask)?;
        }
        Ok(self.final_norm.forward(&x)?)
    }
}

/// `(t, t)` f32 mask: 0 on and below the diagonal, `-inf` above.
fn causal_mask(t: usize, device: &Device) -> candle_core::Result<Tensor> {
    let data: Vec<f32> =
        (0..t).flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
    Tensor::from_vec(data, (t, t), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{fixtures, load_ref, max_abs_diff};
    use crate::weights::Weights;

    fn model(name: &str) -> ClipTextModel {
        let dir = fixtures().join(name).join("text_encoder");
        let config = ClipTextConfig::from_file(&dir.join("config.json")).unwrap();
        let weights = Weights::from_file(&dir.join("model.safetensors")).unwrap();
        ClipTextModel::new(weights.var_builder(DType::F32, &Device::Cpu), &config).unwrap()
    }

    fn parity(name: &str, reference: &str) {
        let r = load_ref(reference);
        let ids = r["input_ids"].to_dtype(DType::U32).unwrap();
        let out = model(name).forward(&ids).unwrap();
        let diff = max_abs_diff(&out, &r["last_hidden_state"]);
        println!("{name} text encoder: max abs diff {diff:e}");
        assert!(diff < 1e-4, "{name}: max abs diff {diff}");
    }

    #[test]
    fn sd15_text_encoder_matches_transformers() {
        parity("tiny-sd15", "ref-sd15-text-encoder.safetensors");
    }

    #[test]
    fn sd21_text_encoder_matches_transformers() {
        parity("tiny-sd21", "ref-sd21-text-encoder.safetensors");
    }

    #[test]
    fn appended_rows_embed_new_ids_and_bad_input_is_refused() {
        let mut m = model("tiny-sd15");
        let rows = m.num_token_embeddings().unwrap();
        assert_eq!(rows, 1514);
        let too_big = Tensor::new(&[[rows as u32]], &Device::Cpu).unwrap();
        assert!(m.forward(&too_big).unwrap_err().to_string().contains("outside"));
        assert!(m.append_token_embeddings(&Tensor::zeros((2, 31), DType::F32, &Device::Cpu).unwrap()).is_err());
        m.append_token_embeddings(&Tensor::ones((2, 32), DType::F32, &Device::Cpu).unwrap()).unwrap();
        assert_eq!(m.num_token_embeddings().unwrap(), rows + 2);
        let out = m.forward(&too_big).unwrap();
        assert_eq!(out.dims(), &[1, 1, 32]);
    }
}
