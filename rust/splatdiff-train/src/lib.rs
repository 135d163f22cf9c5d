//! Trains 3D Gaussian splats on posed images (3DGS, Kerbl et al. 2023) with
//! the differentiable rasterizer of [`splatdiff_render`].
//!
//! * [`dataset`]: posed RGBA training images from a `transforms.json`.
//! * [`loss`]: the 3DGS photometric loss `(1−λ)·L1 + λ·(1 − SSIM)` and its
//!   exact gradient with respect to the rendered image.
//! * [`metrics`]: PSNR and SSIM for evaluation.
//! * [`init`]: initial splats (random in a box, or from a point cloud) and
//!   the scene extent that scales position learning rates.
//! * [`strategy`]: densification strategies; [`strategy::Mcmc`] (3DGS as
//!   Markov chain Monte Carlo, Kheradmand et al. 2024) keeps the splat count
//!   under a hard cap.
//! * [`trainer`]: the training loop on the GPU, with checkpoints that resume
//!   exactly.
//!
//! Colours are trained in the images' own encoding (sRGB values used as if
//! linear), as 3DGS does.

// `u64::is_multiple_of` is newer than the workspace's rust-version (1.85).
#![allow(clippy::manual_is_multiple_of)]

pub mod dataset;
pub mod error;
pub mod init;
pub mod loss;
pub mod metrics;
pub mod rng;
pub mod strategy;
pub mod trainer;

pub use dataset::{load_dataset, split_holdout, TrainImage};
pub use error::{Result, TrainError};
pub use trainer::{Outcome, StepStats, Timings, TrainConfig, Trainer};
