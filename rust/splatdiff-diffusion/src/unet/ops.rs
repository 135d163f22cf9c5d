//! The UNet's heavy primitives: convolution, group norm and attention.
//!
//! Each has a portable path built from candle tensor ops (used on GPUs and
//! for non-f32 dtypes) and, for f32 on the CPU, a fused kernel written for
//! the shapes a UNet produces. candle's CPU path loses most of its time in
//! (a) convolutions through element-wise im2col copies, (b) attention that
//! materialises a (batch*heads, 4096, 4096) score tensor and copies heads
//! in and out of place, and (c) GroupNorm built from six broadcast ops. The
//! kernels here instead run 3x3 convolutions as nine strided GEMMs over a
//! zero-padded copy of the input (no im2col), compute attention per block of
//! queries with the softmax fused between two GEMMs that read and write the
//! heads in place, and normalise (plus optional SiLU) in one pass.

use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Device, Layout, Module, Result, Shape, Tensor, D};
use candle_nn::VarBuilder;
use rayon::prelude::*;

/// Whether the fused CPU kernels apply to `t`.
fn cpu_f32(t: &Tensor) -> bool {
    matches!(t.device(), Device::Cpu) && t.dtype() == DType::F32
}

fn threads() -> usize {
    candle_core::utils::get_num_threads().max(1)
}

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(v) => v.as_slice(),
        _ => candle_core::bail!("{what}: expected f32 storage"),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{what}: expected a contiguous tensor"),
    }
}

/// `dst = dst + lhs * rhs` (or `dst = beta * lhs * rhs` when `accumulate` is
/// false), with arbitrary strides: `m x k` times `k x n` into `m x n`.
///
/// # Safety
/// All pointers must be valid for the strides and sizes given, and `dst`
/// must not be aliased by another thread during the call.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_f32(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    (dst_rs, dst_cs): (isize, isize),
    accumulate: bool,
    lhs: *const f32,
    (lhs_rs, lhs_cs): (isize, isize),
    rhs: *const f32,
    (rhs_rs, rhs_cs): (isize, isize),
    beta: f32,
    threads: usize,
) {
    let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    gemm::gemm(
        m, n, k, dst, dst_cs, dst_rs, accumulate, lhs, lhs_cs, lhs_rs, rhs, rhs_cs, rhs_rs, 1.0, beta, false, false,
        false, par,
    )
}

// ---------------------------------------------------------------------------
// Convolution

/// A 2D convolution with bias, loaded from diffusers' `weight`/`bias` keys.
#[derive(Debug, Clone)]
pub(crate) struct Conv2d {
    weight: Tensor,
    bias: Tensor,
    padding: usize,
    stride: usize,
}

impl Conv2d {
    pub(crate) fn load(
        vb: VarBuilder,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        padding: usize,
        stride: usize,
    ) -> Result<Self> {
        let weight = vb.get((c_out, c_in, kernel, kernel), "weight")?;
        let bias = vb.get(c_out, "bias")?;
        Ok(Self { weight, bias, padding, stride })
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, kh, kw) = self.weight.dims4()?;
        let same = kh == kw && kh % 2 == 1 && self.padding == kh / 2 && self.stride == 1;
        if same && cpu_f32(x) && self.weight.dtype() == DType::F32 {
            return x.contiguous()?.apply_op3_no_bwd(&self.weight.contiguous()?, &self.bias.contiguous()?, &SameConv);
        }
        let y = x.conv2d(&self.weight, self.padding, self.stride, 1, 1)?;
        y.broadcast_add(&self.bias.reshape((1, (), 1, 1))?)
    }
}

/// Stride-1 "same" convolution (odd square kernel, padding k/2) with bias.
///
/// For each image the input is copied once into a zero-padded buffer of
/// width `Wp = W + 2p`; the output is computed on an `H x Wp` grid (the last
/// `2p` columns of each row are discarded), on which tap `(i, j)` reads the
/// padded input as one contiguous matrix shifted by `i * Wp + j`. So the
/// convolution is `k*k` accumulating GEMMs of `c_out x c_in` by
/// `c_in x H*Wp`, with no im2col buffer.
struct SameConv;

impl CustomOp3 for SameConv {
    fn name(&self) -> &'static str {
        "splatdiff-same-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, "conv input")?;
        let (b, c_in, h, w) = l1.shape().dims4()?;
        let (c_out, c_in_k, k, _) = l2.shape().dims4()?;
        if c_in != c_in_k {
            candle_core::bail!("conv2d: input has {c_in} channels, kernel expects {c_in_k}")
        }
        let wt = f32_slice(s2, l2, "conv weight")?;
        let bias = f32_slice(s3, l3, "conv bias")?;
        let p = k / 2;
        let (hp, wp) = (h + 2 * p, w + 2 * p);
        let plane = hp * wp;
        let grid = h * wp;
        let threads = threads();
        let mut out = vec![0f32; b * c_out * h * w];
        // Slack of 2p elements: the discarded columns of the last rows read past the last plane.
        let mut padded = vec![0f32; c_in * plane + 2 * p];
        let mut acc = vec![0f32; c_out * grid];
        for bi in 0..b {
            let img = &x[bi * c_in * h * w..(bi + 1) * c_in * h * w];
            padded.par_chunks_mut(plane).zip(img.par_chunks(h * w)).for_each(|(dst, src)| {
                for y in 0..h {
                    dst[(y + p) * wp + p..(y + p) * wp + p + w].copy_from_slice(&src[y * w..(y + 1) * w]);
                }
            });
            acc.par_chunks_mut(grid).zip(bias.par_iter()).for_each(|(row, &bv)| row.fill(bv));
            for i in 0..k {
                for j in 0..k {
                    // SAFETY: lhs reads wt[co*c_in*k*k + ci*k*k + i*k + j] for co < c_out,
                    // ci < c_in; rhs reads padded[ci*plane + i*wp + j + o] for o < h*wp,
                    // whose maximum (c_in-1)*plane + (2p)*wp + 2p + h*wp - 1 is within
                    // c_in*plane + 2p; acc is c_out x grid and owned here.
                    unsafe {
                        gemm_f32(
                            (c_out, grid, c_in),
                            acc.as_mut_ptr(),
                            (grid as isize, 1),
                            true,
                            wt.as_ptr().add(i * k + j),
                            ((c_in * k * k) as isize, (k * k) as isize),
                            padded.as_ptr().add(i * wp + j),
                            (plane as isize, 1),
                            1.0,
                            threads,
                        );
                    }
                }
            }
            out[bi * c_out * h * w..(bi + 1) * c_out * h * w].par_chunks_mut(h * w).zip(acc.par_chunks(grid)).for_each(
                |(dst, src)| {
                    for y in 0..h {
                        dst[y * w..(y + 1) * w].copy_from_slice(&src[y * wp..y * wp + w]);
                    }
                },
            );
        }
        Ok((CpuStorage::F32(out), Shape::from((b, c_out, h, w))))
    }
}

// ---------------------------------------------------------------------------
// Group norm

/// GroupNorm over `(batch, channels, ...)` with a per-channel affine, loaded
/// from diffusers' `weight`/`bias` keys; optionally followed by SiLU, which
/// the UNet's ResNets always apply right after their norms.
#[derive(Debug, Clone)]
pub(crate) struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    pub(crate) fn load(vb: VarBuilder, groups: usize, channels: usize, eps: f64) -> Result<Self> {
        Ok(Self { weight: vb.get(channels, "weight")?, bias: vb.get(channels, "bias")?, groups, eps })
    }

    /// `norm(x)`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, false)
    }

    /// `silu(norm(x))`.
    pub(crate) fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, true)
    }

    fn run(&self, x: &Tensor, silu: bool) -> Result<Tensor> {
        let dims = x.dims();
        let (b, c) = (dims[0], dims[1]);
        if c % self.groups != 0 {
            candle_core::bail!("group norm: {c} channels not divisible by {} groups", self.groups)
        }
        if cpu_f32(x) && self.weight.dtype() == DType::F32 {
            let op = GroupNormOp { groups: self.groups, eps: self.eps as f32, silu };
            return x.contiguous()?.apply_op3_no_bwd(&self.weight, &self.bias, &op);
        }
        let dtype = x.dtype();
        let xs = x.to_dtype(DType::F32)?.reshape((b, self.groups, ()))?;
        let mean = xs.mean_keepdim(D::Minus1)?;
        let xs = xs.broadcast_sub(&mean)?;
        let var = xs.sqr()?.mean_keepdim(D::Minus1)?;
        let xs = xs.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        let mut shape = vec![1; dims.len()];
        shape[1] = c;
        let xs = xs
            .reshape(dims)?
            .to_dtype(dtype)?
            .broadcast_mul(&self.weight.reshape(shape.clone())?)?
            .broadcast_add(&self.bias.reshape(shape)?)?;
        if silu {
            xs.silu()
        } else {
            Ok(xs)
        }
    }
}

struct GroupNormOp {
    groups: usize,
    eps: f32,
    silu: bool,
}

impl CustomOp3 for GroupNormOp {
    fn name(&self) -> &'static str {
        "splatdiff-group-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, "group norm input")?;
        let weight = f32_slice(s2, l2, "group norm weight")?;
        let bias = f32_slice(s3, l3, "group norm bias")?;
        let dims = l1.shape().dims();
        let c = dims[1];
        let spatial: usize = dims[2..].iter().product();
        let cpg = c / self.groups;
        let group_len = cpg * spatial;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(group_len).zip(x.par_chunks(group_len)).enumerate().for_each(|(i, (dst, src))| {
            let g = i % self.groups;
            let n = src.len() as f64;
            let mean = src.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = src
                .iter()
                .map(|&v| {
                    let d = v as f64 - mean;
                    d * d
                })
                .sum::<f64>()
                / n;
            let inv = 1.0 / (var + self.eps as f64).sqrt();
            for ch in 0..cpg {
                let cc = g * cpg + ch;
                let scale = (inv * weight[cc] as f64) as f32;
                let shift = bias[cc] - (mean * inv) as f32 * weight[cc];
                let s = &src[ch * spatial..(ch + 1) * spatial];
                let d = &mut dst[ch * spatial..(ch + 1) * spatial];
                if self.silu {
                    for (d, &s) in d.iter_mut().zip(s) {
                        let y = s * scale + shift;
                        *d = y / (1.0 + exp_approx(-y));
                    }
                } else {
                    for (d, &s) in d.iter_mut().zip(s) {
                        *d = s * scale + shift;
                    }
                }
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

// ---------------------------------------------------------------------------
// GEGLU

/// diffusers' GEGLU activation: the last dimension of `h` is `[x | gate]`;
/// the result is `x * gelu(gate)` with the exact (erf) GELU.
pub(crate) fn geglu(h: &Tensor) -> Result<Tensor> {
    if cpu_f32(h) {
        return h.contiguous()?.apply_op1_no_bwd(&GegluOp);
    }
    let inner = h.dim(D::Minus1)? / 2;
    let gate = h.narrow(D::Minus1, inner, inner)?.gelu_erf()?;
    h.narrow(D::Minus1, 0, inner)? * gate
}

struct GegluOp;

impl CustomOp1 for GegluOp {
    fn name(&self) -> &'static str {
        "splatdiff-geglu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let h = f32_slice(s, l, "geglu input")?;
        let mut dims = l.shape().dims().to_vec();
        let last = dims.len() - 1;
        let inner = dims[last] / 2;
        dims[last] = inner;
        let mut out = vec![0f32; h.len() / 2];
        out.par_chunks_mut(inner).zip(h.par_chunks(2 * inner)).for_each(|(dst, src)| geglu_row(dst, src));
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
}

fn geglu_row(dst: &mut [f32], src: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports the enabled feature.
            return unsafe { geglu_row_avx512(dst, src) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: as above.
            return unsafe { geglu_row_avx2(dst, src) };
        }
    }
    geglu_row_generic(dst, src)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn geglu_row_avx512(dst: &mut [f32], src: &[f32]) {
    geglu_row_generic(dst, src)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn geglu_row_avx2(dst: &mut [f32], src: &[f32]) {
    geglu_row_generic(dst, src)
}

#[inline(always)]
fn geglu_row_generic(dst: &mut [f32], src: &[f32]) {
    let (x, gate) = src.split_at(dst.len());
    for ((d, &x), &g) in dst.iter_mut().zip(x).zip(gate) {
        *d = x * 0.5 * g * (1.0 + erf_approx(g * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// `erf(x)` to 1.5e-7 absolute error (Abramowitz & Stegun 7.1.26), branch-free.
#[inline(always)]
fn erf_approx(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))));
    (1.0 - poly * exp_approx(-a * a)).copysign(x)
}

// ---------------------------------------------------------------------------
// Attention

/// Scaled dot-product attention with heads packed in the channel dimension:
/// `q` is `(batch, queries, heads*d)`, `k` and `v` are `(batch, keys, heads*d)`;
/// the result has `q`'s shape. Queries are processed in blocks so that the
/// score matrix is never materialised whole (at 4096 tokens it would be
/// 0.5 GiB per image for SD 1.5's eight heads).
pub(crate) fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, scale: f64) -> Result<Tensor> {
    let (b, _, c) = q.dims3()?;
    let (bk, m, ck) = k.dims3()?;
    if bk != b || ck != c || v.dims3()? != (b, m, c) || c % heads != 0 {
        candle_core::bail!("attention: q {:?}, k {:?}, v {:?} do not fit {heads} heads", q.dims(), k.dims(), v.dims())
    }
    if cpu_f32(q) && cpu_f32(k) && cpu_f32(v) {
        let op = AttentionOp { heads, scale: scale as f32 };
        return q.contiguous()?.apply_op3_no_bwd(&k.contiguous()?, &v.contiguous()?, &op);
    }
    attention_portable(q, k, v, heads, scale)
}

/// The candle-ops version of [`attention`] (GPUs, f16): heads moved to the
/// batch dimension, queries in slices bounded to ~256 MiB of scores.
fn attention_portable(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, scale: f64) -> Result<Tensor> {
    let (b, n, c) = q.dims3()?;
    let m = k.dim(1)?;
    let d = c / heads;
    let dtype = q.dtype();
    let split = |t: &Tensor, len: usize| -> Result<Tensor> {
        t.reshape((b, len, heads, d))?.transpose(1, 2)?.contiguous()?.to_dtype(DType::F32)
    };
    let q = (split(q, n)? * scale)?;
    let kt = split(k, m)?.t()?;
    let v = split(v, m)?;
    let budget = 256 << 20;
    let rows = (budget / (4 * b * heads * m).max(1)).clamp(1, n);
    let mut outs = Vec::with_capacity(n.div_ceil(rows));
    for start in (0..n).step_by(rows) {
        let len = rows.min(n - start);
        let scores = q.narrow(2, start, len)?.matmul(&kt)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        outs.push(probs.matmul(&v)?);
    }
    Tensor::cat(&outs, 2)?.transpose(1, 2)?.reshape((b, n, c))?.to_dtype(dtype)
}

/// Queries per block of the fused CPU attention: up to 256, with the block's
/// scores (rows x keys f32) kept within 4 MiB. Each GEMM call packs the head's
/// keys or values afresh, so small blocks spend more time packing than
/// multiplying (at 4096 keys, 256-row blocks run SD 1.5's self-attention
/// about 1.7x faster than 16-row blocks that fit L2).
fn query_block(keys: usize) -> usize {
    ((4 << 20) / (4 * keys.max(1))).clamp(8, 256)
}

struct AttentionOp {
    heads: usize,
    scale: f32,
}

impl CustomOp3 for AttentionOp {
    fn name(&self) -> &'static str {
        "splatdiff-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let q = f32_slice(s1, l1, "attention q")?;
        let k = f32_slice(s2, l2, "attention k")?;
        let v = f32_slice(s3, l3, "attention v")?;
        let (b, n, c) = l1.shape().dims3()?;
        let m = l2.shape().dims()[1];
        let heads = self.heads;
        let d = c / heads;
        let rows = query_block(m);
        let blocks = n.div_ceil(rows);
        let mut out = vec![0f32; b * n * c];
        let out_ptr = SendPtr(out.as_mut_ptr());
        (0..b * heads * blocks).into_par_iter().for_each_init(
            || vec![0f32; rows * m],
            |scores, task| {
                let blk = task % blocks;
                let h = (task / blocks) % heads;
                let bi = task / (blocks * heads);
                let r0 = blk * rows;
                let len = rows.min(n - r0);
                let qp = q[bi * n * c + r0 * c + h * d..].as_ptr();
                let kp = k[bi * m * c + h * d..].as_ptr();
                let vp = v[bi * m * c + h * d..].as_ptr();
                // SAFETY: the q/k/v pointers address rows r0..r0+len (resp. 0..m) of head h
                // with row stride c inside their slices; scores holds rows*m >= len*m floats;
                // each task writes only rows r0..r0+len, columns h*d..h*d+d of `out`, which no
                // other task touches.
                unsafe {
                    gemm_f32(
                        (len, m, d),
                        scores.as_mut_ptr(),
                        (m as isize, 1),
                        false,
                        qp,
                        (c as isize, 1),
                        kp,
                        (1, c as isize),
                        self.scale,
                        1,
                    );
                    let dst = out_ptr.add(bi * n * c + r0 * c + h * d);
                    let mut sums = [0f32; 256];
                    for (r, sum) in sums.iter_mut().enumerate().take(len) {
                        *sum = softmax_unnormalised(&mut scores[r * m..(r + 1) * m]);
                    }
                    gemm_f32(
                        (len, d, m),
                        dst,
                        (c as isize, 1),
                        false,
                        scores.as_ptr(),
                        (m as isize, 1),
                        vp,
                        (c as isize, 1),
                        1.0,
                        1,
                    );
                    for (r, sum) in sums.iter().enumerate().take(len) {
                        let row = std::slice::from_raw_parts_mut(dst.add(r * c), d);
                        let inv = 1.0 / sum;
                        row.iter_mut().for_each(|x| *x *= inv);
                    }
                }
            },
        );
        Ok((CpuStorage::F32(out), Shape::from((b, n, c))))
    }
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: used only to hand disjoint regions of one buffer to rayon tasks.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    /// # Safety
    /// `off` must be within the allocation.
    unsafe fn add(self, off: usize) -> *mut f32 {
        self.0.add(off)
    }
}

/// Replaces `row` by `exp(row - max(row))` and returns the sum.
fn softmax_unnormalised(row: &mut [f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports the enabled features.
            return unsafe { softmax_avx512(row) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: as above.
            return unsafe { softmax_avx2(row) };
        }
    }
    softmax_generic(row)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn softmax_avx512(row: &mut [f32]) -> f32 {
    softmax_generic(row)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_avx2(row: &mut [f32]) -> f32 {
    softmax_generic(row)
}

/// Written so that the compiler vectorises it (lanes of 8/16 partial results).
#[inline(always)]
fn softmax_generic(row: &mut [f32]) -> f32 {
    const L: usize = 16;
    // Four independent vectors of running maxima, compared with `>` rather
    // than `f32::max` (whose NaN handling serialises the loop).
    let mut maxs = [f32::NEG_INFINITY; 4 * L];
    let mut wide = row.chunks_exact(4 * L);
    for ch in &mut wide {
        for i in 0..4 * L {
            if ch[i] > maxs[i] {
                maxs[i] = ch[i];
            }
        }
    }
    let mut chunks = wide.remainder().chunks_exact(L);
    for ch in &mut chunks {
        for i in 0..L {
            maxs[i] = maxs[i].max(ch[i]);
        }
    }
    let mut max = chunks.remainder().iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    for m in maxs {
        max = max.max(m);
    }
    let mut sums = [0f32; L];
    let mut chunks = row.chunks_exact_mut(L);
    for ch in &mut chunks {
        for i in 0..L {
            let e = exp_approx(ch[i] - max);
            ch[i] = e;
            sums[i] += e;
        }
    }
    let mut sum = 0f32;
    for x in chunks.into_remainder() {
        *x = exp_approx(*x - max);
        sum += *x;
    }
    sum + sums.iter().sum::<f32>()
}

/// `exp(x)` to ~2e-7 relative error, branch-free so that loops over it vectorise:
/// `x = n ln2 + r` with `|r| <= ln2/2`, `exp(r)` by its degree-7 Taylor polynomial,
/// `2^n` built in the exponent bits.
#[inline(always)]
pub(crate) fn exp_approx(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E;
    // Round to nearest via the 1.5*2^23 trick (vectorises, unlike f32::round):
    // the low mantissa bits of `shifted` then hold `n` as a two's-complement integer.
    let shifted = t + 12_582_912.0;
    let n = shifted - 12_582_912.0;
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // `n + 127` from those bits with wrapping integer ops, which vectorise (a
    // saturating `n as i32` does not); the clamp keeps it within 1..=254.
    f32::from_bits(shifted.to_bits().wrapping_add(127u32.wrapping_sub(0x4B40_0000)) << 23) * p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_approx_is_accurate() {
        for i in -8700..8800 {
            let x = i as f32 * 0.01;
            let (a, e) = (exp_approx(x), x.exp());
            assert!(((a - e) / e).abs() < 1e-6, "exp({x}) = {a}, want {e}");
        }
    }

    fn reference_conv(x: &Tensor, w: &Tensor, b: &Tensor, pad: usize) -> Tensor {
        x.conv2d(w, pad, 1, 1, 1).unwrap().broadcast_add(&b.reshape((1, (), 1, 1)).unwrap()).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
    }

    #[test]
    fn fused_kernels_match_candle_ops() {
        let dev = Device::Cpu;
        for (k, c_in, c_out, h, w) in [(3, 5, 7, 6, 9), (1, 8, 3, 4, 4), (3, 3, 4, 1, 2)] {
            let x = Tensor::randn(0f32, 1., (2, c_in, h, w), &dev).unwrap();
            let wt = Tensor::randn(0f32, 1., (c_out, c_in, k, k), &dev).unwrap();
            let b = Tensor::randn(0f32, 1., c_out, &dev).unwrap();
            let conv = Conv2d { weight: wt.clone(), bias: b.clone(), padding: k / 2, stride: 1 };
            let got = conv.forward(&x).unwrap();
            assert!(max_diff(&got, &reference_conv(&x, &wt, &b, k / 2)) < 1e-4);
        }

        let x = Tensor::randn(0f32, 1., (2, 8, 5, 3), &dev).unwrap();
        let gn = GroupNorm {
            weight: Tensor::randn(0f32, 1., 8, &dev).unwrap(),
            bias: Tensor::randn(0f32, 1., 8, &dev).unwrap(),
            groups: 4,
            eps: 1e-5,
        };
        let fused = gn.forward_silu(&x).unwrap();
        let portable = candle_nn::GroupNorm::new(gn.weight.clone(), gn.bias.clone(), 8, 4, 1e-5)
            .unwrap()
            .forward(&x)
            .unwrap()
            .silu()
            .unwrap();
        assert!(max_diff(&fused, &portable) < 1e-5);

        let q = Tensor::randn(0f32, 1., (2, 300, 12), &dev).unwrap();
        let k = Tensor::randn(0f32, 1., (2, 1100, 12), &dev).unwrap();
        let v = Tensor::randn(0f32, 1., (2, 1100, 12), &dev).unwrap();
        let h = Tensor::randn(0f32, 2., (2, 7, 10), &dev).unwrap();
        let portable = (h.narrow(2, 0, 5).unwrap() * h.narrow(2, 5, 5).unwrap().gelu_erf().unwrap()).unwrap();
        assert!(max_diff(&geglu(&h).unwrap(), &portable) < 1e-5);

        let fused = attention(&q, &k, &v, 3, 0.5).unwrap();
        let portable = attention_portable(&q, &k, &v, 3, 0.5).unwrap();
        assert!(max_diff(&fused, &portable) < 1e-5);
    }
}
