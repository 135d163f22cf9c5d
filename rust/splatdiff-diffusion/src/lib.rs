//! Stable Diffusion (1.5 and 2.1 families) img2img with ControlNet and
//! cross-keyframe consistency, on candle: the `stylize` stage's diffusion
//! stylizer.

pub mod error;
pub use error::{DiffusionError, Result};
pub mod clip;
pub mod control;
pub mod controlnet;
pub mod embeddings;
pub mod loader;
pub mod lora;
pub mod model;
pub mod pipeline;
pub mod rng;
pub mod scheduler;
#[cfg(test)]
mod test_support;
pub mod tokenizer;
pub mod unet;
pub mod vae;
pub mod weights;
