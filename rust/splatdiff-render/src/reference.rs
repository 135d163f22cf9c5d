//! CPU reference of the forward and backward passes (rayon, deterministic).
//!
//! This follows the model in the crate documentation step by step, in `f32`
//! like the GPU for everything the forward pass computes; the backward pass
//! carries its arithmetic and sums in `f64`. The image is cut into
//! [`TILE`]×[`TILE`] tiles as the GPU does: a splat is listed in every tile its
//! 3σ square (`centre ± radius`) overlaps (tile `tx` when `16·tx < x + r` and
//! `16·(tx + 1) > x − r`, likewise for `y`), each tile's list is sorted by depth
//! (ties by splat index), and every pixel blends its tile's list front to back.
//!
//! Determinism: work is split over tiles (forward, backward) and splats
//! (projection), each part is computed sequentially, and the per-tile
//! gradient sums are reduced in tile order, so results are bit-identical
//! whatever the number of threads.
//!
//! Choices where the model leaves room (the GPU should do the same):
//! * `radius = ceil(3·sqrt(λ_max))` with the exact `λ_max = m + sqrt(max(0, m² − det))`,
//!   `m = (a + c)/2` (the official rasterizer floors `m² − det` at 0.1);
//!   a splat is culled when `det(Σ') ≤ 0`, `t.z < NEAR`, the radius is 0 or
//!   its square overlaps no tile; culled splats project to `Projected::default()`.
//! * The offset is `d = pixel centre − mean2d`.
//! * Where `sigmoid(o)·exp(power) > ALPHA_MAX`, α is the constant
//!   `ALPHA_MAX` and has no gradient (the exact derivative of the clamp).
//! * The 1.3× field-of-view clamp of `J` is differentiated exactly: no
//!   gradient through a clamped `t.x/t.z`, but the clamped `t.x' = lim·t.z`
//!   still depends on `t.z` (as gsplat; the official 3DGS code treats `t.x'`
//!   as a constant in `∂J/∂t.z`).

use crate::{
    sh_coeffs, Grads, Image, RenderError, Result, Splats, View, ALPHA_MAX, ALPHA_MIN, BLUR, NEAR, SH_C0, TILE, T_MIN,
};
use glam::{DMat3, DVec3, Mat3, Vec3};
use rayon::prelude::*;

const SH_C1: f32 = 0.488_602_511_902_919_9_f64 as f32;
const SH_C2: [f32; 5] = [
    1.092_548_430_592_079_2_f64 as f32,
    -1.092_548_430_592_079_2_f64 as f32,
    0.315_391_565_252_520_05_f64 as f32,
    -1.092_548_430_592_079_2_f64 as f32,
    0.546_274_215_296_039_6_f64 as f32,
];
const SH_C3: [f32; 7] = [
    -0.590_043_589_926_643_5_f64 as f32,
    2.890_611_442_640_554_f64 as f32,
    -0.457_045_799_464_465_8_f64 as f32,
    0.373_176_332_590_115_4_f64 as f32,
    -0.457_045_799_464_465_8_f64 as f32,
    1.445_305_721_320_277_f64 as f32,
    -0.590_043_589_926_643_5_f64 as f32,
];

/// One splat after projection (also what GPU tests compare against).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Projected {
    /// Centre in pixels.
    pub mean2d: [f32; 2],
    /// `a, b, c` of `[[a, b], [b, c]]`, the inverse 2D covariance.
    pub conic: [f32; 3],
    /// `t.z`, the depth along the view axis.
    pub depth: f32,
    /// `ceil(3·sqrt(λ_max))` in pixels; 0 = culled (then every field is 0).
    pub radius: u32,
    /// `sigmoid(opacity logit)`.
    pub opacity: f32,
    /// SH colour + 0.5, clamped at 0.
    pub color: [f32; 3],
}

/// What [`backward`] needs from [`render`], kept public for tests of other
/// implementations.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ForwardState {
    pub width: u32,
    pub height: u32,
    /// Tiles across and down.
    pub tiles_x: u32,
    pub tiles_y: u32,
    /// One per splat.
    pub projected: Vec<Projected>,
    /// Per tile (row-major), the range of [`ForwardState::tile_splats`] it owns.
    pub tile_ranges: Vec<[u32; 2]>,
    /// Splat indices, each tile's run sorted by depth, ties by index.
    pub tile_splats: Vec<u32>,
    /// Per pixel (row-major), the transmittance after blending.
    pub final_t: Vec<f32>,
    /// Per pixel, how many entries of its tile's list were walked up to and
    /// including the last splat blended (3DGS's `n_contrib`); 0 when none.
    pub n_contrib: Vec<u32>,
}

impl ForwardState {
    /// The sorted splat indices of tile `(tx, ty)`.
    pub fn tile(&self, tx: u32, ty: u32) -> &[u32] {
        let [s, e] = self.tile_ranges[(ty * self.tiles_x + tx) as usize];
        &self.tile_splats[s as usize..e as usize]
    }
}

/// Per-render camera quantities.
struct Cam {
    /// World-to-camera rotation/scale (OpenCV frame) and translation.
    w: Mat3,
    w_t: Vec3,
    /// Camera centre in world space.
    pos: Vec3,
    fx: f32,
    fy: f32,
    cx: f32,
    cy: f32,
    /// 1.3 × tan of the half fields of view.
    lim_x: f32,
    lim_y: f32,
    width: u32,
    height: u32,
    tiles_x: u32,
    tiles_y: u32,
}

impl Cam {
    fn new(view: &View) -> Self {
        let v = view.camera.world_to_camera_opencv();
        let k = &view.camera.intrinsics;
        Self {
            w: Mat3::from_mat4(v),
            w_t: v.w_axis.truncate(),
            pos: view.camera.position(),
            fx: k.fx,
            fy: k.fy,
            cx: k.cx,
            cy: k.cy,
            lim_x: 1.3 * (0.5 * k.width as f32 / k.fx),
            lim_y: 1.3 * (0.5 * k.height as f32 / k.fy),
            width: k.width,
            height: k.height,
            tiles_x: k.width.div_ceil(TILE),
            tiles_y: k.height.div_ceil(TILE),
        }
    }
}

/// Everything the projection of one splat computes, kept for the backward pass.
struct Geo {
    /// Normalised quaternion `(w, x, y, z)` and the raw one's length.
    qn: [f32; 4],
    q_len: f32,
    rot: Mat3,
    scale: Vec3,
    sigma: Mat3,
    /// Camera-frame mean.
    t: Vec3,
    clamp_x: bool,
    clamp_y: bool,
    /// `t.x`, `t.y` after the field-of-view clamp.
    tx_c: f32,
    ty_c: f32,
    /// `J W` (third row zero).
    jw: Mat3,
    /// `Σ'` with the blur: `a, b, c` of `[[a, b], [b, c]]`.
    cov2d: [f32; 3],
    conic: [f32; 3],
    mean2d: [f32; 2],
    radius: u32,
    /// `μ − camera centre` normalised, and its length.
    dir: Vec3,
    dir_len: f32,
    /// SH + 0.5 before the clamp.
    color_raw: [f32; 3],
    opacity: f32,
}

fn rows(r: [[f32; 3]; 3]) -> Mat3 {
    Mat3::from_cols_array_2d(&r).transpose()
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// The SH basis (with the official code's signs), `(d + 1)²` values of degree `d`.
fn sh_basis(degree: u32, d: Vec3) -> [f32; 16] {
    let mut b = [0.0; 16];
    b[0] = SH_C0;
    if degree > 0 {
        let (x, y, z) = (d.x, d.y, d.z);
        b[1] = -SH_C1 * y;
        b[2] = SH_C1 * z;
        b[3] = -SH_C1 * x;
        if degree > 1 {
            let (xx, yy, zz) = (x * x, y * y, z * z);
            let (xy, yz, xz) = (x * y, y * z, x * z);
            b[4] = SH_C2[0] * xy;
            b[5] = SH_C2[1] * yz;
            b[6] = SH_C2[2] * (2.0 * zz - xx - yy);
            b[7] = SH_C2[3] * xz;
            b[8] = SH_C2[4] * (xx - yy);
            if degree > 2 {
                b[9] = SH_C3[0] * y * (3.0 * xx - yy);
                b[10] = SH_C3[1] * xy * z;
                b[11] = SH_C3[2] * y * (4.0 * zz - xx - yy);
                b[12] = SH_C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy);
                b[13] = SH_C3[4] * x * (4.0 * zz - xx - yy);
                b[14] = SH_C3[5] * z * (xx - yy);
                b[15] = SH_C3[6] * x * (xx - 3.0 * yy);
            }
        }
    }
    b
}

/// Gradients of [`sh_basis`] with respect to the direction (not normalised).
fn sh_basis_grad(degree: u32, d: DVec3) -> [DVec3; 16] {
    let mut g = [DVec3::ZERO; 16];
    let c1 = SH_C1 as f64;
    let c2 = SH_C2.map(|c| c as f64);
    let c3 = SH_C3.map(|c| c as f64);
    let (x, y, z) = (d.x, d.y, d.z);
    let (xx, yy, zz) = (x * x, y * y, z * z);
    let (xy, yz, xz) = (x * y, y * z, x * z);
    if degree > 0 {
        g[1] = DVec3::new(0.0, -c1, 0.0);
        g[2] = DVec3::new(0.0, 0.0, c1);
        g[3] = DVec3::new(-c1, 0.0, 0.0);
    }
    if degree > 1 {
        g[4] = c2[0] * DVec3::new(y, x, 0.0);
        g[5] = c2[1] * DVec3::new(0.0, z, y);
        g[6] = c2[2] * DVec3::new(-2.0 * x, -2.0 * y, 4.0 * z);
        g[7] = c2[3] * DVec3::new(z, 0.0, x);
        g[8] = c2[4] * DVec3::new(2.0 * x, -2.0 * y, 0.0);
    }
    if degree > 2 {
        g[9] = c3[0] * DVec3::new(6.0 * xy, 3.0 * xx - 3.0 * yy, 0.0);
        g[10] = c3[1] * DVec3::new(yz, xz, xy);
        g[11] = c3[2] * DVec3::new(-2.0 * xy, 4.0 * zz - xx - 3.0 * yy, 8.0 * yz);
        g[12] = c3[3] * DVec3::new(-6.0 * xz, -6.0 * yz, 6.0 * zz - 3.0 * xx - 3.0 * yy);
        g[13] = c3[4] * DVec3::new(4.0 * zz - 3.0 * xx - yy, -2.0 * xy, 8.0 * xz);
        g[14] = c3[5] * DVec3::new(2.0 * xz, -2.0 * yz, xx - yy);
        g[15] = c3[6] * DVec3::new(3.0 * xx - 3.0 * yy, -6.0 * xy, 0.0);
    }
    g
}

/// Tiles `[x0, x1) × [y0, y1)` a square of half-size `r` around `m` overlaps.
fn tile_rect(m: [f32; 2], r: u32, cam: &Cam) -> [u32; 4] {
    let r = r as f32;
    let t = TILE as f32;
    let lo = |v: f32, n: u32| ((v / t).floor().max(0.0) as u32).min(n);
    let hi = |v: f32, n: u32| ((v / t).ceil().max(0.0) as u32).min(n);
    [lo(m[0] - r, cam.tiles_x), lo(m[1] - r, cam.tiles_y), hi(m[0] + r, cam.tiles_x), hi(m[1] + r, cam.tiles_y)]
}

/// Projects splat `i`; `None` when it is culled.
fn geometry(splats: &Splats, i: usize, cam: &Cam, degree: u32) -> Option<Geo> {
    let mean = Vec3::from_array(splats.means[i]);
    let t = cam.w * mean + cam.w_t;
    if t.z.is_nan() || t.z < NEAR {
        return None;
    }

    // Σ = R S Sᵀ Rᵀ.
    let q = splats.quats[i];
    let q_len = q.iter().map(|v| v * v).sum::<f32>().sqrt();
    let qn = q.map(|v| v / q_len);
    let [r, x, y, z] = qn;
    let rot = rows([
        [1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y - r * z), 2.0 * (x * z + r * y)],
        [2.0 * (x * y + r * z), 1.0 - 2.0 * (x * x + z * z), 2.0 * (y * z - r * x)],
        [2.0 * (x * z - r * y), 2.0 * (y * z + r * x), 1.0 - 2.0 * (x * x + y * y)],
    ]);
    let scale = Vec3::from_array(splats.log_scales[i]).exp();
    let m = rot * Mat3::from_diagonal(scale);
    let sigma = m * m.transpose();

    // Σ' = J W Σ Wᵀ Jᵀ + BLUR·I with the clamped J.
    let tz = t.z;
    let (ux, uy) = (t.x / tz, t.y / tz);
    let clamp_x = ux < -cam.lim_x || ux > cam.lim_x;
    let clamp_y = uy < -cam.lim_y || uy > cam.lim_y;
    let tx_c = ux.clamp(-cam.lim_x, cam.lim_x) * tz;
    let ty_c = uy.clamp(-cam.lim_y, cam.lim_y) * tz;
    let j = rows([
        [cam.fx / tz, 0.0, -cam.fx * tx_c / (tz * tz)],
        [0.0, cam.fy / tz, -cam.fy * ty_c / (tz * tz)],
        [0.0, 0.0, 0.0],
    ]);
    let jw = j * cam.w;
    let cov = jw * sigma * jw.transpose();
    let cov2d = [cov.x_axis.x + BLUR, cov.y_axis.x, cov.y_axis.y + BLUR];
    let det = cov2d[0] * cov2d[2] - cov2d[1] * cov2d[1];
    if det.is_nan() || det <= 0.0 {
        return None;
    }
    let det_inv = 1.0 / det;
    let conic = [cov2d[2] * det_inv, -cov2d[1] * det_inv, cov2d[0] * det_inv];
    let mid = 0.5 * (cov2d[0] + cov2d[2]);
    let lambda = mid + (mid * mid - det).max(0.0).sqrt();
    let radius_f = (3.0 * lambda.sqrt()).ceil();
    if !(radius_f >= 1.0 && radius_f.is_finite()) {
        return None;
    }
    let radius = radius_f as u32;
    let mean2d = [cam.fx * t.x / tz + cam.cx, cam.fy * t.y / tz + cam.cy];
    let [x0, y0, x1, y1] = tile_rect(mean2d, radius, cam);
    if x0 >= x1 || y0 >= y1 {
        return None;
    }

    // Colour from SH, in the official evaluation order.
    let v = mean - cam.pos;
    let dir_len = v.length();
    let dir = v / dir_len;
    let k = splats.coeffs();
    let coeffs = &splats.sh[i * k * 3..(i + 1) * k * 3];
    let basis = sh_basis(degree, dir);
    let mut color_raw = [0.0f32; 3];
    for (c, out) in color_raw.iter_mut().enumerate() {
        let mut acc = basis[0] * coeffs[c];
        for (kk, b) in basis.iter().enumerate().take(sh_coeffs(degree)).skip(1) {
            acc += b * coeffs[kk * 3 + c];
        }
        *out = acc + 0.5;
    }

    Some(Geo {
        qn,
        q_len,
        rot,
        scale,
        sigma,
        t,
        clamp_x,
        clamp_y,
        tx_c,
        ty_c,
        jw,
        cov2d,
        conic,
        mean2d,
        radius,
        dir,
        dir_len,
        color_raw,
        opacity: sigmoid(splats.opacity_logits[i]),
    })
}

fn to_projected(g: &Geo) -> Projected {
    Projected {
        mean2d: g.mean2d,
        conic: g.conic,
        depth: g.t.z,
        radius: g.radius,
        opacity: g.opacity,
        color: g.color_raw.map(|c| c.max(0.0)),
    }
}

fn projected_all(splats: &Splats, cam: &Cam, degree: u32) -> Vec<Projected> {
    (0..splats.len())
        .into_par_iter()
        .map(|i| geometry(splats, i, cam, degree).map(|g| to_projected(&g)).unwrap_or_default())
        .collect()
}

/// Projects every splat (no validation: use [`render`] for checked input;
/// an active SH degree above the storage degree is lowered to it here).
/// Culled splats come back as `Projected::default()` (radius 0).
pub fn project(splats: &Splats, view: &View) -> Vec<Projected> {
    let degree = view.active_sh_degree.min(splats.sh_degree);
    projected_all(splats, &Cam::new(view), degree)
}

fn validate(splats: &Splats, view: &View) -> Result<()> {
    if let Some(p) = splats.problem() {
        return Err(RenderError::InvalidSplats(p));
    }
    if let Some(p) = view.camera.intrinsics.problem() {
        return Err(RenderError::InvalidCamera(p));
    }
    if view.active_sh_degree > splats.sh_degree {
        return Err(RenderError::InvalidCamera(format!(
            "active SH degree {} is above the splats' degree {}",
            view.active_sh_degree, splats.sh_degree
        )));
    }
    if !view.camera.cam_to_world.is_finite() || !view.background.is_finite() {
        return Err(RenderError::InvalidCamera("camera pose or background is not finite".into()));
    }
    Ok(())
}

/// Per-tile sorted splat lists, flattened.
fn tile_lists(projected: &[Projected], cam: &Cam) -> (Vec<[u32; 2]>, Vec<u32>) {
    let n_tiles = (cam.tiles_x * cam.tiles_y) as usize;
    let mut lists: Vec<Vec<u32>> = vec![Vec::new(); n_tiles];
    for (i, p) in projected.iter().enumerate() {
        if p.radius == 0 {
            continue;
        }
        let [x0, y0, x1, y1] = tile_rect(p.mean2d, p.radius, cam);
        for ty in y0..y1 {
            for tx in x0..x1 {
                lists[(ty * cam.tiles_x + tx) as usize].push(i as u32);
            }
        }
    }
    lists.par_iter_mut().for_each(|l| {
        l.sort_by(|&a, &b| projected[a as usize].depth.total_cmp(&projected[b as usize].depth).then(a.cmp(&b)))
    });
    let mut ranges = Vec::with_capacity(n_tiles);
    let mut flat = Vec::with_capacity(lists.iter().map(Vec::len).sum());
    for l in lists {
        let s = flat.len() as u32;
        flat.extend(l);
        ranges.push([s, flat.len() as u32]);
    }
    (ranges, flat)
}

/// One splat's alpha at a pixel centre.
struct Hit {
    alpha: f32,
    /// `exp(power)`.
    g: f32,
    dx: f32,
    dy: f32,
    /// `opacity·g` was above `ALPHA_MAX`.
    clamped: bool,
}

#[inline]
fn hit(p: &Projected, px: f32, py: f32) -> Option<Hit> {
    let dx = px - p.mean2d[0];
    let dy = py - p.mean2d[1];
    let [a, b, c] = p.conic;
    let power = -0.5 * (a * dx * dx + c * dy * dy) - b * dx * dy;
    if power > 0.0 {
        return None;
    }
    let g = power.exp();
    let raw = p.opacity * g;
    let alpha = raw.min(ALPHA_MAX);
    if alpha < ALPHA_MIN {
        return None;
    }
    Some(Hit { alpha, g, dx, dy, clamped: raw > ALPHA_MAX })
}

/// The pixels of tile `(tx, ty)` inside the image, row-major.
fn tile_pixels(tile: usize, cam: &Cam) -> impl Iterator<Item = (u32, u32)> {
    let tx = tile as u32 % cam.tiles_x;
    let ty = tile as u32 / cam.tiles_x;
    let (x0, y0) = (tx * TILE, ty * TILE);
    let (x1, y1) = ((x0 + TILE).min(cam.width), (y0 + TILE).min(cam.height));
    (y0..y1).flat_map(move |y| (x0..x1).map(move |x| (x, y)))
}

struct PixelOut {
    color: [f32; 3],
    t: f32,
    depth: f32,
    n: u32,
}

fn blend(list: &[u32], projected: &[Projected], px: f32, py: f32) -> PixelOut {
    let mut t = 1.0f32;
    let mut color = [0.0f32; 3];
    let mut depth = 0.0f32;
    let mut n = 0;
    for (k, &s) in list.iter().enumerate() {
        let p = &projected[s as usize];
        let Some(h) = hit(p, px, py) else { continue };
        let test_t = t * (1.0 - h.alpha);
        if test_t < T_MIN {
            break;
        }
        let w = h.alpha * t;
        for (acc, c) in color.iter_mut().zip(p.color) {
            *acc += c * w;
        }
        depth += p.depth * w;
        t = test_t;
        n = k as u32 + 1;
    }
    PixelOut { color, t, depth, n }
}

/// Renders the splats: the image over the view's background, its alpha and
/// depth, and what [`backward`] needs.
pub fn render(splats: &Splats, view: &View) -> Result<(Image, ForwardState)> {
    validate(splats, view)?;
    let cam = Cam::new(view);
    let projected = projected_all(splats, &cam, view.active_sh_degree);
    let (tile_ranges, tile_splats) = tile_lists(&projected, &cam);

    let n_pix = (cam.width * cam.height) as usize;
    let mut image = Image {
        width: cam.width,
        height: cam.height,
        color: vec![[0.0; 3]; n_pix],
        alpha: vec![0.0; n_pix],
        depth: vec![0.0; n_pix],
    };
    let mut final_t = vec![1.0; n_pix];
    let mut n_contrib = vec![0; n_pix];
    let bg = view.background.to_array();

    let tiles: Vec<Vec<PixelOut>> = (0..tile_ranges.len())
        .into_par_iter()
        .map(|tile| {
            let [s, e] = tile_ranges[tile];
            let list = &tile_splats[s as usize..e as usize];
            tile_pixels(tile, &cam).map(|(x, y)| blend(list, &projected, x as f32 + 0.5, y as f32 + 0.5)).collect()
        })
        .collect();
    for (tile, outs) in tiles.into_iter().enumerate() {
        for ((x, y), o) in tile_pixels(tile, &cam).zip(outs) {
            let p = (y * cam.width + x) as usize;
            let a = 1.0 - o.t;
            image.color[p] = [0, 1, 2].map(|c| o.color[c] + o.t * bg[c]);
            image.alpha[p] = a;
            image.depth[p] = if a > 0.0 { o.depth / a } else { 0.0 };
            final_t[p] = o.t;
            n_contrib[p] = o.n;
        }
    }

    let state = ForwardState {
        width: cam.width,
        height: cam.height,
        tiles_x: cam.tiles_x,
        tiles_y: cam.tiles_y,
        projected,
        tile_ranges,
        tile_splats,
        final_t,
        n_contrib,
    };
    Ok((image, state))
}

/// Gradients with respect to one splat's projected quantities.
#[derive(Clone, Copy, Default)]
struct Local {
    mean2d: [f64; 2],
    conic: [f64; 3],
    color: [f64; 3],
    opacity: f64,
}

impl Local {
    fn add(&mut self, o: &Local) {
        for k in 0..2 {
            self.mean2d[k] += o.mean2d[k];
        }
        for k in 0..3 {
            self.conic[k] += o.conic[k];
            self.color[k] += o.color[k];
        }
        self.opacity += o.opacity;
    }
}

/// The gradients of every splat: `d_color` is `∂L/∂(image over background)`,
/// `d_alpha` is `∂L/∂A`, one per pixel; `state` comes from [`render`] of the
/// same splats and view. Depth has no gradient.
pub fn backward(splats: &Splats, view: &View, state: &ForwardState, d_color: &[[f32; 3]], d_alpha: &[f32]) -> Grads {
    let cam = Cam::new(view);
    let n_pix = (cam.width * cam.height) as usize;
    assert_eq!((state.width, state.height), (cam.width, cam.height), "state from another view");
    assert_eq!(state.projected.len(), splats.len(), "state from other splats");
    assert_eq!(d_color.len(), n_pix, "d_color needs one value per pixel");
    assert_eq!(d_alpha.len(), n_pix, "d_alpha needs one value per pixel");
    let projected = &state.projected;
    let bg = view.background.as_dvec3().to_array();

    // Per tile, the gradients of the projected quantities of its listed splats.
    let per_tile: Vec<Vec<Local>> = (0..state.tile_ranges.len())
        .into_par_iter()
        .map(|tile| {
            let [s, e] = state.tile_ranges[tile];
            let list = &state.tile_splats[s as usize..e as usize];
            let mut local = vec![Local::default(); list.len()];
            let mut walk: Vec<(usize, Hit, f32)> = Vec::new();
            for (x, y) in tile_pixels(tile, &cam) {
                let p = (y * cam.width + x) as usize;
                let n = state.n_contrib[p] as usize;
                if n == 0 {
                    continue;
                }
                let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
                // Front to back again, as the forward pass did.
                walk.clear();
                let mut t = 1.0f32;
                for (k, &si) in list[..n].iter().enumerate() {
                    let Some(h) = hit(&projected[si as usize], px, py) else { continue };
                    let t_before = t;
                    t *= 1.0 - h.alpha;
                    walk.push((k, h, t_before));
                }
                let t_final = state.final_t[p] as f64;
                let dc = d_color[p].map(f64::from);
                let bg_term = d_alpha[p] as f64 - (0..3).map(|c| bg[c] * dc[c]).sum::<f64>();
                let mut accum = [0.0f64; 3];
                let mut last_alpha = 0.0f64;
                let mut last_color = [0.0f64; 3];
                for (k, h, t_before) in walk.iter().rev() {
                    let pr = &projected[list[*k] as usize];
                    let l = &mut local[*k];
                    let alpha = h.alpha as f64;
                    let t = *t_before as f64;
                    let color = pr.color.map(f64::from);
                    let mut d_a = 0.0;
                    for c in 0..3 {
                        l.color[c] += alpha * t * dc[c];
                        accum[c] = last_alpha * last_color[c] + (1.0 - last_alpha) * accum[c];
                        d_a += (color[c] - accum[c]) * t * dc[c];
                    }
                    d_a += t_final / (1.0 - alpha) * bg_term;
                    last_alpha = alpha;
                    last_color = color;
                    if h.clamped {
                        continue;
                    }
                    let g = h.g as f64;
                    l.opacity += g * d_a;
                    let d_power = d_a * pr.opacity as f64 * g;
                    let (dx, dy) = (h.dx as f64, h.dy as f64);
                    let [a, b, c] = pr.conic.map(f64::from);
                    l.conic[0] += -0.5 * dx * dx * d_power;
                    l.conic[1] += -dx * dy * d_power;
                    l.conic[2] += -0.5 * dy * dy * d_power;
                    // d = pixel − mean.
                    l.mean2d[0] -= (-a * dx - b * dy) * d_power;
                    l.mean2d[1] -= (-b * dx - c * dy) * d_power;
                }
            }
            local
        })
        .collect();

    // Reduce in tile order.
    let mut sums = vec![Local::default(); splats.len()];
    for (tile, locals) in per_tile.iter().enumerate() {
        let [s, _] = state.tile_ranges[tile];
        for (k, l) in locals.iter().enumerate() {
            sums[state.tile_splats[s as usize + k] as usize].add(l);
        }
    }

    let k = splats.coeffs();
    let degree = view.active_sh_degree.min(splats.sh_degree);
    let per_splat: Vec<SplatGrad> = (0..splats.len())
        .into_par_iter()
        .map(|i| {
            if projected[i].radius == 0 {
                return SplatGrad { sh: vec![0.0; k * 3], ..Default::default() };
            }
            let geo = geometry(splats, i, &cam, degree).expect("a listed splat projects");
            splat_backward(splats, i, &cam, degree, &geo, &sums[i])
        })
        .collect();

    let mut grads = Grads {
        means: Vec::with_capacity(splats.len()),
        log_scales: Vec::with_capacity(splats.len()),
        quats: Vec::with_capacity(splats.len()),
        opacity_logits: Vec::with_capacity(splats.len()),
        sh: Vec::with_capacity(splats.sh.len()),
    };
    for g in per_splat {
        grads.means.push(g.mean);
        grads.log_scales.push(g.log_scale);
        grads.quats.push(g.quat);
        grads.opacity_logits.push(g.opacity_logit);
        grads.sh.extend(g.sh);
    }
    grads
}

#[derive(Default)]
struct SplatGrad {
    mean: [f32; 3],
    log_scale: [f32; 3],
    quat: [f32; 4],
    opacity_logit: f32,
    sh: Vec<f32>,
}

/// From the gradients of a splat's projected quantities to its parameters.
fn splat_backward(splats: &Splats, i: usize, cam: &Cam, degree: u32, geo: &Geo, l: &Local) -> SplatGrad {
    let k = splats.coeffs();
    let coeffs = &splats.sh[i * k * 3..(i + 1) * k * 3];

    // Opacity through the sigmoid.
    let op = geo.opacity as f64;
    let opacity_logit = (l.opacity * op * (1.0 - op)) as f32;

    // Colour: masked where clamped, then SH coefficients and view direction.
    let d_col: [f64; 3] = [0, 1, 2].map(|c| if geo.color_raw[c] < 0.0 { 0.0 } else { l.color[c] });
    let basis = sh_basis(degree, geo.dir);
    let n_active = sh_coeffs(degree);
    let mut sh = vec![0.0f32; k * 3];
    for kk in 0..n_active {
        for c in 0..3 {
            sh[kk * 3 + c] = (basis[kk] as f64 * d_col[c]) as f32;
        }
    }
    let dir = geo.dir.as_dvec3();
    let bgrad = sh_basis_grad(degree, dir);
    let mut d_dir = DVec3::ZERO;
    for (kk, bg) in bgrad.iter().enumerate().take(n_active).skip(1) {
        let w: f64 = (0..3).map(|c| d_col[c] * coeffs[kk * 3 + c] as f64).sum();
        d_dir += w * *bg;
    }
    let d_mean_sh = (d_dir - dir * dir.dot(d_dir)) / geo.dir_len as f64;

    // Conic → Σ' (a, b, c with the blur, which has no gradient).
    let [ca, cb, cc] = geo.cov2d.map(f64::from);
    let det = ca * cc - cb * cb;
    let det2 = det * det;
    let [ga, gb, gc] = l.conic;
    let d_a = (-cc * cc * ga + cb * cc * gb - cb * cb * gc) / det2;
    let d_b = (2.0 * cb * cc * ga - (ca * cc + cb * cb) * gb + 2.0 * ca * cb * gc) / det2;
    let d_c = (-cb * cb * ga + ca * cb * gb - ca * ca * gc) / det2;
    let g2 = DMat3::from_cols(DVec3::new(d_a, 0.5 * d_b, 0.0), DVec3::new(0.5 * d_b, d_c, 0.0), DVec3::ZERO);

    // Σ' = T Σ Tᵀ with T = J W.
    let tm = geo.jw.as_dmat3();
    let sigma = geo.sigma.as_dmat3();
    let w = cam.w.as_dmat3();
    let d_sigma = tm.transpose() * g2 * tm;
    let d_t_mat = 2.0 * g2 * tm * sigma;
    let d_j = d_t_mat * w.transpose();
    let dj = |r: usize, c: usize| d_j.col(c)[r];

    // Camera-frame mean: from the 2D mean and from J.
    let t = geo.t.as_dvec3();
    let (fx, fy) = (cam.fx as f64, cam.fy as f64);
    let (tz, tz2, tz3) = (t.z, t.z * t.z, t.z * t.z * t.z);
    let mut d_t = DVec3::new(
        l.mean2d[0] * fx / tz,
        l.mean2d[1] * fy / tz,
        -(l.mean2d[0] * fx * t.x + l.mean2d[1] * fy * t.y) / tz2,
    );
    d_t.z += -fx / tz2 * dj(0, 0) - fy / tz2 * dj(1, 1);
    if geo.clamp_x {
        d_t.z += fx * geo.tx_c as f64 / tz3 * dj(0, 2);
    } else {
        d_t.x += -fx / tz2 * dj(0, 2);
        d_t.z += 2.0 * fx * t.x / tz3 * dj(0, 2);
    }
    if geo.clamp_y {
        d_t.z += fy * geo.ty_c as f64 / tz3 * dj(1, 2);
    } else {
        d_t.y += -fy / tz2 * dj(1, 2);
        d_t.z += 2.0 * fy * t.y / tz3 * dj(1, 2);
    }
    let mean = w.transpose() * d_t + d_mean_sh;

    // Σ = M Mᵀ, M = R S.
    let rot = geo.rot.as_dmat3();
    let s = geo.scale.as_dvec3();
    let m = rot * DMat3::from_diagonal(s);
    let d_m = 2.0 * d_sigma * m;
    let mut log_scale = [0.0f32; 3];
    let mut d_r = [[0.0f64; 3]; 3];
    for (jj, ls) in log_scale.iter_mut().enumerate() {
        let mut ds = 0.0;
        for (ii, row) in d_r.iter_mut().enumerate() {
            let g = d_m.col(jj)[ii];
            row[jj] = g * s[jj];
            ds += g * rot.col(jj)[ii];
        }
        *ls = (ds * s[jj]) as f32;
    }

    // R(q̂) → q̂ → q.
    let [r, x, y, z] = geo.qn.map(f64::from);
    let g = d_r;
    let d_qn = [
        2.0 * (-z * g[0][1] + y * g[0][2] + z * g[1][0] - x * g[1][2] - y * g[2][0] + x * g[2][1]),
        2.0 * (y * g[0][1] + z * g[0][2] + y * g[1][0] - 2.0 * x * g[1][1] - r * g[1][2] + z * g[2][0] + r * g[2][1]
            - 2.0 * x * g[2][2]),
        2.0 * (-2.0 * y * g[0][0] + x * g[0][1] + r * g[0][2] + x * g[1][0] + z * g[1][2] - r * g[2][0] + z * g[2][1]
            - 2.0 * y * g[2][2]),
        2.0 * (-2.0 * z * g[0][0] - r * g[0][1] + x * g[0][2] + r * g[1][0] - 2.0 * z * g[1][1]
            + y * g[1][2]
            + x * g[2][0]
            + y * g[2][1]),
    ];
    let qn = [r, x, y, z];
    let dot: f64 = (0..4).map(|a| qn[a] * d_qn[a]).sum();
    let q_len = geo.q_len as f64;
    let quat = [0, 1, 2, 3].map(|a| ((d_qn[a] - qn[a] * dot) / q_len) as f32);

    SplatGrad { mean: mean.as_vec3().to_array(), log_scale, quat, opacity_logit, sh }
}
