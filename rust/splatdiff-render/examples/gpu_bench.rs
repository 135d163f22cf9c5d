//! Forward + backward timings of the wgpu rasterizer on random splats.
//!
//! `cargo run --release -p splatdiff-render --example gpu_bench -- [splats] [iterations]`
//! (defaults: 100000 splats, 3 timed iterations per resolution).

use std::time::Instant;

use glam::Vec3;
use splatdiff_render::gpu::{GpuContext, GpuGrads, GpuRenderer, GpuSplats};
use splatdiff_render::{Splats, View};
use splatdiff_scene::camera::{Camera, Intrinsics};

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let iters: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let ctx = match GpuContext::new() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    println!("adapter: {}", ctx.adapter_description());
    println!("native float atomics: {}", ctx.native_float_atomics());

    // A 2 m cube of splats of 1-3 cm seen from 3 m, like an early training scene.
    let mut seed = 0x1234_5678_9abc_def1u64;
    let mut rnd = move || {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        (seed.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 24) as f32
    };
    let mut s = Splats { sh_degree: 3, ..Default::default() };
    for _ in 0..n {
        s.means.push([rnd() * 2.0 - 1.0, rnd() * 2.0 - 1.0, rnd() * 2.0 - 1.0]);
        let l = -4.5 + rnd() * 1.1;
        s.log_scales.push([l + rnd() * 0.3, l + rnd() * 0.3, l + rnd() * 0.3]);
        s.quats.push([rnd() - 0.5, rnd() - 0.5, rnd() - 0.5, rnd() - 0.5]);
        s.opacity_logits.push(rnd() * 4.0 - 2.0);
        s.sh.extend((0..48).map(|k| if k < 3 { rnd() - 0.5 } else { (rnd() - 0.5) * 0.1 }));
    }
    let gs = GpuSplats::upload(&ctx, &s).expect("upload");
    let mut renderer = GpuRenderer::new(&ctx).expect("kernels");
    let mut grads = GpuGrads::new(&ctx, n, 3);

    for size in [200u32, 800] {
        let intr = Intrinsics::from_fov_x(0.69, size, size);
        let view = View {
            camera: Camera::look_at(Vec3::new(0.0, -3.0, 0.3), Vec3::ZERO, intr),
            active_sh_degree: 3,
            background: Vec3::ZERO,
        };
        let pixels = (size * size) as usize;
        let d_color = vec![[1e-3f32, -2e-3, 5e-4]; pixels];
        let d_alpha = vec![1e-3f32; pixels];
        // Warm-up (buffer growth, pipeline caches).
        renderer.render(&ctx, &gs, &view).expect("render");
        renderer.backward(&ctx, &gs, &view, &d_color, &d_alpha, &mut grads).expect("backward");
        ctx.wait().expect("wait");
        let (mut fwd, mut bwd) = (0.0f64, 0.0f64);
        for _ in 0..iters {
            let t = Instant::now();
            renderer.render(&ctx, &gs, &view).expect("render");
            fwd += t.elapsed().as_secs_f64();
            let t = Instant::now();
            renderer.backward(&ctx, &gs, &view, &d_color, &d_alpha, &mut grads).expect("backward");
            ctx.wait().expect("wait");
            bwd += t.elapsed().as_secs_f64();
        }
        println!(
            "{n} splats at {size}x{size}: {} splat-tile pairs; forward {:.1} ms, backward {:.1} ms (mean of {iters})",
            renderer.last_intersections(),
            1e3 * fwd / iters as f64,
            1e3 * bwd / iters as f64
        );
    }
}
