//! Seconds per UNet step for the real Stable Diffusion 1.5 architecture at
//! 512x512 (64x64 latent), batch 2 (classifier-free guidance), f32, on the
//! CPU, with random weights (values do not change the cost), and peak RSS.
//!
//!     RAYON_NUM_THREADS=2 cargo run --release -p splatdiff-diffusion --example bench_unet -- \
//!         [--impl ours|candle-transformers] [--steps 3] [--size 64] [--cross-frame]
//!
//! `--impl candle-transformers` times candle-transformers' UNet on the same
//! weights for comparison. `--cross-frame` runs ours with cross-frame
//! attention (batch = 2 groups of 1 frame plus anchor concatenation, i.e.
//! twice the self-attention keys).

use std::time::Instant;

use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::{Init, VarBuilder};
use splatdiff_diffusion::unet::{AttentionMode, BlockKind, CrossFrameAttention, UNet2DConditionModel, UNetConfig};

/// Gives every requested weight random values of a sensible scale
/// (1/sqrt(fan-in) for matrices and kernels, 1 and 0 for norm scales and biases).
struct RandomWeights;

impl candle_nn::var_builder::SimpleBackend for RandomWeights {
    fn get(&self, s: Shape, name: &str, _: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let dims = s.dims();
        if dims.len() == 1 {
            let v = if name.ends_with("weight") { 1.0 } else { 0.0 };
            return Tensor::full(v as f32, s, dev)?.to_dtype(dtype);
        }
        let fan_in: usize = dims[1..].iter().product();
        Tensor::randn(0f32, (1.0 / fan_in as f64).sqrt() as f32, s, dev)?.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> Result<Tensor> {
        candle_core::bail!("random weights need a shape for {name}")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let which = arg(&args, "--impl").unwrap_or_else(|| "ours".into());
    let steps: usize = arg(&args, "--steps").and_then(|s| s.parse().ok()).unwrap_or(3);
    let size: usize = arg(&args, "--size").and_then(|s| s.parse().ok()).unwrap_or(64);
    let cross_frame = args.iter().any(|a| a == "--cross-frame");
    let dev = Device::Cpu;
    let vb = VarBuilder::from_backend(Box::new(RandomWeights), DType::F32, dev.clone());
    let sample = Tensor::randn(0f32, 1., (2, 4, size, size), &dev)?;
    let context = Tensor::randn(0f32, 1., (2, 77, 768), &dev)?;
    println!(
        "SD 1.5 UNet, {which}, latent 2x4x{size}x{size}, f32, {} threads{}",
        candle_core::utils::get_num_threads(),
        if cross_frame { ", cross-frame attention" } else { "" }
    );
    let t0 = Instant::now();
    let step: Box<dyn Fn() -> Result<Tensor>> = match which.as_str() {
        "ours" => {
            let unet = UNet2DConditionModel::new(vb, &UNetConfig::sd15()).map_err(candle_core::Error::wrap)?;
            let mode = if cross_frame {
                AttentionMode::CrossFrame(CrossFrameAttention::with_anchors(1, vec![0]))
            } else {
                AttentionMode::Plain
            };
            Box::new(move || unet.forward(&sample, 500.0, &context, None, &mode).map_err(candle_core::Error::wrap))
        }
        "candle-transformers" => {
            use candle_transformers::models::stable_diffusion::unet_2d;
            let c = UNetConfig::sd15();
            let blocks = c
                .block_out_channels
                .iter()
                .zip(&c.down_blocks)
                .map(|(&out_channels, kind)| unet_2d::BlockConfig {
                    out_channels,
                    use_cross_attn: (*kind == BlockKind::CrossAttn).then_some(1),
                    attention_head_dim: 8,
                })
                .collect();
            let config = unet_2d::UNet2DConditionModelConfig {
                center_input_sample: false,
                flip_sin_to_cos: true,
                freq_shift: 0.,
                blocks,
                layers_per_block: 2,
                downsample_padding: 1,
                mid_block_scale_factor: 1.,
                norm_num_groups: 32,
                norm_eps: 1e-5,
                cross_attention_dim: 768,
                sliced_attention_size: None,
                use_linear_projection: false,
            };
            let unet = unet_2d::UNet2DConditionModel::new(vb, 4, 4, false, config)?;
            Box::new(move || unet.forward(&sample, 500.0, &context))
        }
        other => candle_core::bail!("unknown --impl {other} (ours | candle-transformers)"),
    };
    println!("built in {:.1} s", t0.elapsed().as_secs_f64());
    let t0 = Instant::now();
    step()?.sum_all()?.to_scalar::<f32>()?;
    println!("warm-up step: {:.2} s", t0.elapsed().as_secs_f64());
    let mut times = Vec::with_capacity(steps);
    for _ in 0..steps {
        let t0 = Instant::now();
        let out = step()?;
        out.sum_all()?.to_scalar::<f32>()?;
        times.push(t0.elapsed().as_secs_f64());
    }
    let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
    println!("steps: {times:.2?}");
    println!("mean: {mean:.2} s/step; peak RSS {:.0} MiB", peak_rss_mib());
    Ok(())
}
