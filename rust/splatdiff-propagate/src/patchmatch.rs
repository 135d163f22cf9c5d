//! Guided example-based synthesis: the StyLit/EbSynth algorithm (multi-scale
//! PatchMatch with guide channels, a uniformity term and patch voting),
//! written to be deterministic.
//!
//! A target image is synthesised from a source "style" image so that, patch
//! by patch, the target's guide channels resemble the guide channels of the
//! source patch it copies. The nearest-neighbour field (NNF) maps every
//! target pixel to the centre of a source patch. At each level of an
//! anti-aliased pyramid, coarse to fine, the NNF is improved by PatchMatch
//! (propagation from neighbours, then random search at shrinking radii) and
//! the output is re-estimated by voting: each pixel averages the colours
//! that the overlapping patches covering it would put there, weighted by how
//! well each patch matched. The current output joins the patch distance as
//! extra channels ("style" channels), which is what makes the result
//! coherent rather than a per-pixel lookup.
//!
//! The uniformity term of StyLit charges a source patch for every target
//! patch that already uses it (relative to an even spread), so one good
//! source patch is not copied everywhere ("wash-out").
//!
//! Determinism: EbSynth's CPU version updates its NNF and occurrence counts
//! from racing threads, so two runs differ. Here the target is split into
//! fixed bands of rows, each scanned sequentially by one task; a band reads
//! neighbours outside itself, and the occurrence counts, from a snapshot
//! taken before the pass; random numbers come from a hash of (seed, level,
//! pass, pixel). The bands do not depend on the thread count, so the output
//! is bit-identical whatever the number of threads.
//!
//! Geometry hooks used by propagation: an optional *anchor* per target pixel
//! (where reprojection says it lies in the source) initialises the NNF and
//! bounds the search to a window around it, and optional *labels* restrict
//! matches to source pixels of the same label (object against background).

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{PropagateError, Result};
use crate::image::Image;

/// Settings of one synthesis; serialisable for the run's manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SynthesisConfig {
    /// Side of a square patch in pixels (odd).
    pub patch_size: usize,
    /// Pyramid levels; `None` picks as many as keep the coarsest level's
    /// shorter side at least 8 patches.
    pub levels: Option<usize>,
    /// Rounds of (PatchMatch, vote) per level.
    pub search_vote_iters: usize,
    /// PatchMatch passes per round (alternating scan direction).
    pub patchmatch_iters: usize,
    /// Weight of the uniformity term (in squared float-colour units;
    /// EbSynth's default 3500 is in squared 8-bit units, about 0.054 here).
    pub uniformity: f32,
    /// Weight of the current output in the patch distance (the style term).
    pub style_weight: f32,
    /// Seed of the random search.
    pub seed: u64,
}

impl Default for SynthesisConfig {
    fn default() -> Self {
        Self {
            patch_size: 5,
            levels: None,
            search_vote_iters: 4,
            patchmatch_iters: 3,
            uniformity: 0.054,
            style_weight: 1.0,
            seed: 0,
        }
    }
}

/// One guide: the same kind of image for the source and the target, with a
/// weight. A guide's weight is shared among its channels, so a 1-channel
/// edge guide and a 3-channel colour guide of equal weight count equally.
#[derive(Clone, Debug)]
pub struct Guide {
    pub source: Image,
    pub target: Image,
    pub weight: f32,
}

/// Optional geometric knowledge about where target pixels come from.
#[derive(Clone, Debug, Default)]
pub struct Constraints {
    /// Per target pixel, its position in the source (continuous pixel
    /// coordinates) when known; NaN when not.
    pub anchors: Option<Vec<[f32; 2]>>,
    /// Search radius around an anchor, in finest-level pixels.
    pub anchor_radius: f32,
    /// Labels of source and target pixels; a target pixel only copies source
    /// patches whose centre has the same label.
    pub labels: Option<(Vec<u8>, Vec<u8>)>,
}

/// What a synthesis produces.
#[derive(Clone, Debug)]
pub struct Synthesis {
    /// The synthesised target, with the style image's channels.
    pub image: Image,
    /// Per target pixel, the source patch centre it copies.
    pub nnf: Vec<[u32; 2]>,
    /// Per target pixel, the mean squared difference per channel of its
    /// patch against the source patch it copies (guides and style): where
    /// synthesis is unsure, this is large.
    pub error: Vec<f32>,
}

/// Synthesises the target from `style` (the source image) so that guides
/// match. Every guide's source must have the style's size; every guide's
/// target the same (target) size.
pub fn synthesize(
    style: &Image,
    guides: &[Guide],
    constraints: &Constraints,
    config: &SynthesisConfig,
) -> Result<Synthesis> {
    let (sw, sh) = (style.width, style.height);
    let first = guides.first().ok_or_else(|| PropagateError::Invalid("synthesis needs at least one guide".into()))?;
    let (tw, th) = (first.target.width, first.target.height);
    for (i, g) in guides.iter().enumerate() {
        if (g.source.width, g.source.height) != (sw, sh) {
            return Err(PropagateError::Invalid(format!(
                "guide {i}: source is {}x{}, the style image is {sw}x{sh}",
                g.source.width, g.source.height
            )));
        }
        if (g.target.width, g.target.height) != (tw, th) {
            return Err(PropagateError::Invalid(format!(
                "guide {i}: target is {}x{}, guide 0's target is {tw}x{th}",
                g.target.width, g.target.height
            )));
        }
        if g.source.channels != g.target.channels {
            return Err(PropagateError::Invalid(format!(
                "guide {i}: source has {} channels, target {}",
                g.source.channels, g.target.channels
            )));
        }
        if !(g.weight.is_finite() && g.weight >= 0.0) {
            return Err(PropagateError::Invalid(format!("guide {i}: weight {} must be >= 0", g.weight)));
        }
    }
    let p = config.patch_size;
    if p == 0 || p % 2 == 0 {
        return Err(PropagateError::Invalid(format!("patch size {p} must be odd")));
    }
    if sw == 0 || sh == 0 || tw == 0 || th == 0 {
        return Err(PropagateError::Invalid(format!("empty image: source {sw}x{sh}, target {tw}x{th}")));
    }
    if let Some(a) = &constraints.anchors {
        if a.len() != tw * th {
            return Err(PropagateError::Invalid("anchors must have one entry per target pixel".into()));
        }
    }
    if let Some((ls, lt)) = &constraints.labels {
        if ls.len() != sw * sh || lt.len() != tw * th {
            return Err(PropagateError::Invalid("labels must have one entry per source and target pixel".into()));
        }
    }

    // Pyramid depth: the coarsest level keeps at least 8 patches across
    // the shorter side of both images.
    let min_side = sw.min(sh).min(tw).min(th);
    let auto_levels = {
        let mut n = 1;
        while (min_side >> n) >= 8 * p && n < 8 {
            n += 1;
        }
        n
    };
    let levels = config.levels.unwrap_or(auto_levels).max(1);

    // Pyramids, finest first: features (weighted guides), style, labels.
    let mut src_feat = vec![weighted_features(guides.iter().map(|g| (&g.source, g.weight)))];
    let mut tgt_feat = vec![weighted_features(guides.iter().map(|g| (&g.target, g.weight)))];
    let mut styles = vec![style.clone()];
    let mut labels: Vec<Option<(Vec<u8>, Vec<u8>)>> = vec![constraints.labels.clone()];
    for l in 1..levels {
        let (s, t) = (src_feat[l - 1].downsample(), tgt_feat[l - 1].downsample());
        if s.width < p || s.height < p {
            break;
        }
        let lab = labels[l - 1].as_ref().map(|(ls, lt)| {
            (
                downsample_labels(ls, src_feat[l - 1].width, src_feat[l - 1].height),
                downsample_labels(lt, tgt_feat[l - 1].width, tgt_feat[l - 1].height),
            )
        });
        src_feat.push(s);
        tgt_feat.push(t);
        styles.push(styles[l - 1].downsample());
        labels.push(lab);
    }
    let levels = src_feat.len();
    let style_scale = (config.style_weight / style.channels as f32).sqrt();

    let mut nnf: Vec<[u32; 2]> = Vec::new();
    let mut err: Vec<f32> = Vec::new();
    let mut out = Image::new(1, 1, style.channels);
    for level in (0..levels).rev() {
        let scale = (1usize << level) as f32;
        let level_anchors = constraints
            .anchors
            .as_ref()
            .map(|a| downsample_anchors(a, tw, th, tgt_feat[level].width, tgt_feat[level].height, scale));
        let radius = (constraints.anchor_radius / scale).max(2.0);
        let ctx = Level {
            src: &src_feat[level],
            tgt: &tgt_feat[level],
            style: &styles[level],
            labels: labels[level].as_ref(),
            anchors: level_anchors.as_deref(),
            radius,
            patch: p,
            uniformity: config.uniformity,
            style_scale,
            seed: config.seed,
            level,
        };
        let (lw, lh) = (ctx.tgt.width, ctx.tgt.height);
        if nnf.is_empty() {
            nnf = ctx.initial_nnf();
        } else {
            nnf = ctx.upsample_nnf(&nnf, out.width, out.height);
        }
        err = vec![f32::INFINITY; lw * lh];
        // First estimate of the output from the initial field, weights equal.
        out = ctx.vote(&nnf, &err);
        for round in 0..config.search_vote_iters {
            let tgt_full = ctx.with_style(&out);
            let src_full = ctx.source_with_style();
            let omega = ctx.occurrences(&nnf);
            // Errors of the current field under the current output.
            err = ctx.errors(&nnf, &src_full, &tgt_full, &omega);
            for pass in 0..config.patchmatch_iters {
                ctx.patchmatch_pass(&mut nnf, &mut err, &src_full, &tgt_full, &omega, round * 16 + pass);
            }
            out = ctx.vote(&nnf, &err);
        }
    }
    // Normalise errors to a mean squared difference per channel.
    let channels = tgt_feat[0].channels + style.channels;
    let norm = (p * p * channels) as f32;
    for e in &mut err {
        *e /= norm;
    }
    Ok(Synthesis { image: out, nnf, error: err })
}

/// Concatenates images' channels, each scaled by sqrt(weight / channels) so
/// that squared differences weigh as asked.
fn weighted_features<'a>(parts: impl Iterator<Item = (&'a Image, f32)> + Clone) -> Image {
    let parts: Vec<(&Image, f32)> = parts.collect();
    let (w, h) = (parts[0].0.width, parts[0].0.height);
    let c: usize = parts.iter().map(|(img, _)| img.channels).sum();
    let mut out = Image::new(w, h, c);
    for i in 0..w * h {
        let mut o = i * c;
        for (img, weight) in &parts {
            let s = (weight / img.channels as f32).sqrt();
            for ch in 0..img.channels {
                out.data[o] = img.data[i * img.channels + ch] * s;
                o += 1;
            }
        }
    }
    out
}

fn downsample_labels(labels: &[u8], w: usize, h: usize) -> Vec<u8> {
    let (nw, nh) = (w.div_ceil(2), h.div_ceil(2));
    let mut out = vec![0u8; nw * nh];
    for y in 0..nh {
        for x in 0..nw {
            out[y * nw + x] = labels[(2 * y).min(h - 1) * w + (2 * x).min(w - 1)];
        }
    }
    out
}

fn downsample_anchors(a: &[[f32; 2]], w: usize, h: usize, nw: usize, nh: usize, scale: f32) -> Vec<[f32; 2]> {
    let step = scale as usize;
    let mut out = vec![[f32::NAN; 2]; nw * nh];
    for y in 0..nh {
        for x in 0..nw {
            let (fx, fy) = ((x * step).min(w - 1), (y * step).min(h - 1));
            let v = a[fy * w + fx];
            if v[0].is_finite() {
                out[y * nw + x] = [v[0] / scale, v[1] / scale];
            }
        }
    }
    out
}

/// Hash of (seed, stream, index) to 64 random bits (SplitMix64 finaliser).
fn hash64(seed: u64, stream: u64, index: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Rows per band of the deterministic parallel scan.
const BAND: usize = 8;

struct Level<'a> {
    src: &'a Image,
    tgt: &'a Image,
    style: &'a Image,
    labels: Option<&'a (Vec<u8>, Vec<u8>)>,
    anchors: Option<&'a [[f32; 2]]>,
    radius: f32,
    patch: usize,
    uniformity: f32,
    style_scale: f32,
    seed: u64,
    level: usize,
}

impl Level<'_> {
    fn r(&self) -> usize {
        self.patch / 2
    }

    /// Valid range of source patch centres: the whole source; patches that
    /// reach over the border read the border pixels (clamped), exactly as
    /// target patches do, so border pixels have their exact match too.
    fn centre_range(&self) -> ([i32; 2], [i32; 2]) {
        ([0, 0], [self.src.width as i32 - 1, self.src.height as i32 - 1])
    }

    fn clamp_centre(&self, q: [i32; 2]) -> [i32; 2] {
        let (lo, hi) = self.centre_range();
        [q[0].clamp(lo[0], hi[0]), q[1].clamp(lo[1], hi[1])]
    }

    fn label_ok(&self, t: usize, q: [i32; 2]) -> bool {
        match self.labels {
            Some((ls, lt)) => ls[q[1] as usize * self.src.width + q[0] as usize] == lt[t],
            None => true,
        }
    }

    fn anchor(&self, t: usize) -> Option<[f32; 2]> {
        self.anchors.and_then(|a| {
            let v = a[t];
            v[0].is_finite().then_some(v)
        })
    }

    fn in_window(&self, t: usize, q: [i32; 2]) -> bool {
        match self.anchor(t) {
            Some(a) => {
                (q[0] as f32 + 0.5 - a[0]).abs() <= self.radius && (q[1] as f32 + 0.5 - a[1]).abs() <= self.radius
            }
            None => true,
        }
    }

    fn initial_nnf(&self) -> Vec<[u32; 2]> {
        let (tw, th) = (self.tgt.width, self.tgt.height);
        // Source centres per label, to draw random valid starts.
        let (lo, hi) = self.centre_range();
        let mut by_label: Vec<Vec<[i32; 2]>> = vec![Vec::new(); 256];
        for y in lo[1]..=hi[1] {
            for x in lo[0]..=hi[0] {
                let l = self.labels.map_or(0, |(ls, _)| ls[y as usize * self.src.width + x as usize]);
                by_label[l as usize].push([x, y]);
            }
        }
        let all: Vec<[i32; 2]> = by_label.iter().flatten().copied().collect();
        (0..tw * th)
            .into_par_iter()
            .map(|t| {
                if let Some(a) = self.anchor(t) {
                    let q = self.clamp_centre([a[0].floor() as i32, a[1].floor() as i32]);
                    if self.label_ok(t, q) {
                        return [q[0] as u32, q[1] as u32];
                    }
                }
                let pool = match self.labels {
                    Some((_, lt)) if !by_label[lt[t] as usize].is_empty() => &by_label[lt[t] as usize],
                    _ => &all,
                };
                let h = hash64(self.seed, 1000 + self.level as u64, t as u64);
                let q = pool[(h % pool.len() as u64) as usize];
                [q[0] as u32, q[1] as u32]
            })
            .collect()
    }

    /// The field of the coarser level, doubled onto this one.
    fn upsample_nnf(&self, coarse: &[[u32; 2]], cw: usize, ch: usize) -> Vec<[u32; 2]> {
        let tw = self.tgt.width;
        (0..tw * self.tgt.height)
            .into_par_iter()
            .map(|t| {
                let (x, y) = (t % tw, t / tw);
                let (cx, cy) = ((x / 2).min(cw - 1), (y / 2).min(ch - 1));
                let c = coarse[cy * cw + cx];
                let mut q = self.clamp_centre([(c[0] * 2) as i32 + (x % 2) as i32, (c[1] * 2) as i32 + (y % 2) as i32]);
                if !self.label_ok(t, q) || !self.in_window(t, q) {
                    if let Some(a) = self.anchor(t) {
                        q = self.clamp_centre([a[0].floor() as i32, a[1].floor() as i32]);
                    }
                }
                [q[0] as u32, q[1] as u32]
            })
            .collect()
    }

    /// Target features with the current output appended as style channels.
    fn with_style(&self, out: &Image) -> Image {
        append_scaled(self.tgt, out, self.style_scale)
    }

    fn source_with_style(&self) -> Image {
        append_scaled(self.src, self.style, self.style_scale)
    }

    /// Patch coverage count of every source pixel (StyLit's Omega).
    fn occurrences(&self, nnf: &[[u32; 2]]) -> Vec<f32> {
        let (sw, sh) = (self.src.width, self.src.height);
        let r = self.r() as i32;
        let mut omega = vec![0.0f32; sw * sh];
        for q in nnf {
            for dy in -r..=r {
                let row = (q[1] as i32 + dy).clamp(0, sh as i32 - 1) as usize * sw;
                for dx in -r..=r {
                    omega[row + (q[0] as i32 + dx).clamp(0, sw as i32 - 1) as usize] += 1.0;
                }
            }
        }
        omega
    }

    fn omega_best(&self) -> f32 {
        let n_src = (self.src.width * self.src.height) as f32;
        (self.tgt.width * self.tgt.height) as f32 / n_src * (self.patch * self.patch) as f32
    }

    /// Distance of target patch at `t` to source patch at `q`, stopping early
    /// once above `bound`.
    fn distance(&self, src: &Image, tgt: &Image, omega: &[f32], t: usize, q: [i32; 2], bound: f32) -> f32 {
        let c = tgt.channels;
        let (tw, th) = (tgt.width as i32, tgt.height as i32);
        let (sw, sh) = (src.width as i32, src.height as i32);
        let (x, y) = ((t % tgt.width) as i32, (t / tgt.width) as i32);
        let r = self.r() as i32;
        let mut sum = self.uniformity * omega[q[1] as usize * src.width + q[0] as usize] / self.omega_best();
        for dy in -r..=r {
            let ty = (y + dy).clamp(0, th - 1) as usize;
            let sy = (q[1] + dy).clamp(0, sh - 1) as usize;
            for dx in -r..=r {
                let tx = (x + dx).clamp(0, tw - 1) as usize;
                let sx = (q[0] + dx).clamp(0, sw - 1) as usize;
                let a = &tgt.data[(ty * tgt.width + tx) * c..][..c];
                let b = &src.data[(sy * src.width + sx) * c..][..c];
                for k in 0..c {
                    let d = a[k] - b[k];
                    sum += d * d;
                }
            }
            if sum >= bound {
                return sum;
            }
        }
        sum
    }

    fn errors(&self, nnf: &[[u32; 2]], src: &Image, tgt: &Image, omega: &[f32]) -> Vec<f32> {
        (0..nnf.len())
            .into_par_iter()
            .map(|t| self.distance(src, tgt, omega, t, [nnf[t][0] as i32, nnf[t][1] as i32], f32::INFINITY))
            .collect()
    }

    /// One PatchMatch pass over bands of rows: propagation from the two
    /// scan-order neighbours, then random search around the best match.
    fn patchmatch_pass(
        &self,
        nnf: &mut [[u32; 2]],
        err: &mut [f32],
        src: &Image,
        tgt: &Image,
        omega: &[f32],
        pass: usize,
    ) {
        let tw = tgt.width;
        let forward = pass % 2 == 0;
        let snapshot: Vec<[u32; 2]> = nnf.to_vec();
        let max_radius = self.src.width.max(self.src.height) as f32;
        nnf.par_chunks_mut(BAND * tw).zip(err.par_chunks_mut(BAND * tw)).enumerate().for_each(
            |(band, (nnf_band, err_band))| {
                let rows = nnf_band.len() / tw;
                let y0 = band * BAND;
                let order: Vec<usize> = if forward { (0..rows * tw).collect() } else { (0..rows * tw).rev().collect() };
                let step: i32 = if forward { 1 } else { -1 };
                for local in order {
                    let (x, ly) = (local % tw, local / tw);
                    let t = (y0 + ly) * tw + x;
                    let mut best = nnf_band[local];
                    let mut best_e = err_band[local];
                    let try_q = |q: [i32; 2], best: &mut [u32; 2], best_e: &mut f32| {
                        let q = self.clamp_centre(q);
                        if [q[0] as u32, q[1] as u32] == *best || !self.label_ok(t, q) || !self.in_window(t, q) {
                            return;
                        }
                        let e = self.distance(src, tgt, omega, t, q, *best_e);
                        if e < *best_e {
                            *best_e = e;
                            *best = [q[0] as u32, q[1] as u32];
                        }
                    };
                    // Propagation: the horizontal neighbour is always in this band.
                    let nx = x as i32 - step;
                    if nx >= 0 && (nx as usize) < tw {
                        let n = nnf_band[ly * tw + nx as usize];
                        try_q([n[0] as i32 + step, n[1] as i32], &mut best, &mut best_e);
                    }
                    let ny = (y0 + ly) as i32 - step;
                    if ny >= 0 && (ny as usize) < tgt.height {
                        let ny = ny as usize;
                        let n = if ny >= y0 && ny < y0 + rows {
                            nnf_band[(ny - y0) * tw + x]
                        } else {
                            snapshot[ny * tw + x]
                        };
                        try_q([n[0] as i32, n[1] as i32 + step], &mut best, &mut best_e);
                    }
                    // Random search at halving radii, around the anchor's
                    // window when there is one.
                    let mut radius = match self.anchor(t) {
                        Some(_) => self.radius,
                        None => max_radius,
                    };
                    let mut i = 0u64;
                    while radius >= 1.0 {
                        let h =
                            hash64(self.seed, ((self.level as u64) << 32) | (pass as u64) << 8, (t as u64) << 6 | i);
                        let rx = ((h & 0xFFFF) as f32 / 65535.0 * 2.0 - 1.0) * radius;
                        let ry = (((h >> 16) & 0xFFFF) as f32 / 65535.0 * 2.0 - 1.0) * radius;
                        let q = [best[0] as i32 + rx.round() as i32, best[1] as i32 + ry.round() as i32];
                        try_q(q, &mut best, &mut best_e);
                        radius *= 0.5;
                        i += 1;
                    }
                    nnf_band[local] = best;
                    err_band[local] = best_e;
                }
            },
        );
    }

    /// Weighted patch voting: every pixel averages the style colours that
    /// the patches covering it copy, weighted by 1 / (1 + error) of each patch.
    fn vote(&self, nnf: &[[u32; 2]], err: &[f32]) -> Image {
        let (tw, th) = (self.tgt.width, self.tgt.height);
        let c = self.style.channels;
        let r = self.r() as i32;
        let norm = (self.patch * self.patch * (self.tgt.channels + c)) as f32;
        let mut out = Image::new(tw, th, c);
        out.data.par_chunks_mut(tw * c).enumerate().for_each(|(y, row)| {
            let mut acc = vec![0.0f32; c];
            for x in 0..tw {
                acc.iter_mut().for_each(|a| *a = 0.0);
                let mut wsum = 0.0f32;
                for dy in -r..=r {
                    let py = y as i32 - dy;
                    if py < 0 || py >= th as i32 {
                        continue;
                    }
                    for dx in -r..=r {
                        let px = x as i32 - dx;
                        if px < 0 || px >= tw as i32 {
                            continue;
                        }
                        let t = py as usize * tw + px as usize;
                        let q = nnf[t];
                        let e = err[t];
                        let w = if e.is_finite() { 1.0 / (1.0 + e / norm * 255.0) } else { 1.0 };
                        let s = self.style.pixel(
                            (q[0] as i32 + dx).clamp(0, self.style.width as i32 - 1) as usize,
                            (q[1] as i32 + dy).clamp(0, self.style.height as i32 - 1) as usize,
                        );
                        for k in 0..c {
                            acc[k] += w * s[k];
                        }
                        wsum += w;
                    }
                }
                for k in 0..c {
                    row[x * c + k] = acc[k] / wsum;
                }
            }
        });
        out
    }
}

fn append_scaled(base: &Image, extra: &Image, scale: f32) -> Image {
    let c = base.channels + extra.channels;
    let mut out = Image::new(base.width, base.height, c);
    for i in 0..base.width * base.height {
        let o = &mut out.data[i * c..(i + 1) * c];
        o[..base.channels].copy_from_slice(&base.data[i * base.channels..(i + 1) * base.channels]);
        for k in 0..extra.channels {
            o[base.channels + k] = extra.data[i * extra.channels + k] * scale;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient_image(w: usize, h: usize) -> Image {
        let mut img = Image::new(w, h, 3);
        for y in 0..h {
            for x in 0..w {
                let p = img.pixel_mut(x, y);
                p[0] = x as f32 / w as f32;
                p[1] = y as f32 / h as f32;
                p[2] = ((x * 7 + y * 3) % 11) as f32 / 11.0;
            }
        }
        img
    }

    #[test]
    fn identical_guides_reproduce_the_style() {
        // With the target's guide equal to the source's, the best field is
        // the identity and the output is the style image itself.
        let guide = gradient_image(48, 40);
        // A style with its own detail, unrelated to the guide's.
        let mut style = Image::new(48, 40, 3);
        for y in 0..40 {
            for x in 0..48 {
                let v = (x as f32 * 0.7).sin() * (y as f32 * 0.45).cos();
                style.pixel_mut(x, y).copy_from_slice(&[0.5 + 0.4 * v, 0.5 - 0.3 * v, (x + y) as f32 / 88.0]);
            }
        }
        let out = synthesize(
            &style,
            &[Guide { source: guide.clone(), target: guide, weight: 4.0 }],
            &Constraints::default(),
            &SynthesisConfig { uniformity: 0.0, ..Default::default() },
        )
        .unwrap();
        let mean_err: f32 =
            out.image.data.iter().zip(&style.data).map(|(a, b)| (a - b).abs()).sum::<f32>() / style.data.len() as f32;
        assert!(mean_err < 0.02, "mean abs error {mean_err}");
    }

    #[test]
    fn labels_are_never_crossed() {
        let guide = gradient_image(40, 40);
        let mut style = Image::new(40, 40, 1);
        let mut ls = vec![0u8; 1600];
        for y in 0..40 {
            for x in 0..40 {
                let inside = x < 20;
                ls[y * 40 + x] = inside as u8;
                style.data[y * 40 + x] = if inside { 1.0 } else { 0.0 };
            }
        }
        // Target: the label flipped left-right; guides say nothing useful.
        let lt: Vec<u8> = (0..1600).map(|i| ((i % 40) >= 20) as u8).collect();
        let out = synthesize(
            &style,
            &[Guide { source: guide.clone(), target: guide, weight: 1.0 }],
            &Constraints { labels: Some((ls.clone(), lt.clone())), ..Default::default() },
            &SynthesisConfig::default(),
        )
        .unwrap();
        for (t, q) in out.nnf.iter().enumerate() {
            assert_eq!(ls[q[1] as usize * 40 + q[0] as usize], lt[t], "pixel {t} copies across labels");
        }
    }
}
