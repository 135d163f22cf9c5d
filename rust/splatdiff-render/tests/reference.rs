//! Tests of the CPU reference rasterizer: finite-difference gradient checks,
//! forward closed forms, determinism across thread counts and bad input.

use glam::Vec3;
use splatdiff_render::reference::{backward, project, render, ForwardState, Projected};
use splatdiff_render::{sh_coeffs, Grads, RenderError, Splats, View, ALPHA_MIN, SH_C0, T_MIN};
use splatdiff_scene::{Camera, GaussianSplats, Intrinsics};

/// SplitMix64, enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)
    }
}

fn small_view(background: Vec3, active_sh_degree: u32) -> View {
    // Non-square, principal point off centre.
    let k = Intrinsics { fx: 30.0, fy: 32.0, cx: 11.3, cy: 10.7, width: 24, height: 20 };
    let camera = Camera::look_at(Vec3::new(0.7, -4.5, 0.9), Vec3::new(0.0, 0.0, 0.1), k);
    View { camera, active_sh_degree, background }
}

/// `n` large, soft, partly transparent splats around the origin, so that
/// every pixel sees every splat well above `ALPHA_MIN` and below the 0.99 clamp.
fn smooth_scene(rng: &mut Rng, n: usize, sh_degree: u32) -> Splats {
    let k = sh_coeffs(sh_degree);
    let mut s = Splats { sh_degree, ..Default::default() };
    for i in 0..n {
        // Spread along the view axis (+y) so depths differ clearly.
        s.means.push([rng.uniform(-0.25, 0.25), -0.6 + 0.5 * i as f32 + rng.uniform(0.0, 0.2), rng.uniform(-0.1, 0.3)]);
        s.log_scales.push([0; 3].map(|_| rng.uniform(1.3, 2.8).ln()));
        // Deliberately not normalised.
        let len = rng.uniform(0.6, 1.8);
        let q = [rng.uniform(0.5, 1.0), rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.6)];
        let norm = q.iter().map(|v| v * v).sum::<f32>().sqrt();
        s.quats.push(q.map(|v| v * len / norm));
        s.opacity_logits.push(rng.uniform(-1.0, 1.0));
        for kk in 0..k {
            for _ in 0..3 {
                // A positive base colour (away from the clamp at 0), small higher bands.
                s.sh.push(if kk == 0 {
                    rng.uniform(0.1, 0.9) / SH_C0 - 0.5 / SH_C0 + rng.uniform(0.0, 0.1)
                } else {
                    rng.uniform(-0.15, 0.15)
                });
            }
        }
    }
    s
}

fn weights(rng: &mut Rng, n: usize) -> (Vec<[f32; 3]>, Vec<f32>) {
    let w = (0..n).map(|_| [rng.uniform(-1.0, 1.0), rng.uniform(-1.0, 1.0), rng.uniform(-1.0, 1.0)]).collect();
    let v = (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect();
    (w, v)
}

fn loss(splats: &Splats, view: &View, w: &[[f32; 3]], v: &[f32], base: &ForwardState) -> f64 {
    let (img, state) = render(splats, view).unwrap();
    assert_eq!(
        (&state.tile_ranges, &state.tile_splats),
        (&base.tile_ranges, &base.tile_splats),
        "a perturbation changed the tile lists: the test scene is not smooth there"
    );
    let mut l = 0.0f64;
    for p in 0..img.color.len() {
        l += (0..3).map(|c| w[p][c] as f64 * img.color[p][c] as f64).sum::<f64>();
        l += v[p] as f64 * img.alpha[p] as f64;
    }
    l
}

fn raw_alpha(p: &Projected, px: f32, py: f32) -> f32 {
    let (dx, dy) = (px - p.mean2d[0], py - p.mean2d[1]);
    let [a, b, c] = p.conic;
    p.opacity * (-0.5 * (a * dx * dx + c * dy * dy) - b * dx * dy).exp()
}

/// The scene is away from every cut-off at every pixel.
fn assert_smooth(state: &ForwardState) {
    for y in 0..state.height {
        for x in 0..state.width {
            let p = (y * state.width + x) as usize;
            assert!(state.final_t[p] > 5.0 * T_MIN, "pixel ({x}, {y}) too close to T_MIN");
            for &s in state.tile(x / 16, y / 16) {
                let a = raw_alpha(&state.projected[s as usize], x as f32 + 0.5, y as f32 + 0.5);
                assert!(
                    !(0.7 * ALPHA_MIN..1.4 * ALPHA_MIN).contains(&a) && a < 0.95,
                    "splat {s} at pixel ({x}, {y}) has alpha {a}, too close to a cut-off"
                );
            }
        }
    }
}

/// Central differences for every parameter against [`backward`]; returns the
/// worst relative error over components that matter (|g| > 2% of the group's largest).
///
/// The renderer works in f32, so the loss carries rounding noise of about
/// 1e-6 (a few ulps over ~2000 weighted values), which puts a floor of roughly
/// 1e-4 under any finite difference. Each component must therefore agree to
/// 2% or to 1e-3 of its group's largest gradient (or to [`NOISE`]), and
/// each group's largest component to 0.5%.
/// The finite differences' noise floor in loss units per parameter unit.
const NOISE: f64 = 3e-4;

fn check_gradients(splats: &Splats, view: &View, seed: u64) -> f64 {
    let mut rng = Rng(seed);
    let (img, state) = render(splats, view).unwrap();
    assert_smooth(&state);
    let n_pix = img.color.len();
    let (w, v) = weights(&mut rng, n_pix);
    let grads = backward(splats, view, &state, &w, &v);
    let active = sh_coeffs(view.active_sh_degree);

    type Access = fn(&mut Splats) -> &mut [f32];
    type GradAccess = fn(&Grads) -> &[f32];
    let groups: [(&str, Access, GradAccess); 5] = [
        ("means", |s| s.means.as_flattened_mut(), |g| g.means.as_flattened()),
        ("log_scales", |s| s.log_scales.as_flattened_mut(), |g| g.log_scales.as_flattened()),
        ("quats", |s| s.quats.as_flattened_mut(), |g| g.quats.as_flattened()),
        ("opacity_logits", |s| &mut s.opacity_logits, |g| &g.opacity_logits),
        ("sh", |s| &mut s.sh, |g| &g.sh),
    ];
    let mut worst = 0.0f64;
    for (name, access, grad) in groups {
        let analytic = grad(&grads);
        let mut probe = splats.clone();
        let count = access(&mut probe).len();
        assert_eq!(analytic.len(), count, "{name}: gradient has the wrong length");
        let scale = analytic.iter().fold(0.0f64, |m, g| m.max(g.abs() as f64));
        assert!(scale > 0.0, "{name}: all gradients are zero");
        let mut fd = vec![0.0f64; count];
        for (j, out) in fd.iter_mut().enumerate() {
            let x0 = access(&mut probe)[j];
            // Central differences at h and h/2, combined by Richardson
            // extrapolation: O(h⁴) truncation with a step large enough that
            // the f32 rounding of the image stays small against it.
            let mut central = |h: f32| {
                access(&mut probe)[j] = x0 + h;
                let hi_x = access(&mut probe)[j];
                let hi = loss(&probe, view, &w, &v, &state);
                access(&mut probe)[j] = x0 - h;
                let lo_x = access(&mut probe)[j];
                let lo = loss(&probe, view, &w, &v, &state);
                access(&mut probe)[j] = x0;
                (hi - lo) / (hi_x - lo_x) as f64
            };
            let (d1, d2) = (central(1e-2), central(5e-3));
            *out = (4.0 * d2 - d1) / 3.0;
        }
        let mut group_worst = 0.0f64;
        for j in 0..count {
            let (a, f) = (analytic[j] as f64, fd[j]);
            let err = (a - f).abs();
            assert!(
                err <= 0.02 * a.abs().max(f.abs()) || err <= (1e-3 * scale).max(NOISE),
                "{name}[{j}]: analytic {a} vs finite difference {f} (group scale {scale})"
            );
            if a.abs() > 0.02 * scale {
                group_worst = group_worst.max(err / a.abs());
            }
            if name == "sh" && (j / 3) % splats.coeffs() >= active {
                assert_eq!(a, 0.0, "sh[{j}] is above the active degree but has a gradient");
            }
        }
        // The largest components agree closely in sign and size.
        let top = (0..count).max_by(|&a, &b| analytic[a].abs().total_cmp(&analytic[b].abs())).unwrap();
        let (a, f) = (analytic[top] as f64, fd[top]);
        assert!((a - f).abs() < 0.005 * a.abs(), "{name}[{top}] (largest): analytic {a} vs fd {f}");
        eprintln!("{name}: scale {scale:.4e}, worst relative error {group_worst:.3e}");
        worst = worst.max(group_worst);
    }
    worst
}

#[test]
fn gradients_match_finite_differences_for_every_sh_degree() {
    let mut worst = 0.0f64;
    for degree in 0..=3 {
        let mut rng = Rng(100 + degree as u64);
        let splats = smooth_scene(&mut rng, 2 + degree as usize, degree);
        let view = small_view(Vec3::new(0.3, 0.5, 0.8), degree);
        eprintln!("degree {degree}, {} splats", splats.len());
        worst = worst.max(check_gradients(&splats, &view, 7 + degree as u64));
    }
    eprintln!("worst relative error over all degrees: {worst:.3e}");
}

#[test]
fn gradients_with_active_degree_below_storage() {
    let mut rng = Rng(200);
    let splats = smooth_scene(&mut rng, 4, 3);
    let view = small_view(Vec3::new(0.6, 0.2, 0.1), 1);
    let worst = check_gradients(&splats, &view, 11);
    eprintln!("active 1 of 3: worst relative error {worst:.3e}");
}

#[test]
fn gradients_with_six_splats_and_field_of_view_clamp() {
    let mut rng = Rng(300);
    let mut splats = smooth_scene(&mut rng, 6, 2);
    let view = small_view(Vec3::new(0.2, 0.9, 0.4), 2);
    // Move splat 0 beyond 1.3× the half field of view to the right (its
    // centre is off the image) and make it big enough to still cover it.
    let w2c = view.camera.world_to_camera_opencv();
    let c2w = w2c.inverse();
    let t = w2c.transform_point3(Vec3::from_array(splats.means[0]));
    let lim = 1.3 * 0.5 * 24.0 / 30.0;
    let moved = c2w.transform_point3(Vec3::new(1.1 * lim * t.z, t.y, t.z));
    splats.means[0] = moved.to_array();
    splats.log_scales[0] = [3.2f32.ln(); 3];
    let p = project(&splats, &view);
    assert!(p[0].radius > 0 && p[0].mean2d[0] > 24.0, "splat 0 should be visible from off the image: {:?}", p[0]);
    let worst = check_gradients(&splats, &view, 13);
    eprintln!("six splats with a clamped one: worst relative error {worst:.3e}");
}

/// A camera at (0, −5, 0) looking at the origin; pixel (12, 9)'s centre is the principal point.
fn axis_view(background: Vec3) -> View {
    let k = Intrinsics { fx: 40.0, fy: 44.0, cx: 12.5, cy: 9.5, width: 24, height: 20 };
    View { camera: Camera::look_at(Vec3::new(0.0, -5.0, 0.0), Vec3::ZERO, k), active_sh_degree: 0, background }
}

fn isotropic(splats: &mut Splats, mean: [f32; 3], scale: f32, logit: f32, color: [f32; 3]) {
    splats.means.push(mean);
    splats.log_scales.push([scale.ln(); 3]);
    splats.quats.push([1.0, 0.0, 0.0, 0.0]);
    splats.opacity_logits.push(logit);
    splats.sh.extend(color.map(|c| (c - 0.5) / SH_C0));
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[test]
fn isotropic_splat_matches_the_closed_form() {
    let bg = Vec3::new(0.1, 0.2, 0.3);
    let view = axis_view(bg);
    let mut s = Splats::default();
    let color = [0.8, 0.3, 0.6];
    isotropic(&mut s, [0.0; 3], 0.1, 0.4, color);
    let (img, _) = render(&s, &view).unwrap();
    let op = sigmoid(0.4);
    // Σ' = diag((f·s/z)²) + 0.3.
    let var_x = (40.0f32 * 0.1 / 5.0).powi(2) + 0.3;
    let var_y = (44.0f32 * 0.1 / 5.0).powi(2) + 0.3;
    for (x, y) in [(12u32, 9u32), (13, 10), (10, 9), (12, 7)] {
        let (dx, dy) = (x as f32 - 12.0, y as f32 - 9.0);
        let alpha = op * (-0.5 * (dx * dx / var_x + dy * dy / var_y)).exp();
        let p = (y * 24 + x) as usize;
        assert!((img.alpha[p] - alpha).abs() < 1e-5, "alpha at ({x}, {y}): {} vs {alpha}", img.alpha[p]);
        for c in 0..3 {
            let want = color[c] * alpha + (1.0 - alpha) * bg[c];
            assert!((img.color[p][c] - want).abs() < 1e-5, "colour at ({x}, {y}): {:?}", img.color[p]);
        }
        assert!((img.depth[p] - 5.0).abs() < 1e-4, "depth {}", img.depth[p]);
    }
    let p = project(&s, &view)[0];
    assert!((p.mean2d[0] - 12.5).abs() < 1e-4 && (p.mean2d[1] - 9.5).abs() < 1e-4, "{p:?}");
    assert_eq!(p.radius, (3.0 * var_y.sqrt()).ceil() as u32);
}

#[test]
fn splats_behind_or_too_near_render_nothing() {
    let bg = Vec3::new(0.25, 0.5, 0.75);
    let view = axis_view(bg);
    for (y, scale) in [(-6.0, 0.1), (-5.0 + 0.005, 0.0001), (-5.0 - 0.5, 0.1)] {
        let mut s = Splats::default();
        isotropic(&mut s, [0.0, y, 0.0], scale, 3.0, [1.0, 0.0, 0.0]);
        let (img, _) = render(&s, &view).unwrap();
        assert!(img.alpha.iter().all(|&a| a == 0.0), "splat at y = {y} drew something");
        assert!(img.color.iter().all(|&c| c == bg.to_array()));
        assert_eq!(project(&s, &view)[0].radius, 0);
    }
    // Control: just beyond NEAR it is drawn.
    let mut s = Splats::default();
    isotropic(&mut s, [0.0, -5.0 + 0.02, 0.0], 0.001, 3.0, [1.0, 0.0, 0.0]);
    let (img, _) = render(&s, &view).unwrap();
    assert!(img.alpha[9 * 24 + 12] > 0.5);
}

#[test]
fn overlapping_splats_blend_in_depth_order() {
    let bg = Vec3::new(0.1, 0.1, 0.4);
    let view = axis_view(bg);
    let mut s = Splats::default();
    isotropic(&mut s, [0.0, 0.0, 0.0], 0.15, 0.5, [0.9, 0.1, 0.1]); // front
    isotropic(&mut s, [0.05, 1.0, 0.02], 0.2, 1.0, [0.1, 0.9, 0.2]); // behind
    let mut swapped = Splats::default();
    isotropic(&mut swapped, [0.05, 1.0, 0.02], 0.2, 1.0, [0.1, 0.9, 0.2]);
    isotropic(&mut swapped, [0.0, 0.0, 0.0], 0.15, 0.5, [0.9, 0.1, 0.1]);
    let (a, _) = render(&s, &view).unwrap();
    let (b, _) = render(&swapped, &view).unwrap();
    assert_eq!(a, b, "the order in the arrays must not matter");

    let p = project(&s, &view);
    assert!(p[0].depth < p[1].depth);
    let (px, py) = (13.5, 9.5);
    let (a0, a1) = (raw_alpha(&p[0], px, py), raw_alpha(&p[1], px, py));
    let pix = (9 * 24 + 13) as usize;
    let front_first: [f32; 3] =
        [0, 1, 2].map(|c| p[0].color[c] * a0 + p[1].color[c] * a1 * (1.0 - a0) + (1.0 - a0) * (1.0 - a1) * bg[c]);
    let back_first: [f32; 3] =
        [0, 1, 2].map(|c| p[1].color[c] * a1 + p[0].color[c] * a0 * (1.0 - a1) + (1.0 - a0) * (1.0 - a1) * bg[c]);
    for c in 0..3 {
        assert!((a.color[pix][c] - front_first[c]).abs() < 1e-5, "{:?} vs {front_first:?}", a.color[pix]);
    }
    assert!((0..3).any(|c| (front_first[c] - back_first[c]).abs() > 1e-2), "the test should tell the orders apart");
    let depth = (p[0].depth * a0 + p[1].depth * a1 * (1.0 - a0)) / (1.0 - (1.0 - a0) * (1.0 - a1));
    assert!((a.depth[pix] - depth).abs() < 1e-4, "{} vs {depth}", a.depth[pix]);
}

#[test]
fn alpha_stays_below_one_minus_t_min_and_background_shows_elsewhere() {
    let bg = Vec3::new(0.3, 0.6, 0.9);
    let view = axis_view(bg);
    let mut s = Splats::default();
    for i in 0..12 {
        isotropic(&mut s, [0.01 * i as f32, 0.2 * i as f32, 0.0], 0.08, 8.0, [0.5, 0.4, 0.3]);
    }
    let (img, state) = render(&s, &view).unwrap();
    let centre = 9 * 24 + 12;
    assert!(img.alpha[centre] >= 0.99, "{}", img.alpha[centre]);
    assert!(state.final_t[centre] >= T_MIN);
    for (p, &a) in img.alpha.iter().enumerate() {
        assert!(a <= 1.0 - T_MIN, "pixel {p}: alpha {a}");
    }
    // Corners are far from every splat.
    for p in [0, 23, 19 * 24, 19 * 24 + 23] {
        assert_eq!(img.alpha[p], 0.0);
        assert_eq!(img.depth[p], 0.0);
        assert_eq!(img.color[p], bg.to_array());
    }
}

#[test]
fn depth_of_a_single_opaque_splat() {
    let view = axis_view(Vec3::ZERO);
    let mut s = Splats::default();
    isotropic(&mut s, [0.1, 0.7, -0.05], 0.2, 8.0, [0.5; 3]);
    let (img, _) = render(&s, &view).unwrap();
    let z = project(&s, &view)[0].depth;
    assert!((z - 5.7).abs() < 1e-4);
    let drawn = img.alpha.iter().filter(|&&a| a > 0.0).count();
    assert!(drawn > 10);
    for (p, &a) in img.alpha.iter().enumerate() {
        if a > 0.0 {
            assert!((img.depth[p] - z).abs() < 1e-4 * z, "pixel {p}: depth {} vs {z}", img.depth[p]);
        }
    }
}

fn random_scene(rng: &mut Rng, n: usize, sh_degree: u32, spread: f32, scale: (f32, f32)) -> Splats {
    let k = sh_coeffs(sh_degree);
    let mut s = Splats { sh_degree, ..Default::default() };
    for _ in 0..n {
        s.means.push([rng.uniform(-spread, spread), rng.uniform(-spread, spread), rng.uniform(-spread, spread)]);
        s.log_scales.push([0; 3].map(|_| rng.uniform(scale.0, scale.1)));
        s.quats.push([rng.uniform(-1.0, 1.0), rng.uniform(-1.0, 1.0), rng.uniform(-1.0, 1.0), rng.uniform(-1.0, 1.0)]);
        s.opacity_logits.push(rng.uniform(-2.0, 4.0));
        s.sh.extend((0..k * 3).map(|j| if j < 3 { rng.uniform(-1.5, 2.0) } else { rng.uniform(-0.3, 0.3) }));
    }
    s
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let mut rng = Rng(400);
    let splats = random_scene(&mut rng, 400, 3, 1.0, (-3.5, -1.5));
    let k = Intrinsics { fx: 60.0, fy: 58.0, cx: 37.0, cy: 24.0, width: 70, height: 50 };
    let view = View {
        camera: Camera::look_at(Vec3::new(1.0, -4.0, 1.5), Vec3::ZERO, k),
        active_sh_degree: 3,
        background: Vec3::new(0.2, 0.3, 0.4),
    };
    let (w, v) = weights(&mut rng, 70 * 50);
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| {
            let (img, state) = render(&splats, &view).unwrap();
            let grads = backward(&splats, &view, &state, &w, &v);
            (img, state, grads)
        })
    };
    let one = run(1);
    assert!(one.1.tiles_x * one.1.tiles_y == 20 && one.0.alpha.iter().filter(|&&a| a > 0.0).count() > 1000);
    assert!(one.2.means.iter().any(|g| g[0] != 0.0));
    for threads in [2, 3] {
        let other = run(threads);
        assert!(one.0 == other.0, "image differs with {threads} threads");
        assert!(one.1 == other.1, "state differs with {threads} threads");
        assert!(one.2 == other.2, "gradients differ with {threads} threads");
    }
}

#[test]
fn bad_input_is_rejected() {
    let mut rng = Rng(500);
    let mut splats = random_scene(&mut rng, 4, 1, 0.5, (-2.0, -1.0));
    let view = small_view(Vec3::ZERO, 1);
    assert!(render(&splats, &view).is_ok());
    splats.means[2][1] = f32::NAN;
    match render(&splats, &view) {
        Err(RenderError::InvalidSplats(m)) => assert!(m.contains("splat 2"), "{m}"),
        other => panic!("expected InvalidSplats, got {other:?}"),
    }
    splats.means[2][1] = 0.0;

    let mut empty = view;
    empty.camera.intrinsics.width = 0;
    assert!(matches!(render(&splats, &empty), Err(RenderError::InvalidCamera(_))));
    let mut too_high = view;
    too_high.active_sh_degree = 2;
    assert!(matches!(render(&splats, &too_high), Err(RenderError::InvalidCamera(_))));
}

#[test]
fn gaussians_round_trip() {
    let mut rng = Rng(600);
    let n = 5;
    let degree = 2;
    let rest = sh_coeffs(degree) - 1;
    let g = GaussianSplats {
        positions: (0..n).map(|_| [rng.uniform(-1.0, 1.0); 3]).collect(),
        sh_dc: (0..n).map(|_| [rng.uniform(-1.0, 1.0), rng.uniform(-1.0, 1.0), rng.uniform(-1.0, 1.0)]).collect(),
        sh_rest: (0..n * rest * 3).map(|_| rng.uniform(-1.0, 1.0)).collect(),
        sh_degree: degree,
        opacity: (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect(),
        scales: (0..n).map(|_| [rng.uniform(-3.0, 0.0); 3]).collect(),
        rotations: (0..n).map(|_| [rng.uniform(-1.0, 1.0); 4]).collect(),
        extra: vec![],
    };
    let s = Splats::from_gaussians(&g);
    assert!(s.problem().is_none());
    let k = s.coeffs();
    for i in 0..n {
        for c in 0..3 {
            assert_eq!(s.sh[(i * k) * 3 + c], g.sh_dc[i][c]);
            for j in 0..rest {
                assert_eq!(s.sh[(i * k + j + 1) * 3 + c], g.sh_rest[i * rest * 3 + c * rest + j]);
            }
        }
    }
    assert_eq!(s.to_gaussians(), g);
}

/// `cargo test -p splatdiff-render --release --test reference -- --ignored --nocapture`
#[test]
#[ignore]
fn timing_200x200_with_10000_splats() {
    let mut rng = Rng(700);
    let splats = random_scene(&mut rng, 10_000, 3, 1.0, (-4.5, -2.5));
    let k = Intrinsics::from_fov_x(0.8, 200, 200);
    let view = View {
        camera: Camera::look_at(Vec3::new(0.0, -4.0, 0.5), Vec3::ZERO, k),
        active_sh_degree: 3,
        background: Vec3::splat(0.5),
    };
    let (w, v) = weights(&mut rng, 200 * 200);
    for _ in 0..3 {
        let t0 = std::time::Instant::now();
        let (img, state) = render(&splats, &view).unwrap();
        let t1 = std::time::Instant::now();
        let grads = backward(&splats, &view, &state, &w, &v);
        let t2 = std::time::Instant::now();
        let covered = img.alpha.iter().filter(|&&a| a > 0.5).count();
        eprintln!(
            "forward {:.1} ms, backward {:.1} ms ({} threads; {} tile entries, {covered} pixels with A > 0.5, |dL/dμ₀| = {:?})",
            (t1 - t0).as_secs_f64() * 1e3,
            (t2 - t1).as_secs_f64() * 1e3,
            rayon::current_num_threads(),
            state.tile_splats.len(),
            grads.means[0],
        );
    }
}
