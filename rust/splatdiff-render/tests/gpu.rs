//! The wgpu rasterizer against the CPU reference (runs on lavapipe where no GPU is present).

use glam::Vec3;
use splatdiff_render::gpu::{
    exclusive_scan, radix_sort_pairs, AdamConfig, GpuAdam, GpuContext, GpuGrads, GpuOptions, GpuRenderer, GpuSplats,
};
use splatdiff_render::{reference, sh_coeffs, Grads, RenderError, Splats, View};
use splatdiff_scene::camera::{Camera, Intrinsics};

fn context() -> Option<GpuContext> {
    match GpuContext::new() {
        Ok(c) => Some(c),
        Err(e) => {
            println!("skipping: no GPU adapter ({e})");
            None
        }
    }
}

/// xorshift64*, enough for test scenes.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn f(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn range(&mut self, a: f32, b: f32) -> f32 {
        a + (b - a) * self.f()
    }
    fn normal(&mut self) -> f32 {
        let u = self.f().max(1e-7);
        let v = self.f();
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }
}

fn view(width: u32, height: u32, active: u32, bg: Vec3) -> View {
    let intr = Intrinsics {
        fx: 0.9 * width as f32,
        fy: 0.95 * width as f32,
        cx: 0.43 * width as f32,
        cy: 0.56 * height as f32,
        width,
        height,
    };
    View {
        camera: Camera::look_at(Vec3::new(0.6, -4.0, 1.2), Vec3::new(0.1, 0.0, 0.2), intr),
        active_sh_degree: active,
        background: bg,
    }
}

/// Random splats around the origin, a few behind the camera, a few far off-axis
/// (J clamp) and a few nearly opaque (ALPHA_MAX clamp).
fn scene(n: usize, sh_degree: u32, seed: u64) -> Splats {
    scene_with(n, sh_degree, seed, 1.0)
}

/// `spread` < 1 packs the splats (and makes them opaque), so pixels terminate early.
fn scene_with(n: usize, sh_degree: u32, seed: u64, spread: f32) -> Splats {
    let mut r = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let k = sh_coeffs(sh_degree);
    let mut s = Splats { sh_degree, ..Default::default() };
    for i in 0..n {
        let mean = match i % 20 {
            0 => [r.range(-1.0, 1.0), r.range(-7.0, -4.5), r.range(-0.5, 2.0)], // behind / beside the camera
            1 => [r.range(-6.0, 6.0), r.range(-2.0, 0.0), r.range(-4.0, 4.0)],  // far off-axis (J clamp)
            _ => [r.range(-1.6, 1.6) * spread, r.range(-1.0, 1.0), r.range(-1.2, 1.6) * spread],
        };
        s.means.push(mean);
        s.log_scales.push([r.range(-3.5, -1.3), r.range(-3.5, -1.3), r.range(-3.5, -1.3)]);
        s.quats.push([r.normal(), r.normal(), r.normal(), r.normal()]);
        let logit = if i % 7 == 3 { r.range(5.0, 8.0) } else { r.range(-2.0, 4.0) };
        s.opacity_logits.push(if spread < 1.0 { logit + 3.0 } else { logit });
        for kk in 0..k {
            let a = if kk == 0 { 1.2 } else { 0.4 };
            for _ in 0..3 {
                s.sh.push(r.range(-a, a));
            }
        }
    }
    s
}

/// (storage degree, active degree, spread)
const CASES: [(u32, u32, f32); 8] =
    [(0, 0, 1.0), (1, 1, 1.0), (2, 1, 1.0), (3, 3, 1.0), (3, 2, 1.0), (3, 0, 1.0), (1, 1, 0.25), (3, 3, 0.15)];

#[test]
fn forward_matches_reference() {
    let Some(ctx) = context() else { return };
    println!("adapter: {}", ctx.adapter_description());
    let mut renderer = GpuRenderer::new(&ctx).unwrap();
    let mut worst = (0.0f32, 0.0f32, 0.0f32);
    for (case, &(deg, active, spread)) in CASES.iter().enumerate() {
        let splats = scene_with(200, deg, case as u64 + 1, spread);
        let bg = Vec3::new(0.1, 0.3, 0.7) * (case % 2) as f32;
        let v = view(64, 48, active, bg);
        let gs = GpuSplats::upload(&ctx, &splats).unwrap();
        let img = renderer.render(&ctx, &gs, &v).unwrap();
        let (want, state) = reference::render(&splats, &v).unwrap();
        assert_eq!((img.width, img.height), (64, 48));
        let visible = state.projected.iter().filter(|p| p.radius > 0).count();
        let terminated = (0..state.n_contrib.len())
            .filter(|&p| {
                let (x, y) = (p as u32 % 64 / 16, p as u32 / 64 / 16);
                state.final_t[p] < 0.01 && (state.n_contrib[p] as usize) < state.tile(x, y).len()
            })
            .count();
        let clamped = state.projected.iter().filter(|p| p.opacity > 0.99).count();
        assert_eq!(renderer.last_intersections() as usize, state.tile_splats.len(), "case {case}");
        let mut dc = 0.0f32;
        let mut da = 0.0f32;
        let mut dd = 0.0f32;
        for p in 0..img.color.len() {
            for c in 0..3 {
                dc = dc.max((img.color[p][c] - want.color[p][c]).abs());
            }
            da = da.max((img.alpha[p] - want.alpha[p]).abs());
            if want.alpha[p] > 0.5 {
                dd = dd.max((img.depth[p] - want.depth[p]).abs() / want.depth[p]);
            }
        }
        println!(
            "forward deg {deg} active {active} spread {spread}: {visible} visible ({clamped} opacity > ALPHA_MAX), {} pairs, {terminated} pixels stopped early; max |dcolor| {dc:.2e}, |dalpha| {da:.2e}, rel depth {dd:.2e}",
            state.tile_splats.len()
        );
        assert!(dc < 1e-3 && da < 1e-3 && dd < 1e-3, "case {case}: {dc} {da} {dd}");
        worst = (worst.0.max(dc), worst.1.max(da), worst.2.max(dd));
    }
    println!("forward worst: colour {:.2e}, alpha {:.2e}, depth (relative) {:.2e}", worst.0, worst.1, worst.2);
}

#[test]
fn forward_handles_larger_images_and_many_splats() {
    let Some(ctx) = context() else { return };
    let mut renderer = GpuRenderer::new(&ctx).unwrap();
    let splats = scene(3000, 1, 77);
    let v = view(203, 157, 1, Vec3::new(0.2, 0.2, 0.2));
    let gs = GpuSplats::upload(&ctx, &splats).unwrap();
    let img = renderer.render(&ctx, &gs, &v).unwrap();
    let (want, state) = reference::render(&splats, &v).unwrap();
    assert_eq!(renderer.last_intersections() as usize, state.tile_splats.len());
    let dc =
        img.color.iter().flatten().zip(want.color.iter().flatten()).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    let da = img.alpha.iter().zip(&want.alpha).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    println!(
        "forward 3000 splats at 203x157: {} pairs, max |dcolor| {dc:.2e}, |dalpha| {da:.2e}",
        state.tile_splats.len()
    );
    assert!(dc < 1e-3 && da < 1e-3, "{dc} {da}");
}

/// max |gpu − ref| / max |ref| over a group, and the worst element error relative to |ref| + 1e-3·max|ref|.
fn compare(name: &str, gpu: &[f32], want: &[f32]) -> (f32, f32) {
    assert_eq!(gpu.len(), want.len(), "{name}");
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-12);
    let mut abs = 0.0f32;
    let mut rel = 0.0f32;
    for (g, w) in gpu.iter().zip(want) {
        assert!(g.is_finite(), "{name}: non-finite gradient");
        let e = (g - w).abs();
        abs = abs.max(e / scale);
        rel = rel.max(e / (w.abs() + 1e-3 * scale));
    }
    (abs, rel)
}

fn random_pixel_grads(n: usize, seed: u64) -> (Vec<[f32; 3]>, Vec<f32>) {
    let mut r = Rng(seed | 1);
    let dc = (0..n).map(|_| [r.range(-1.0, 1.0), r.range(-1.0, 1.0), r.range(-1.0, 1.0)]).collect();
    let da = (0..n).map(|_| r.range(-1.0, 1.0)).collect();
    (dc, da)
}

fn check_backward(ctx: &GpuContext) {
    let mut renderer = GpuRenderer::new(ctx).unwrap();
    let mut worst = [(0.0f32, 0.0f32); 5];
    for (case, &(deg, active, spread)) in CASES.iter().enumerate() {
        let splats = scene_with(200, deg, case as u64 + 11, spread);
        let bg = Vec3::new(0.4, 0.2, 0.9) * ((case + 1) % 2) as f32;
        let v = view(64, 48, active, bg);
        let gs = GpuSplats::upload(ctx, &splats).unwrap();
        renderer.render(ctx, &gs, &v).unwrap();
        let (_, state) = reference::render(&splats, &v).unwrap();
        let (dc, da) = random_pixel_grads(64 * 48, case as u64 + 5);
        let mut grads = GpuGrads::new(ctx, 0, 0); // reallocated to fit by backward()
        renderer.backward(ctx, &gs, &v, &dc, &da, &mut grads).unwrap();
        let got = grads.download(ctx);
        let want = reference::backward(&splats, &v, &state, &dc, &da);
        let groups: [(&str, &[f32], &[f32]); 5] = [
            ("means", got.means.as_flattened(), want.means.as_flattened()),
            ("log_scales", got.log_scales.as_flattened(), want.log_scales.as_flattened()),
            ("quats", got.quats.as_flattened(), want.quats.as_flattened()),
            ("opacity_logits", &got.opacity_logits, &want.opacity_logits),
            ("sh", &got.sh, &want.sh),
        ];
        let mut line = format!("backward deg {deg} active {active} spread {spread}:");
        for (g, (name, a, b)) in groups.iter().enumerate() {
            let (abs, rel) = compare(name, a, b);
            line += &format!(" {name} {abs:.1e}/{rel:.1e}");
            worst[g] = (worst[g].0.max(abs), worst[g].1.max(rel));
            // f32 atomics sum in any order and T is recovered by division, the reference sums
            // in f64: observed abs ≤ 5e-6 and rel ≤ 2e-4 on lavapipe; 20× margin.
            assert!(abs < 1e-4 && rel < 5e-3, "case {case} {name}: {abs} {rel}");
        }
        // Inactive SH coefficients get exactly zero.
        let k = splats.coeffs();
        for i in 0..splats.len() {
            for kk in sh_coeffs(active)..k {
                assert_eq!(&got.sh[(i * k + kk) * 3..(i * k + kk) * 3 + 3], &[0.0; 3]);
            }
        }
        println!("{line}");
    }
    println!(
        "backward worst (max err / group max, max err / (|ref| + 1e-3 group max)): {:?} [native float atomics: {}]",
        worst,
        ctx.native_float_atomics()
    );
}

#[test]
fn backward_matches_reference() {
    let Some(ctx) = context() else { return };
    check_backward(&ctx);
}

#[test]
fn backward_matches_reference_with_cas_atomics() {
    let Ok(ctx) = GpuContext::with_options(GpuOptions { float_atomics: false }) else {
        println!("skipping: no GPU adapter");
        return;
    };
    assert!(!ctx.native_float_atomics());
    check_backward(&ctx);
}

#[test]
fn radix_sort_is_stable() {
    let Some(ctx) = context() else { return };
    let mut r = Rng(99);
    for (n, modulo, bits) in [(0usize, 1u32, 8u32), (1, 1, 8), (5000, 1000, 10), (3001, u32::MAX, 32), (70_000, 37, 6)]
    {
        let keys: Vec<u32> = (0..n).map(|_| (r.next() as u32) % modulo).collect();
        let vals: Vec<u32> = (0..n as u32).collect();
        let (k, v) = radix_sort_pairs(&ctx, &keys, &vals, bits).unwrap();
        let mut want: Vec<(u32, u32)> = keys.iter().copied().zip(vals.iter().copied()).collect();
        want.sort_by_key(|p| p.0);
        assert_eq!(k, want.iter().map(|p| p.0).collect::<Vec<_>>(), "keys, n = {n}");
        assert_eq!(v, want.iter().map(|p| p.1).collect::<Vec<_>>(), "values (stability), n = {n}");
    }
}

#[test]
fn scan_is_exclusive_prefix_sum() {
    let Some(ctx) = context() else { return };
    let mut r = Rng(5);
    for n in [1usize, 1023, 1024, 1025, 300_000] {
        let data: Vec<u32> = (0..n).map(|_| (r.next() % 17) as u32).collect();
        let got = exclusive_scan(&ctx, &data).unwrap();
        let mut acc = 0u32;
        let want: Vec<u32> = data
            .iter()
            .map(|v| {
                let o = acc;
                acc += v;
                o
            })
            .collect();
        assert_eq!(got, want, "n = {n}");
    }
}

#[test]
fn adam_step_matches_host() {
    let Some(ctx) = context() else { return };
    let splats = scene(300, 2, 3);
    let mut r = Rng(8);
    let mut rnd = |n: usize| (0..n).map(|_| r.range(-1.0, 1.0)).collect::<Vec<f32>>();
    let mk = |v: Vec<f32>, w: usize| v.chunks_exact(w).map(|c| c.to_vec()).collect::<Vec<_>>();
    let grads_list: Vec<Grads> = (0..3)
        .map(|_| Grads {
            means: mk(rnd(900), 3).into_iter().map(|c| [c[0], c[1], c[2]]).collect(),
            log_scales: mk(rnd(900), 3).into_iter().map(|c| [c[0], c[1], c[2]]).collect(),
            quats: mk(rnd(1200), 4).into_iter().map(|c| [c[0], c[1], c[2], c[3]]).collect(),
            opacity_logits: rnd(300),
            sh: rnd(300 * 27),
        })
        .collect();
    let cfg = AdamConfig {
        lr_means: 0.01,
        lr_log_scales: 0.02,
        lr_quats: 0.03,
        lr_opacity: 0.04,
        lr_sh_dc: 0.05,
        lr_sh_rest: 0.006,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    };
    let mut gs = GpuSplats::upload(&ctx, &splats).unwrap();
    let mut adam = GpuAdam::new(&ctx, &gs);
    let mut host = splats.clone();
    let mut m = vec![vec![0.0f64; 0]; 5];
    let mut v = vec![vec![0.0f64; 0]; 5];
    for (t, g) in grads_list.iter().enumerate() {
        let gg = GpuGrads::upload(&ctx, g, 2).unwrap();
        adam.step(&ctx, &mut gs, &gg, &cfg);
        let t = t as i32 + 1;
        let bc1 = 1.0 - (cfg.beta1 as f64).powi(t);
        let bc2 = 1.0 - (cfg.beta2 as f64).powi(t);
        let params: [&mut [f32]; 5] = [
            host.means.as_flattened_mut(),
            host.log_scales.as_flattened_mut(),
            host.quats.as_flattened_mut(),
            &mut host.opacity_logits,
            &mut host.sh,
        ];
        let gr: [&[f32]; 5] =
            [g.means.as_flattened(), g.log_scales.as_flattened(), g.quats.as_flattened(), &g.opacity_logits, &g.sh];
        let lrs = [cfg.lr_means, cfg.lr_log_scales, cfg.lr_quats, cfg.lr_opacity, cfg.lr_sh_dc];
        for (gi, p) in params.into_iter().enumerate() {
            m[gi].resize(p.len(), 0.0);
            v[gi].resize(p.len(), 0.0);
            for (i, x) in p.iter_mut().enumerate() {
                let lr = if gi == 4 && i % 27 >= 3 { cfg.lr_sh_rest } else { lrs[gi] } as f64;
                let g = gr[gi][i] as f64;
                m[gi][i] = cfg.beta1 as f64 * m[gi][i] + (1.0 - cfg.beta1 as f64) * g;
                v[gi][i] = cfg.beta2 as f64 * v[gi][i] + (1.0 - cfg.beta2 as f64) * g * g;
                let step = lr * (m[gi][i] / bc1) / ((v[gi][i] / bc2).sqrt() + cfg.eps as f64);
                *x = (*x as f64 - step) as f32;
            }
        }
    }
    let got = gs.download(&ctx);
    let pairs: [(&[f32], &[f32]); 5] = [
        (got.means.as_flattened(), host.means.as_flattened()),
        (got.log_scales.as_flattened(), host.log_scales.as_flattened()),
        (got.quats.as_flattened(), host.quats.as_flattened()),
        (&got.opacity_logits, &host.opacity_logits),
        (&got.sh, &host.sh),
    ];
    let mut worst = 0.0f32;
    for (a, b) in pairs {
        for (x, y) in a.iter().zip(b) {
            worst = worst.max((x - y).abs());
        }
    }
    println!("adam: max |gpu - host| after 3 steps {worst:.2e}");
    assert!(worst < 1e-5, "{worst}");
    let (gm, gv) = adam.download_moments(&ctx);
    assert!((gm.opacity_logits[7] as f64 - m[3][7]).abs() < 1e-6);
    assert!((gv.sh[100] as f64 - v[4][100]).abs() < 1e-6);
    // Round trip of the moments.
    adam.upload_moments(&ctx, &gm, &gv).unwrap();
    let (gm2, gv2) = adam.download_moments(&ctx);
    assert_eq!((gm, gv), (gm2, gv2));
}

#[test]
fn empty_and_culled_scenes_render_the_background() {
    let Some(ctx) = context() else { return };
    let mut renderer = GpuRenderer::new(&ctx).unwrap();
    let bg = Vec3::new(0.25, 0.5, 0.75);
    let v = view(40, 30, 0, bg);
    let empty = Splats::default();
    let mut behind = scene(50, 0, 4);
    for m in &mut behind.means {
        *m = [0.6 + m[0] * 0.1, -6.0 + m[1] * 0.1, 1.2];
    }
    for s in [empty, behind] {
        let gs = GpuSplats::upload(&ctx, &s).unwrap();
        let img = renderer.render(&ctx, &gs, &v).unwrap();
        assert_eq!(img.color.len(), 1200);
        assert!(img.color.iter().all(|c| *c == [0.25, 0.5, 0.75]));
        assert!(img.alpha.iter().all(|a| *a == 0.0) && img.depth.iter().all(|d| *d == 0.0));
        let mut grads = GpuGrads::new(&ctx, s.len(), 0);
        let (dc, da) = random_pixel_grads(1200, 1);
        renderer.backward(&ctx, &gs, &v, &dc, &da, &mut grads).unwrap();
        let g = grads.download(&ctx);
        assert_eq!(g.means.len(), s.len());
        assert!(g.means.as_flattened().iter().chain(&g.sh).all(|x| *x == 0.0));
    }
}

#[test]
fn bad_input_is_an_error() {
    let Some(ctx) = context() else { return };
    let mut s = scene(10, 1, 2);
    s.means[3][1] = f32::NAN;
    assert!(matches!(GpuSplats::upload(&ctx, &s), Err(RenderError::InvalidSplats(_))));
    let s = scene(10, 1, 2);
    let gs = GpuSplats::upload(&ctx, &s).unwrap();
    let mut renderer = GpuRenderer::new(&ctx).unwrap();
    assert!(matches!(renderer.render(&ctx, &gs, &view(32, 32, 2, Vec3::ZERO)), Err(RenderError::InvalidCamera(_))));
    let mut v = view(32, 32, 1, Vec3::ZERO);
    v.camera.intrinsics.fx = f32::NAN;
    assert!(matches!(renderer.render(&ctx, &gs, &v), Err(RenderError::InvalidCamera(_))));
    // backward() without a matching render().
    let mut grads = GpuGrads::new(&ctx, 10, 1);
    let v = view(32, 32, 1, Vec3::ZERO);
    let (dc, da) = random_pixel_grads(32 * 32, 3);
    assert!(renderer.backward(&ctx, &gs, &v, &dc, &da, &mut grads).is_err());
    renderer.render(&ctx, &gs, &v).unwrap();
    assert!(renderer.backward(&ctx, &gs, &v, &dc[1..], &da, &mut grads).is_err());
    renderer.backward(&ctx, &gs, &v, &dc, &da, &mut grads).unwrap();
}

#[test]
fn upload_download_round_trip() {
    let Some(ctx) = context() else { return };
    for deg in 0..=3 {
        let s = scene(123, deg, deg as u64 + 40);
        let gs = GpuSplats::upload(&ctx, &s).unwrap();
        assert_eq!((gs.len(), gs.sh_degree()), (123, deg));
        assert_eq!(gs.download(&ctx), s);
    }
    let e = GpuSplats::upload(&ctx, &Splats::default()).unwrap();
    assert_eq!(e.download(&ctx), Splats::default());
}
