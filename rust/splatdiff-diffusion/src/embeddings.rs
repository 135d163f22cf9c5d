//! Textual-inversion embeddings: learned vectors bound to a new prompt
//! token. Loading one adds the token to the tokenizer (standing for as many
//! new ids as it has vectors) and the vectors as new rows of the text
//! encoder's token embedding, as diffusers' `load_textual_inversion` does.
//!
//! Read from `.safetensors` in the layouts in circulation: A1111's
//! `emb_params`, the converted `.pt` layout `string_to_param.*`, and
//! diffusers' single tensor keyed by its token.

use std::path::Path;

use candle_core::Tensor;

use crate::clip::ClipTextModel;
use crate::error::{DiffusionError, Result};
use crate::tokenizer::ClipTokenizer;
use crate::weights::MappedFile;

/// A textual-inversion embedding: a token and its `(n, hidden)` vectors.
#[derive(Debug, Clone)]
pub struct TextualInversion {
    /// The prompt word that stands for the vectors.
    pub token: String,
    /// The vectors, `(n_vectors, hidden_size)`, f32.
    pub vectors: Tensor,
}

impl TextualInversion {
    /// Reads an embedding file. `token` names the prompt word; by default it
    /// is the file's own token key (diffusers layout) or else the file stem
    /// (A1111 uses the file name).
    pub fn load(path: &Path, token: Option<&str>) -> Result<Self> {
        let file = MappedFile::open(path)?;
        let keys: Vec<String> = file.shapes().into_keys().collect();
        if keys.iter().any(|k| k == "clip_l" || k == "clip_g") {
            return Err(DiffusionError::Unsupported(format!(
                "{}: an SDXL embedding (clip_l/clip_g); only SD 1.x / 2.x embeddings are supported",
                path.display()
            )));
        }
        let key = if keys.iter().any(|k| k == "emb_params") {
            "emb_params".to_string()
        } else if let Some(k) = keys.iter().find(|k| k.starts_with("string_to_param.")) {
            k.clone()
        } else if keys.len() == 1 {
            keys[0].clone()
        } else {
            return Err(DiffusionError::format(
                path,
                format!(
                    "not a textual-inversion embedding: expected `emb_params`, `string_to_param.*` or one tensor, found {} keys",
                    keys.len()
                ),
            ));
        };
        let vectors = file.load_f32(&key)?;
        let vectors = match vectors.dims() {
            [d] => vectors.reshape((1, *d))?,
            [_, _] => vectors,
            d => {
                return Err(DiffusionError::format(path, format!("`{key}` has shape {d:?}; expected (vectors, width)")))
            }
        };
        let own_key = (key != "emb_params" && !key.starts_with("string_to_param.")).then_some(key.as_str());
        let token = match (token, own_key) {
            (Some(t), _) => t.to_string(),
            (None, Some(k)) => k.to_string(),
            (None, None) => path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .ok_or_else(|| DiffusionError::format(path, "no token given and no file name to use"))?,
        };
        Ok(Self { token, vectors })
    }

    /// Number of vectors (prompt ids the token expands to).
    pub fn len(&self) -> usize {
        self.vectors.dims().first().copied().unwrap_or(0)
    }

    /// True for an embedding without vectors.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds the token to `tokenizer` and the vectors to `text_encoder`;
    /// returns the new ids. Both must have the same number of ids before.
    pub fn apply(&self, tokenizer: &mut ClipTokenizer, text_encoder: &mut ClipTextModel) -> Result<Vec<u32>> {
        let width = text_encoder.config().hidden_size;
        let (n, got) = self.vectors.dims2().map_err(|_| {
            DiffusionError::Invalid(format!(
                "embedding `{}` vectors {:?} are not a matrix",
                self.token,
                self.vectors.dims()
            ))
        })?;
        if got != width {
            return Err(DiffusionError::Invalid(format!(
                "embedding `{}` has vectors of width {got}, the text encoder's is {width} (an embedding for another model family?)",
                self.token
            )));
        }
        let rows = text_encoder.num_token_embeddings()?;
        if tokenizer.vocab_size() != rows {
            return Err(DiffusionError::Invalid(format!(
                "the tokenizer has {} ids but the text encoder {rows} embeddings",
                tokenizer.vocab_size()
            )));
        }
        let ids = tokenizer.add_token(&self.token, n)?;
        text_encoder.append_token_embeddings(&self.vectors)?;
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::*;
    use crate::loader::{load_parts, LoadOptions};
    use crate::test_support::{fixtures, load_ref, max_abs_diff};

    #[test]
    fn embedding_matches_diffusers_load_textual_inversion() {
        let parts = load_parts(&fixtures().join("tiny-sd15"), &LoadOptions::default()).unwrap();
        let mut tokenizer = parts.tokenizer.clone();
        let mut encoder =
            ClipTextModel::new(parts.text_encoder.var_builder(DType::F32, &Device::Cpu), &parts.text_encoder_config)
                .unwrap();
        let path = fixtures().join("ti-embedding.safetensors");
        assert_eq!(TextualInversion::load(&path, None).unwrap().token, "ti-embedding");
        let ti = TextualInversion::load(&path, Some("<tiny-style>")).unwrap();
        assert_eq!(ti.len(), 2);
        assert_eq!(ti.apply(&mut tokenizer, &mut encoder).unwrap(), vec![1514, 1515]);

        let r = load_ref("ref-ti-sd15.safetensors");
        let expected: Vec<u32> = r["input_ids"].to_dtype(DType::U32).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let ids = tokenizer.encode_padded("a house in <tiny-style> style").ids;
        assert_eq!(ids, expected);
        let ids = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let diff = max_abs_diff(&encoder.forward(&ids).unwrap(), &r["last_hidden_state"]);
        println!("textual inversion: max abs diff {diff:e}");
        assert!(diff < 1e-4, "max abs diff {diff}");

        // The same token twice, or vectors of another width, are refused.
        assert!(ti.apply(&mut tokenizer, &mut encoder).is_err());
        let wide = TextualInversion {
            token: "<wide>".into(),
            vectors: Tensor::zeros((1, 768), DType::F32, &Device::Cpu).unwrap(),
        };
        let err = wide.apply(&mut tokenizer, &mut encoder).unwrap_err().to_string();
        assert!(err.contains("768"), "{err}");
    }
}
