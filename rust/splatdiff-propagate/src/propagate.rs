//! Carrying keyframes' look to every frame of the turntable.
//!
//! [`Method::Geometry`] (the default) uses what the capture knows. For each
//! frame, every object pixel is reprojected into every keyframe (depth,
//! cameras, occlusion test); each keyframe that sees it offers its colour
//! there, weighted by how frontally it sees the surface, how alike its view
//! direction is (view-dependent shading) and how near it is in the
//! sequence. The offers are combined in the gradient domain: colours are a
//! sharpened weighted blend, gradients the same blend of each keyframe's own
//! gradients, and a screened Poisson solve joins them, so where the best
//! keyframe changes there is neither a seam nor a ghost of the other one.
//! Pixels that no keyframe sees are synthesised from the nearest keyframes'
//! patches by guided PatchMatch (guides: the render's colour and edges, the
//! world positions, the previous output warped to this frame, and the mask,
//! which is also a hard label so background never bleeds onto the object);
//! covered pixels around them anchor the field, and the same Poisson solve
//! blends both.
//!
//! [`Method::Patch`] is the EbSynth workflow without geometry, kept as the
//! baseline the benchmark compares against: each frame is synthesised twice,
//! from the keyframe before and the one after, with colour, edge and mask
//! guides, and the two are crossfaded by sequence distance.
//!
//! Frames are processed in order (the temporal guide needs the previous
//! output); the work inside a frame is parallel and deterministic. With the
//! environment variable `SPLATDIFF_TIMING` set, each frame prints how long
//! its reprojection, blend, synthesis and Poisson solve took.

use std::sync::atomic::{AtomicBool, Ordering};

use glam::Vec3;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{PropagateError, Result};
use crate::geometry::{FrameGeometry, Reprojection};
use crate::image::Image;
use crate::patchmatch::{synthesize, Constraints, Guide, SynthesisConfig};
use crate::poisson::PoissonProblem;

/// How frames get their look.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Reprojection through the capture's geometry, patches where no keyframe sees.
    Geometry,
    /// EbSynth's workflow: patch synthesis from the keyframes before and
    /// after, crossfaded; no geometry. The benchmark's baseline.
    Patch,
}

/// Weights of the synthesis guides.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GuideWeights {
    pub colour: f32,
    pub edges: f32,
    pub position: f32,
    pub temporal: f32,
    pub mask: f32,
}

impl Default for GuideWeights {
    fn default() -> Self {
        Self { colour: 1.0, edges: 0.5, position: 2.0, temporal: 0.5, mask: 4.0 }
    }
}

/// Settings of the propagation stage; serialisable for the run's manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PropagateConfig {
    pub method: Method,
    /// Patch synthesis settings (uncovered pixels, the patch method, exemplar).
    pub synthesis: SynthesisConfig,
    pub guides: GuideWeights,
    /// Exponent applied to keyframe weights before normalising: higher
    /// prefers the single best keyframe more sharply (fewer ghosts), lower
    /// averages more (smoother).
    pub sharpness: f32,
    /// Exponent on the view agreement (cosine between the view directions).
    pub view_exponent: f32,
    /// Blend in the gradient domain (screened Poisson); off = plain blend.
    pub gradient_domain: bool,
    /// Data weight of the Poisson solve for pixels keyframes see.
    pub data_weight: f32,
    /// Conjugate-gradient iterations of the Poisson solve.
    pub poisson_iterations: usize,
    /// Half-size in pixels of the search window around a reprojected anchor.
    pub search_radius: f32,
    /// The frames form a loop (a turntable): sequence distance wraps around.
    pub cyclic: bool,
}

impl Default for PropagateConfig {
    fn default() -> Self {
        Self {
            method: Method::Geometry,
            synthesis: SynthesisConfig::default(),
            guides: GuideWeights::default(),
            sharpness: 4.0,
            view_exponent: 4.0,
            gradient_domain: true,
            data_weight: 0.02,
            poisson_iterations: 80,
            search_radius: 6.0,
            cyclic: true,
        }
    }
}

/// One frame of the sequence: its geometry and its render (the original
/// look, RGB or RGBA, 0..1).
#[derive(Clone, Debug)]
pub struct FrameInput {
    pub geometry: FrameGeometry,
    pub render: Image,
}

/// A restyled keyframe: its index in the sequence and its image.
#[derive(Clone, Debug)]
pub struct Keyframe {
    pub index: usize,
    pub image: Image,
}

/// One propagated frame.
#[derive(Clone, Debug)]
pub struct PropagatedFrame {
    /// RGBA, alpha = the frame's object mask.
    pub image: Image,
    /// Per pixel uncertainty, 0 = certain: the spread of the keyframes'
    /// colours where keyframes see the pixel, the patch error (scaled) where
    /// it was synthesised; 0 outside the object.
    pub error: Vec<f32>,
    /// Fraction of the object's pixels some keyframe sees.
    pub coverage: f32,
}

/// Progress: frames finished out of all.
pub type Progress<'a> = &'a (dyn Fn(usize, usize) + Sync);

/// Propagates `keys` to every frame. Fails on keyframes whose size differs
/// from the frames or whose index is out of range; frames without depth
/// fall back to patch synthesis (and `warnings` says so).
pub fn propagate(
    frames: &[FrameInput],
    keys: &[Keyframe],
    config: &PropagateConfig,
    progress: Progress<'_>,
    cancel: &AtomicBool,
) -> Result<(Vec<PropagatedFrame>, Vec<String>)> {
    validate(frames, keys)?;
    let mut warnings = Vec::new();
    let no_depth = frames.iter().filter(|f| f.geometry.depth.is_none()).count();
    let method = if config.method == Method::Geometry && no_depth > 0 {
        warnings.push(format!(
            "{no_depth} of {} frames have no depth: falling back to patch synthesis without geometry",
            frames.len()
        ));
        Method::Patch
    } else {
        config.method
    };
    let mut outputs: Vec<PropagatedFrame> = Vec::with_capacity(frames.len());
    for t in 0..frames.len() {
        if cancel.load(Ordering::Relaxed) {
            return Err(PropagateError::Cancelled);
        }
        let frame = &frames[t];
        let out = if let Some(k) = keys.iter().find(|k| k.index == t) {
            keyframe_output(frame, &k.image)
        } else if frame.geometry.mask.iter().all(|&m| m <= 0.5) {
            // Nothing of the object in view: an empty, transparent frame.
            empty_output(frame)
        } else {
            match method {
                Method::Geometry => {
                    let prev = t.checked_sub(1).map(|p| (&frames[p], &outputs[p]));
                    geometry_frame(t, frames, keys, prev, config)?
                }
                Method::Patch => patch_frame(t, frames, keys, config)?,
            }
        };
        outputs.push(out);
        progress(t + 1, frames.len());
    }
    Ok((outputs, warnings))
}

fn validate(frames: &[FrameInput], keys: &[Keyframe]) -> Result<()> {
    let first = frames.first().ok_or_else(|| PropagateError::Invalid("no frames to propagate to".into()))?;
    let (w, h) = (first.geometry.width, first.geometry.height);
    if keys.is_empty() {
        return Err(PropagateError::Invalid("no keyframes given".into()));
    }
    for (i, f) in frames.iter().enumerate() {
        let g = &f.geometry;
        if (g.width, g.height) != (w, h) || (f.render.width, f.render.height) != (w, h) {
            return Err(PropagateError::Invalid(format!(
                "frame {i} is {}x{}, frame 0 is {w}x{h}; all frames must share one size",
                f.render.width, f.render.height
            )));
        }
        if g.mask.len() != w * h || g.depth.as_ref().is_some_and(|d| d.len() != w * h) {
            return Err(PropagateError::Invalid(format!("frame {i}: mask or depth has the wrong size")));
        }
    }
    for k in keys {
        if k.index >= frames.len() {
            return Err(PropagateError::Invalid(format!(
                "keyframe index {} is out of range: the sequence has {} frames (0 to {})",
                k.index,
                frames.len(),
                frames.len() - 1
            )));
        }
        if (k.image.width, k.image.height) != (w, h) {
            return Err(PropagateError::Invalid(format!(
                "keyframe {} is {}x{}, the frames are {w}x{h}",
                k.index, k.image.width, k.image.height
            )));
        }
        if keys.iter().filter(|o| o.index == k.index).count() > 1 {
            return Err(PropagateError::Invalid(format!("keyframe {} is given twice", k.index)));
        }
    }
    Ok(())
}

fn rgba_with_mask(rgb_of: impl Fn(usize) -> [f32; 3], mask: &[f32], w: usize, h: usize) -> Image {
    let mut out = Image::new(w, h, 4);
    for i in 0..w * h {
        let a = mask[i].clamp(0.0, 1.0);
        if a > 0.0 {
            let c = rgb_of(i);
            out.data[i * 4..i * 4 + 4].copy_from_slice(&[c[0], c[1], c[2], a]);
        }
    }
    out
}

fn keyframe_output(frame: &FrameInput, key: &Image) -> PropagatedFrame {
    let g = &frame.geometry;
    PropagatedFrame {
        image: rgba_with_mask(|i| key.rgb(i), &g.mask, g.width, g.height),
        error: vec![0.0; g.width * g.height],
        coverage: 1.0,
    }
}

fn empty_output(frame: &FrameInput) -> PropagatedFrame {
    let g = &frame.geometry;
    PropagatedFrame { image: Image::new(g.width, g.height, 4), error: vec![0.0; g.width * g.height], coverage: 1.0 }
}

/// Evenly spaced keyframe indices: `k` of `n` frames, the first at 0 (the
/// default choice of keyframes).
pub fn evenly_spaced_keys(n: usize, k: usize) -> Vec<usize> {
    let k = k.clamp(1, n.max(1));
    let mut v: Vec<usize> = (0..k).map(|i| i * n / k).collect();
    v.dedup();
    v
}

/// Distance between frames `a` and `b` in the sequence.
fn sequence_distance(a: usize, b: usize, n: usize, cyclic: bool) -> usize {
    let d = a.abs_diff(b);
    if cyclic {
        d.min(n - d)
    } else {
        d
    }
}

/// Colour of `img` at a continuous position, averaging only object pixels
/// of the 2x2 footprint (so silhouettes do not pick up background).
fn sample_object(img: &Image, mask: &[f32], x: f32, y: f32) -> Option<[f32; 3]> {
    let (w, h) = (img.width, img.height);
    let fx = (x - 0.5).clamp(0.0, (w - 1) as f32);
    let fy = (y - 0.5).clamp(0.0, (h - 1) as f32);
    let (x0, y0) = (fx as usize, fy as usize);
    let (tx, ty) = (fx - x0 as f32, fy - y0 as f32);
    let mut acc = [0.0f32; 3];
    let mut wsum = 0.0;
    for (dx, dy, wt) in
        [(0, 0, (1.0 - tx) * (1.0 - ty)), (1, 0, tx * (1.0 - ty)), (0, 1, (1.0 - tx) * ty), (1, 1, tx * ty)]
    {
        let (px, py) = ((x0 + dx).min(w - 1), (y0 + dy).min(h - 1));
        let i = py * w + px;
        if mask[i] > 0.5 && wt > 0.0 {
            let c = img.rgb(i);
            for k in 0..3 {
                acc[k] += wt * c[k];
            }
            wsum += wt;
        }
    }
    (wsum > 1e-6).then(|| [acc[0] / wsum, acc[1] / wsum, acc[2] / wsum])
}

/// Per pixel offers of the keyframes: (key slot, colour, weight).
struct Offers {
    /// Per pixel, per key slot: warped colour and weight (0 = unseen).
    colour: Vec<[f32; 3]>,
    weight: Vec<f32>,
    keys: usize,
}

fn gather_offers(
    t: usize,
    frames: &[FrameInput],
    keys: &[Keyframe],
    config: &PropagateConfig,
) -> (Offers, Vec<Vec<Option<Reprojection>>>) {
    let g = &frames[t].geometry;
    let n = g.width * g.height;
    let reprojections: Vec<Vec<Option<Reprojection>>> =
        keys.iter().map(|k| g.reproject_all(&frames[k.index].geometry)).collect();
    let mut colour = vec![[0.0f32; 3]; n * keys.len()];
    let mut weight = vec![0.0f32; n * keys.len()];
    colour.par_chunks_mut(keys.len()).zip(weight.par_chunks_mut(keys.len())).enumerate().for_each(|(i, (c, w))| {
        for (s, k) in keys.iter().enumerate() {
            let Some(r) = reprojections[s][i] else { continue };
            let key_mask = &frames[k.index].geometry.mask;
            let Some(col) = sample_object(&k.image, key_mask, r.position.x, r.position.y) else { continue };
            let d = sequence_distance(t, k.index, frames.len(), config.cyclic) as f32;
            let wt = (0.05 + r.facing) * (1e-3 + r.view_agreement).powf(config.view_exponent) / (1.0 + 0.05 * d);
            c[s] = col;
            w[s] = wt.powf(config.sharpness);
        }
    });
    (Offers { colour, weight, keys: keys.len() }, reprojections)
}

/// Weighted blend, the keys' spread (error) and coverage per pixel.
fn blend_offers(offers: &Offers, n: usize) -> (Vec<[f32; 3]>, Vec<f32>, Vec<bool>) {
    let k = offers.keys;
    let mut blend = vec![[0.0f32; 3]; n];
    let mut spread = vec![0.0f32; n];
    let mut covered = vec![false; n];
    blend.par_iter_mut().zip(spread.par_iter_mut()).zip(covered.par_iter_mut()).enumerate().for_each(
        |(i, ((b, s), cov))| {
            let ws = &offers.weight[i * k..(i + 1) * k];
            let cs = &offers.colour[i * k..(i + 1) * k];
            let total: f32 = ws.iter().sum();
            if total <= 0.0 {
                return;
            }
            *cov = true;
            let mut mean = [0.0f32; 3];
            for (w, c) in ws.iter().zip(cs) {
                for ch in 0..3 {
                    mean[ch] += w / total * c[ch];
                }
            }
            let mut var = 0.0;
            for (w, c) in ws.iter().zip(cs) {
                var += w / total * (0..3).map(|ch| (c[ch] - mean[ch]).powi(2)).sum::<f32>() / 3.0;
            }
            *b = mean;
            *s = var.sqrt();
        },
    );
    (blend, spread, covered)
}

/// Target gradients: for each edge, the weighted blend of each keyframe's
/// own colour difference across it (keys that see both ends), NaN if none.
fn blended_gradients(offers: &Offers, w: usize, h: usize) -> (Vec<f32>, Vec<f32>) {
    let k = offers.keys;
    let n = w * h;
    let edge = |i: usize, j: usize, out: &mut [f32]| {
        let mut acc = [0.0f32; 3];
        let mut wsum = 0.0;
        for s in 0..k {
            let (wi, wj) = (offers.weight[i * k + s], offers.weight[j * k + s]);
            if wi > 0.0 && wj > 0.0 {
                let wt = 0.5 * (wi + wj);
                let (ci, cj) = (offers.colour[i * k + s], offers.colour[j * k + s]);
                for ch in 0..3 {
                    acc[ch] += wt * (cj[ch] - ci[ch]);
                }
                wsum += wt;
            }
        }
        for ch in 0..3 {
            out[ch] = if wsum > 0.0 { acc[ch] / wsum } else { f32::NAN };
        }
    };
    let mut gx = vec![f32::NAN; n * 3];
    let mut gy = vec![f32::NAN; n * 3];
    gx.par_chunks_mut(3).zip(gy.par_chunks_mut(3)).enumerate().for_each(|(i, (ox, oy))| {
        let (x, y) = (i % w, i / w);
        if x + 1 < w {
            edge(i, i + 1, ox);
        }
        if y + 1 < h {
            edge(i, i + w, oy);
        }
    });
    (gx, gy)
}

/// World positions of a frame's pixels, normalised to the object's bounds
/// (0 where there is no object): the positional guide.
fn position_guide(g: &FrameGeometry, lo: Vec3, size: f32) -> Image {
    let mut img = Image::new(g.width, g.height, 3);
    for y in 0..g.height {
        for x in 0..g.width {
            if let Some(p) = g.world_point(x, y) {
                let q = (p - lo) / size;
                img.pixel_mut(x, y).copy_from_slice(&[q.x, q.y, q.z]);
            }
        }
    }
    img
}

fn mask_image(g: &FrameGeometry) -> Image {
    Image { width: g.width, height: g.height, channels: 1, data: g.mask.clone() }
}

fn labels(g: &FrameGeometry) -> Vec<u8> {
    g.mask.iter().map(|&m| (m > 0.5) as u8).collect()
}

/// Object bounds over all frames' depth, for normalising positions.
fn object_bounds(frames: &[&FrameInput]) -> (Vec3, f32) {
    let mut lo = Vec3::splat(f32::INFINITY);
    let mut hi = Vec3::splat(f32::NEG_INFINITY);
    for f in frames {
        let g = &f.geometry;
        for y in (0..g.height).step_by(4) {
            for x in (0..g.width).step_by(4) {
                if let Some(p) = g.world_point(x, y) {
                    lo = lo.min(p);
                    hi = hi.max(p);
                }
            }
        }
    }
    if !lo.x.is_finite() {
        return (Vec3::ZERO, 1.0);
    }
    (lo, (hi - lo).max_element().max(1e-6))
}

/// Side-by-side atlas of images of equal size.
fn atlas(images: &[&Image]) -> Image {
    let (w, h, c) = (images[0].width, images[0].height, images[0].channels);
    let mut out = Image::new(w * images.len(), h, c);
    for (s, img) in images.iter().enumerate() {
        for y in 0..h {
            let dst = (y * out.width + s * w) * c;
            out.data[dst..dst + w * c].copy_from_slice(&img.data[y * w * c..(y + 1) * w * c]);
        }
    }
    out
}

fn geometry_frame(
    t: usize,
    frames: &[FrameInput],
    keys: &[Keyframe],
    prev: Option<(&FrameInput, &PropagatedFrame)>,
    config: &PropagateConfig,
) -> Result<PropagatedFrame> {
    let frame = &frames[t];
    let g = &frame.geometry;
    let (w, h) = (g.width, g.height);
    let n = w * h;
    let timer = std::time::Instant::now();
    let (offers, reprojections) = gather_offers(t, frames, keys, config);
    let t_offers = timer.elapsed().as_secs_f32();
    let (blend, spread, covered) = blend_offers(&offers, n);
    let object: Vec<bool> = g.mask.iter().map(|&m| m > 0.5).collect();
    let uncovered: Vec<bool> = (0..n).map(|i| object[i] && !covered[i]).collect();
    let n_object = object.iter().filter(|&&o| o).count().max(1);
    let coverage = 1.0 - uncovered.iter().filter(|&&u| u).count() as f32 / n_object as f32;

    let mut data: Vec<f32> = blend.iter().flatten().copied().collect();
    let mut error = spread;
    let mut data_weight: Vec<f32> = (0..n).map(|i| if covered[i] { config.data_weight } else { 0.0 }).collect();
    let (mut gx, mut gy) = blended_gradients(&offers, w, h);
    // Between covered pixels that no single keyframe sees both of (one
    // keyframe's region meeting another's), the gradient is unknown: zero
    // on a continuous surface, so the two regions meet without a seam; the
    // colours' own jump across a depth discontinuity (an occluding edge).
    let depth = g.depth.as_deref().unwrap_or(&[]);
    let continuous =
        |i: usize, j: usize| depth.len() == n && (depth[i] - depth[j]).abs() <= 0.01 * depth[i].max(depth[j]);
    for i in 0..n {
        let (x, y) = (i % w, i / w);
        for (ok, j, grads) in [(x + 1 < w, i + 1, &mut gx), (y + 1 < h, i + w, &mut gy)] {
            if ok && covered[i] && covered[j] && grads[i * 3].is_nan() && continuous(i, j) {
                grads[i * 3..i * 3 + 3].fill(0.0);
            }
        }
    }

    let t_blend = timer.elapsed().as_secs_f32();
    // Unseen pixels within a few pixels of seen ones (grazing silhouettes,
    // specks) are filled smoothly by the Poisson solve (no data term, zero
    // gradients); larger unseen regions are synthesised from patches, on
    // the rectangle around them only.
    let large = large_holes(&uncovered, &covered, w, h, 3);
    let n_unc = large.iter().filter(|&&u| u).count();
    for i in 0..n {
        if uncovered[i] {
            error[i] = 0.5;
        }
    }
    if let Some(region) = bounding_box(&large, w, h, 24) {
        let synth = synthesize_uncovered(t, frames, keys, prev, &reprojections, &blend, &covered, region, config)?;
        let (x0, y0, rw, rh) = region;
        for ry in 0..rh {
            for rx in 0..rw {
                let (i, r) = ((y0 + ry) * w + x0 + rx, ry * rw + rx);
                if uncovered[i] {
                    data[i * 3..i * 3 + 3].copy_from_slice(&synth.image.data[r * 3..r * 3 + 3]);
                    error[i] = (synth.error[r] * 10.0).sqrt().min(1.0);
                    data_weight[i] = config.data_weight * 0.2;
                }
            }
        }
        let synth_at = |i: usize, ch: usize| -> Option<f32> {
            let (x, y) = (i % w, i / w);
            (x >= x0 && x < x0 + rw && y >= y0 && y < y0 + rh)
                .then(|| synth.image.data[((y - y0) * rw + x - x0) * 3 + ch])
        };
        // Inside the synthesised region the gradients are the synthesised
        // image's; across its border they are zero, so the synthesised part
        // takes its level from the keyframes' part around it without a seam.
        for i in 0..n {
            let (x, y) = (i % w, i / w);
            for (ok, j, grads) in [(x + 1 < w, i + 1, &mut gx), (y + 1 < h, i + w, &mut gy)] {
                if ok && (uncovered[i] || uncovered[j]) {
                    for ch in 0..3 {
                        grads[i * 3 + ch] = match (uncovered[i] && uncovered[j], synth_at(i, ch), synth_at(j, ch)) {
                            (true, Some(a), Some(b)) => b - a,
                            _ => 0.0,
                        };
                    }
                }
            }
        }
    }

    // Small holes: zero gradients into and inside them (a membrane fill).
    for i in 0..n {
        let (x, y) = (i % w, i / w);
        for (ok, j, grads) in [(x + 1 < w, i + 1, &mut gx), (y + 1 < h, i + w, &mut gy)] {
            if ok && (uncovered[i] || uncovered[j]) && grads[i * 3].is_nan() {
                grads[i * 3..i * 3 + 3].fill(0.0);
            }
        }
    }
    let t_synth = timer.elapsed().as_secs_f32();
    let solved = if config.gradient_domain {
        PoissonProblem {
            width: w,
            height: h,
            channels: 3,
            active: &object,
            data: &data,
            data_weight: &data_weight,
            grad_x: &gx,
            grad_y: &gy,
        }
        .solve(config.poisson_iterations)
    } else {
        data
    };
    for i in 0..n {
        if !object[i] {
            error[i] = 0.0;
        }
    }
    if std::env::var_os("SPLATDIFF_TIMING").is_some() {
        eprintln!(
            "frame {t}: offers {t_offers:.2} blend {t_blend:.2} synth {t_synth:.2} ({n_unc} px) poisson {:.2}",
            timer.elapsed().as_secs_f32()
        );
    }
    Ok(PropagatedFrame {
        image: rgba_with_mask(|i| [solved[i * 3], solved[i * 3 + 1], solved[i * 3 + 2]], &g.mask, w, h),
        error,
        coverage,
    })
}

/// Uncovered pixels farther than `reach` pixels (chessboard) from every
/// covered pixel.
fn large_holes(uncovered: &[bool], covered: &[bool], w: usize, h: usize, reach: usize) -> Vec<bool> {
    let mut near: Vec<bool> = covered.to_vec();
    for _ in 0..reach {
        let prev = near.clone();
        for y in 0..h {
            for x in 0..w {
                let i = y * w + x;
                if prev[i] {
                    continue;
                }
                let (xa, xb, ya, yb) =
                    (x.saturating_sub(1), (x + 1).min(w - 1), y.saturating_sub(1), (y + 1).min(h - 1));
                near[i] = (ya..=yb).any(|yy| (xa..=xb).any(|xx| prev[yy * w + xx]));
            }
        }
    }
    uncovered.iter().zip(&near).map(|(u, n)| *u && !n).collect()
}

/// The rectangle (x0, y0, width, height) around the set pixels, grown by
/// `margin`; `None` when none is set.
fn bounding_box(set: &[bool], w: usize, h: usize, margin: usize) -> Option<(usize, usize, usize, usize)> {
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for (i, _) in set.iter().enumerate().filter(|(_, s)| **s) {
        let (x, y) = (i % w, i / w);
        x0 = x0.min(x);
        y0 = y0.min(y);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    if x0 == usize::MAX {
        return None;
    }
    let (x0, y0) = (x0.saturating_sub(margin), y0.saturating_sub(margin));
    let (x1, y1) = ((x1 + margin).min(w - 1), (y1 + margin).min(h - 1));
    Some((x0, y0, x1 - x0 + 1, y1 - y0 + 1))
}

/// The keyframes nearest to frame `t` in the sequence, at most `count`.
fn nearest_keys(t: usize, keys: &[Keyframe], n: usize, cyclic: bool, count: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by_key(|&s| (sequence_distance(t, keys[s].index, n, cyclic), keys[s].index));
    order.truncate(count);
    order
}

/// Guided patch synthesis of the whole frame from an atlas of the two
/// nearest keyframes, anchored by reprojection where they see.
#[allow(clippy::too_many_arguments)]
fn synthesize_uncovered(
    t: usize,
    frames: &[FrameInput],
    keys: &[Keyframe],
    prev: Option<(&FrameInput, &PropagatedFrame)>,
    reprojections: &[Vec<Option<Reprojection>>],
    blend: &[[f32; 3]],
    covered: &[bool],
    region: (usize, usize, usize, usize),
    config: &PropagateConfig,
) -> Result<crate::patchmatch::Synthesis> {
    let (x0, y0, rw, rh) = region;
    let frame = &frames[t];
    let g = &frame.geometry;
    let (w, h) = (g.width, g.height);
    let slots = nearest_keys(t, keys, frames.len(), config.cyclic, 2);
    let key_frames: Vec<&FrameInput> = slots.iter().map(|&s| &frames[keys[s].index]).collect();
    let mut all = key_frames.clone();
    all.push(frame);
    let (lo, size) = object_bounds(&all);
    let gw = &config.guides;

    // Temporal guide: the previous output warped here through geometry
    // where it saw the point, else the keyframe blend, else the render.
    let render_rgb = frame.render.to_rgb();
    let mut temporal = render_rgb.clone();
    for i in 0..w * h {
        if covered[i] {
            temporal.data[i * 3..i * 3 + 3].copy_from_slice(&blend[i]);
        }
    }
    if let Some((pf, po)) = prev {
        for y in 0..h {
            for x in 0..w {
                let i = y * w + x;
                if covered[i] {
                    continue;
                }
                if let Some(r) = g.reproject(&pf.geometry, x, y) {
                    if let Some(c) = sample_object(&po.image, &pf.geometry.mask, r.position.x, r.position.y) {
                        temporal.data[i * 3..i * 3 + 3].copy_from_slice(&c);
                    }
                }
            }
        }
    }
    let key_images: Vec<Image> = slots.iter().map(|&s| keys[s].image.to_rgb()).collect();
    let key_renders: Vec<Image> = key_frames.iter().map(|f| f.render.to_rgb()).collect();
    let key_edges: Vec<Image> = key_renders.iter().map(Image::edges).collect();
    let key_pos: Vec<Image> = key_frames.iter().map(|f| position_guide(&f.geometry, lo, size)).collect();
    let key_masks: Vec<Image> = key_frames.iter().map(|f| mask_image(&f.geometry)).collect();
    let refs = |v: &[Image]| -> Image { atlas(&v.iter().collect::<Vec<_>>()) };
    let crop = |img: Image| img.crop(x0, y0, rw, rh);
    let guides = vec![
        Guide { source: refs(&key_renders), target: crop(render_rgb.clone()), weight: gw.colour },
        Guide { source: refs(&key_edges), target: crop(render_rgb.edges()), weight: gw.edges },
        Guide { source: refs(&key_pos), target: crop(position_guide(g, lo, size)), weight: gw.position },
        Guide { source: refs(&key_images), target: crop(temporal), weight: gw.temporal },
        Guide { source: refs(&key_masks), target: crop(mask_image(g)), weight: gw.mask },
    ];
    let style = refs(&key_images);
    let source_labels: Vec<u8> = {
        let per_key: Vec<Vec<u8>> = key_frames.iter().map(|f| labels(&f.geometry)).collect();
        let mut out = vec![0u8; style.width * h];
        for (s, l) in per_key.iter().enumerate() {
            for y in 0..h {
                out[y * style.width + s * w..y * style.width + (s + 1) * w].copy_from_slice(&l[y * w..(y + 1) * w]);
            }
        }
        out
    };
    // Anchors: the first of the two keyframes that sees the pixel.
    let mut anchors = vec![[f32::NAN; 2]; rw * rh];
    for (r, a) in anchors.iter_mut().enumerate() {
        let i = (y0 + r / rw) * w + x0 + r % rw;
        for (slot_in_atlas, &s) in slots.iter().enumerate() {
            if let Some(r) = reprojections[s][i] {
                *a = [r.position.x + (slot_in_atlas * w) as f32, r.position.y];
                break;
            }
        }
    }
    let constraints = Constraints {
        anchors: Some(anchors),
        anchor_radius: config.search_radius,
        labels: Some((source_labels, crop(mask_image(g)).data.iter().map(|&m| (m > 0.5) as u8).collect())),
    };
    synthesize(&style, &guides, &constraints, &config.synthesis)
}

/// EbSynth's workflow: synthesise from the keyframe before and the one
/// after with colour, edge and mask guides, then crossfade.
fn patch_frame(
    t: usize,
    frames: &[FrameInput],
    keys: &[Keyframe],
    config: &PropagateConfig,
) -> Result<PropagatedFrame> {
    let frame = &frames[t];
    let g = &frame.geometry;
    let (w, h) = (g.width, g.height);
    let n = frames.len();
    // Keyframe before and after in the sequence (wrapping on a loop).
    let before = keys
        .iter()
        .enumerate()
        .min_by_key(|(_, k)| {
            if config.cyclic {
                (t + n - k.index) % n
            } else if k.index <= t {
                t - k.index
            } else {
                usize::MAX
            }
        })
        .map(|(s, _)| s);
    let after = keys
        .iter()
        .enumerate()
        .min_by_key(|(_, k)| {
            if config.cyclic {
                (k.index + n - t) % n
            } else if k.index >= t {
                k.index - t
            } else {
                usize::MAX
            }
        })
        .map(|(s, _)| s);
    let mut slots: Vec<usize> = before.into_iter().chain(after).collect();
    slots.dedup();
    let render_rgb = frame.render.to_rgb();
    let gw = &config.guides;
    let mut results = Vec::new();
    for &s in &slots {
        let kf = &frames[keys[s].index];
        let kr = kf.render.to_rgb();
        let guides = vec![
            Guide { source: kr.clone(), target: render_rgb.clone(), weight: gw.colour },
            Guide { source: kr.edges(), target: render_rgb.edges(), weight: gw.edges },
            Guide { source: mask_image(&kf.geometry), target: mask_image(g), weight: gw.mask },
        ];
        let synth = synthesize(&keys[s].image.to_rgb(), &guides, &Constraints::default(), &config.synthesis)?;
        let d = sequence_distance(t, keys[s].index, n, config.cyclic) as f32;
        results.push((synth, d));
    }
    let total: f32 = results.iter().map(|(_, d)| 1.0 / (d + 1e-3)).sum();
    let mut rgbv = vec![0.0f32; w * h * 3];
    let mut error = vec![0.0f32; w * h];
    for (synth, d) in &results {
        let wt = (1.0 / (d + 1e-3)) / total;
        for i in 0..w * h {
            for ch in 0..3 {
                rgbv[i * 3 + ch] += wt * synth.image.data[i * 3 + ch];
            }
            error[i] += wt * (synth.error[i] * 10.0).sqrt().min(1.0);
        }
    }
    for i in 0..w * h {
        if g.mask[i] <= 0.5 {
            error[i] = 0.0;
        }
    }
    Ok(PropagatedFrame {
        image: rgba_with_mask(|i| [rgbv[i * 3], rgbv[i * 3 + 1], rgbv[i * 3 + 2]], &g.mask, w, h),
        error,
        coverage: 0.0,
    })
}
