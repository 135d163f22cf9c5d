//! Stable Diffusion (1.5 and 2.1 families) img2img with ControlNet and
//! cross-keyframe consistency, on candle: the `stylize` stage's diffusion
//! stylizer.

pub mod error;
pub use error::{DiffusionError, Result};
pub mod scheduler;
pub mod unet;
pub mod controlnet;
pub mod rng;
pub mod control;
pub mod consistency;
pub mod clip;
pub mod embeddings;
pub mod loader;
pub mod lora;
pub mod model;
pub mod tokenizer;
pub mod vae;
pub mod weights;
#[cfg(test)]
mod test_support;
pub mod pipeline;
