//! [`StableDiffusion`]: a loaded model, with everything img2img needs —
//! tokenizer, text encoder, UNet, VAE, the scheduler config — on one device
//! in one dtype, with LoRAs merged and textual-inversion embeddings added.
//!
//! The text encoder is only needed to encode the prompts; drop it
//! afterwards ([`StableDiffusion::drop_text_encoder`]) to keep peak memory
//! down while the UNet runs.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::clip::ClipTextModel;
use crate::embeddings::TextualInversion;
use crate::error::{DiffusionError, Result};
use crate::loader::{load_parts, Family, LoadOptions, ModelParts};
use crate::lora::{merge_lora, LoraTargets};
use crate::scheduler::{PredictionType, SchedulerConfig};
use crate::tokenizer::ClipTokenizer;
use crate::unet::UNet2DConditionModel;
use crate::vae::AutoencoderKL;

/// A LoRA to merge at load time.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSpec {
    /// The `.safetensors` adapter.
    pub path: PathBuf,
    /// Strength (1.0 = as trained).
    pub scale: f64,
}

/// A textual-inversion embedding to add at load time.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingSpec {
    /// The `.safetensors` embedding.
    pub path: PathBuf,
    /// The prompt word; by default the file's token key or file stem.
    pub token: Option<String>,
}

/// Everything that shapes a load besides the model path and device.
#[derive(Debug, Clone, Default)]
pub struct ModelOptions {
    /// Config folder and prediction-type override (see [`LoadOptions`]).
    pub load: LoadOptions,
    /// LoRAs merged in order.
    pub loras: Vec<LoraSpec>,
    /// Embeddings added in order.
    pub embeddings: Vec<EmbeddingSpec>,
    /// Weight dtype; default f32 on the CPU, f16 on a GPU.
    pub dtype: Option<DType>,
    /// Text-encoder layers to skip from the end (diffusers' `clip_skip`;
    /// the AUTOMATIC1111 web UI's "Clip skip" setting minus one): the
    /// prompt is encoded by the earlier layers, then the final LayerNorm.
    pub clip_skip: usize,
}

/// A Stable Diffusion 1.x / 2.x model ready for img2img.
#[derive(Debug)]
pub struct StableDiffusion {
    /// Which family the model belongs to.
    pub family: Family,
    /// The folder or file it was loaded from.
    pub source: PathBuf,
    /// The prompt tokenizer (with any embedding tokens).
    pub tokenizer: ClipTokenizer,
    /// The text encoder, until [`Self::drop_text_encoder`].
    pub text_encoder: Option<ClipTextModel>,
    /// The denoising UNet.
    pub unet: UNet2DConditionModel,
    /// The image autoencoder.
    pub vae: AutoencoderKL,
    /// The model's noise schedule and prediction type.
    pub scheduler_config: SchedulerConfig,
    /// Where the tensors live.
    pub device: Device,
    /// The weights' dtype.
    pub dtype: DType,
}

/// The dtype used by default on `device`: f32 on the CPU, f16 on a GPU.
pub fn default_dtype(device: &Device) -> DType {
    if device.is_cpu() {
        DType::F32
    } else {
        DType::F16
    }
}

impl StableDiffusion {
    /// Loads the model at `path` (diffusers folder or single-file
    /// checkpoint) onto `device`, merging LoRAs and adding embeddings.
    pub fn load(path: &Path, options: &ModelOptions, device: &Device) -> Result<Self> {
        let mut parts = load_parts(path, &options.load)?;
        if options.clip_skip > 0 {
            let layers = &mut parts.text_encoder_config.num_hidden_layers;
            *layers = layers.checked_sub(options.clip_skip).filter(|&n| n > 0).ok_or_else(|| {
                DiffusionError::Invalid(format!(
                    "clip_skip {} leaves none of the text encoder's {layers} layers",
                    options.clip_skip
                ))
            })?;
        }
        for lora in &options.loras {
            merge_lora(
                &lora.path,
                lora.scale,
                LoraTargets { unet: &mut parts.unet, text_encoder: &mut parts.text_encoder },
            )?;
        }
        let dtype = options.dtype.unwrap_or_else(|| default_dtype(device));
        let mut model = Self::from_parts(parts, device, dtype)?;
        for spec in &options.embeddings {
            let ti = TextualInversion::load(&spec.path, spec.token.as_deref())?;
            model.add_embedding(&ti)?;
        }
        Ok(model)
    }

    /// Builds the modules from already-found parts.
    pub fn from_parts(parts: ModelParts, device: &Device, dtype: DType) -> Result<Self> {
        let text_encoder =
            ClipTextModel::new(parts.text_encoder.var_builder(dtype, device), &parts.text_encoder_config)?;
        let unet = UNet2DConditionModel::new(parts.unet.var_builder(dtype, device), &parts.unet_config)?;
        let vae = AutoencoderKL::new(parts.vae.var_builder(dtype, device), &parts.vae_config)?;
        Ok(Self {
            family: parts.family,
            source: parts.source,
            tokenizer: parts.tokenizer,
            text_encoder: Some(text_encoder),
            unet,
            vae,
            scheduler_config: parts.scheduler_config,
            device: device.clone(),
            dtype,
        })
    }

    /// What the UNet predicts (epsilon or v).
    pub fn prediction_type(&self) -> PredictionType {
        self.scheduler_config.prediction_type
    }

    /// Adds a textual-inversion embedding; returns its new token ids.
    pub fn add_embedding(&mut self, embedding: &TextualInversion) -> Result<Vec<u32>> {
        let encoder = self.text_encoder.as_mut().ok_or_else(text_encoder_dropped)?;
        embedding.apply(&mut self.tokenizer, encoder)
    }

    /// Text embeddings `(prompts.len(), 77 * k, hidden)` for `prompts`
    /// (e.g. `[negative, positive]` for classifier-free guidance). Prompts
    /// longer than 75 tokens are split into `k` windows encoded separately
    /// and concatenated along the sequence (as the AUTOMATIC1111 web UI
    /// does), every prompt padded to the same number of windows; for short
    /// prompts `k` = 1, identical to diffusers.
    pub fn encode_prompts(&self, prompts: &[&str]) -> Result<Tensor> {
        let encoder = self.text_encoder.as_ref().ok_or_else(text_encoder_dropped)?;
        let windows = prompts.iter().map(|p| self.tokenizer.encode_chunks(p, 1).len()).max().unwrap_or(1);
        let mut rows = Vec::with_capacity(prompts.len());
        for prompt in prompts {
            let chunks = self.tokenizer.encode_chunks(prompt, windows);
            let ids: Vec<u32> = chunks.concat();
            let ids = Tensor::from_vec(ids, (windows, self.tokenizer.max_length()), &self.device)?;
            // (windows, 77, hidden) -> (1, windows * 77, hidden)
            let states = encoder.forward(&ids)?;
            let (_, t, d) = states.dims3()?;
            rows.push(states.reshape((1, windows * t, d))?);
        }
        Ok(Tensor::cat(&rows, 0)?)
    }

    /// Frees the text encoder (after the prompts are encoded).
    pub fn drop_text_encoder(&mut self) {
        self.text_encoder = None;
    }
}

fn text_encoder_dropped() -> DiffusionError {
    DiffusionError::Invalid("the text encoder was already dropped".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{fixtures, load_ref, max_abs_diff};
    use crate::unet::AttentionMode;

    fn cpu() -> Device {
        Device::Cpu
    }

    #[test]
    fn loads_with_lora_and_embedding_and_encodes_prompts() {
        let options = ModelOptions {
            loras: vec![LoraSpec { path: fixtures().join("lora-kohya.safetensors"), scale: 0.7 }],
            embeddings: vec![EmbeddingSpec {
                path: fixtures().join("ti-embedding.safetensors"),
                token: Some("<tiny-style>".into()),
            }],
            ..ModelOptions::default()
        };
        let mut model = StableDiffusion::load(&fixtures().join("tiny-sd15"), &options, &cpu()).unwrap();
        assert_eq!(model.family, Family::Sd15);
        assert_eq!(model.dtype, DType::F32);
        assert_eq!(model.prediction_type(), PredictionType::Epsilon);
        assert_eq!(model.tokenizer.vocab_size(), 1516);

        let r = load_ref("ref-lora-sd15.safetensors");
        let prompts = ["a photo of a cat", "masterpiece, best quality, a red house by the sea"];
        let states = model.encode_prompts(&prompts).unwrap();
        assert!(max_abs_diff(&states, &r["text_last_hidden_state"]) < 1e-4);

        // A long prompt becomes two windows; its partner is padded to match.
        let long = "red house ".repeat(50);
        let both = model.encode_prompts(&["", &long]).unwrap();
        assert_eq!(both.dims(), &[2, 154, 32]);
        let empty = model.encode_prompts(&[""]).unwrap();
        let first = both.narrow(0, 0, 1).unwrap().narrow(1, 0, 77).unwrap();
        assert_eq!(max_abs_diff(&first, &empty), 0.0);

        model.drop_text_encoder();
        assert!(model.encode_prompts(&["x"]).is_err());
    }

    #[test]
    fn clip_skip_encodes_with_the_earlier_layers() {
        let dir = fixtures().join("tiny-sd15");
        let options = ModelOptions { clip_skip: 1, ..ModelOptions::default() };
        let skipped = StableDiffusion::load(&dir, &options, &cpu()).unwrap();
        let encoder = skipped.text_encoder.as_ref().unwrap();
        assert_eq!(encoder.config().num_hidden_layers, 3);
        let full = StableDiffusion::load(&dir, &ModelOptions::default(), &cpu()).unwrap();
        let (a, b) = (skipped.encode_prompts(&["a cat"]).unwrap(), full.encode_prompts(&["a cat"]).unwrap());
        assert!(max_abs_diff(&a, &b) > 1e-3, "skipping a layer must change the encoding");
        let options = ModelOptions { clip_skip: 4, ..ModelOptions::default() };
        let err = StableDiffusion::load(&dir, &options, &cpu()).unwrap_err().to_string();
        assert!(err.contains("clip_skip"), "{err}");
    }

    /// The single-file checkpoint builds a UNet with the folder's exact outputs.
    #[test]
    fn single_file_unet_matches_folder() {
        let options = ModelOptions {
            load: LoadOptions { config_dir: Some(fixtures().join("tiny-sd15")), ..LoadOptions::default() },
            ..ModelOptions::default()
        };
        let file = StableDiffusion::load(&fixtures().join("tiny-sd15.safetensors"), &options, &cpu()).unwrap();
        let folder = StableDiffusion::load(&fixtures().join("tiny-sd15"), &ModelOptions::default(), &cpu()).unwrap();
        let r = load_ref("ref-sd15-unet.safetensors");
        let t = r["timestep"].to_scalar::<f32>().unwrap() as f64;
        let run = |m: &StableDiffusion| {
            m.unet.forward(&r["sample"], t, &r["encoder_hidden_states"], None, &AttentionMode::Plain).unwrap()
        };
        let (a, b) = (run(&folder), run(&file));
        assert_eq!(max_abs_diff(&a, &b), 0.0);
        let diff = max_abs_diff(&b, &r["out"]);
        println!("single-file unet vs diffusers: max abs diff {diff:e}");
        assert!(diff < 1e-4);
    }

    /// The GPU configuration (f16 weights, f32 VAE) run on the CPU: close to f32.
    #[test]
    fn f16_model_stays_close_to_f32() {
        let dir = fixtures().join("tiny-sd15");
        let f32_model = StableDiffusion::load(&dir, &ModelOptions::default(), &Device::Cpu).unwrap();
        let options = ModelOptions { dtype: Some(DType::F16), ..ModelOptions::default() };
        let f16_model = StableDiffusion::load(&dir, &options, &Device::Cpu).unwrap();
        assert_eq!(f16_model.vae.dtype(), DType::F32, "SD's VAE runs in f32 (force_upcast)");
        let prompts = ["a photo of a cat", ""];
        let a = f32_model.encode_prompts(&prompts).unwrap();
        let b = f16_model.encode_prompts(&prompts).unwrap();
        assert_eq!(b.dtype(), DType::F16);
        let diff = max_abs_diff(&a, &b);
        println!("f16 text encoder vs f32: max abs diff {diff:e}");
        assert!(diff < 2e-2, "{diff}");

        let r = load_ref("ref-sd15-unet.safetensors");
        let t = r["timestep"].to_scalar::<f32>().unwrap() as f64;
        let out = f16_model
            .unet
            .forward(
                &r["sample"].to_dtype(DType::F16).unwrap(),
                t,
                &r["encoder_hidden_states"].to_dtype(DType::F16).unwrap(),
                None,
                &AttentionMode::Plain,
            )
            .unwrap();
        let diff = max_abs_diff(&out, &r["out"]);
        println!("f16 unet vs diffusers f32: max abs diff {diff:e}");
        assert!(diff < 5e-2, "{diff}");
    }
}
