//! Multi-level exclusive scan and a stable LSD radix sort of u32 keys with u32 values.

use super::context::{to_u32, GpuContext};
use super::kernels::{dispatch, Kernels};
use crate::Result;

/// Elements per workgroup of the scan and sort kernels.
pub(crate) const BLOCK: u32 = 1024;

/// Scratch buffers of the scan and sort, grown on demand and reused.
#[derive(Default)]
pub(crate) struct SortScratch {
    scan_levels: Vec<Option<wgpu::Buffer>>,
    hist: Option<wgpu::Buffer>,
}

pub(crate) fn ensure_buffer<'a>(
    ctx: &GpuContext,
    slot: &'a mut Option<wgpu::Buffer>,
    label: &str,
    bytes: u64,
) -> Result<&'a wgpu::Buffer> {
    if slot.as_ref().is_none_or(|b| b.size() < bytes) {
        let grown = bytes.max(16).next_multiple_of(256) + bytes / 2;
        *slot = Some(ctx.storage(label, grown.min(ctx.max_buffer()).max(bytes), wgpu::BufferUsages::empty())?);
    }
    Ok(slot.as_ref().expect("just set"))
}

impl SortScratch {
    /// Exclusive prefix sum of the first `n` u32 of `data`, in place.
    pub fn scan(
        &mut self,
        ctx: &GpuContext,
        k: &Kernels,
        enc: &mut wgpu::CommandEncoder,
        data: &wgpu::Buffer,
        n: u32,
    ) -> Result<()> {
        self.scan_level(ctx, k, enc, data, n, 0)
    }

    fn scan_level(
        &mut self,
        ctx: &GpuContext,
        k: &Kernels,
        enc: &mut wgpu::CommandEncoder,
        data: &wgpu::Buffer,
        n: u32,
        level: usize,
    ) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let nb = n.div_ceil(BLOCK);
        if self.scan_levels.len() <= level {
            self.scan_levels.resize_with(level + 1, || None);
        }
        let sums = ensure_buffer(ctx, &mut self.scan_levels[level], "scan sums", nb as u64 * 4)?.clone();
        let prm = ctx.uniform(bytemuck::cast_slice(&[n, 0, 0, 0]));
        let grid = ctx.grid(nb);
        dispatch(
            ctx,
            enc,
            &k.scan_local,
            &[prm.as_entire_binding(), data.as_entire_binding(), sums.as_entire_binding()],
            grid,
        );
        if nb > 1 {
            self.scan_level(ctx, k, enc, &sums, nb, level + 1)?;
            dispatch(
                ctx,
                enc,
                &k.scan_add,
                &[prm.as_entire_binding(), data.as_entire_binding(), sums.as_entire_binding()],
                grid,
            );
        }
        Ok(())
    }

    /// Stable sort of `n` pairs by the low `bits` of their keys (8 bits a pass).
    /// Returns true when the result ended in `(keys_b, vals_b)`, false for `(keys_a, vals_a)`.
    #[allow(clippy::too_many_arguments)]
    pub fn sort(
        &mut self,
        ctx: &GpuContext,
        k: &Kernels,
        enc: &mut wgpu::CommandEncoder,
        keys_a: &wgpu::Buffer,
        vals_a: &wgpu::Buffer,
        keys_b: &wgpu::Buffer,
        vals_b: &wgpu::Buffer,
        n: u32,
        bits: u32,
    ) -> Result<bool> {
        if n <= 1 {
            return Ok(false);
        }
        let nb = n.div_ceil(BLOCK);
        let hist = ensure_buffer(ctx, &mut self.hist, "radix histogram", 256 * nb as u64 * 4)?.clone();
        let grid = ctx.grid(nb);
        let passes = bits.clamp(1, 32).div_ceil(8);
        let mut in_b = false;
        for pass in 0..passes {
            let (ki, vi, ko, vo) =
                if in_b { (keys_b, vals_b, keys_a, vals_a) } else { (keys_a, vals_a, keys_b, vals_b) };
            let prm = ctx.uniform(bytemuck::cast_slice(&[n, pass * 8, nb, 0]));
            dispatch(
                ctx,
                enc,
                &k.sort_hist,
                &[prm.as_entire_binding(), ki.as_entire_binding(), hist.as_entire_binding()],
                grid,
            );
            self.scan(ctx, k, enc, &hist, 256 * nb)?;
            dispatch(
                ctx,
                enc,
                &k.sort_scatter,
                &[
                    prm.as_entire_binding(),
                    ki.as_entire_binding(),
                    vi.as_entire_binding(),
                    hist.as_entire_binding(),
                    ko.as_entire_binding(),
                    vo.as_entire_binding(),
                ],
                grid,
            );
            in_b = !in_b;
        }
        Ok(in_b)
    }
}

/// Sorts `(keys, values)` pairs on the GPU by the low `bits` of the keys, stably
/// (equal keys keep their input order). For tests and tools; the renderer sorts in place.
pub fn radix_sort_pairs(ctx: &GpuContext, keys: &[u32], values: &[u32], bits: u32) -> Result<(Vec<u32>, Vec<u32>)> {
    assert_eq!(keys.len(), values.len(), "one value per key");
    let kernels = Kernels::new(ctx)?;
    let n = keys.len() as u32;
    let ka = ctx.storage_init("keys", bytemuck::cast_slice(keys))?;
    let va = ctx.storage_init("values", bytemuck::cast_slice(values))?;
    let kb = ctx.storage("keys", keys.len() as u64 * 4, wgpu::BufferUsages::empty())?;
    let vb = ctx.storage("values", keys.len() as u64 * 4, wgpu::BufferUsages::empty())?;
    let mut scratch = SortScratch::default();
    let mut enc = ctx.encoder();
    let in_b = scratch.sort(ctx, &kernels, &mut enc, &ka, &va, &kb, &vb, n, bits)?;
    let (k, v) = if in_b { (&kb, &vb) } else { (&ka, &va) };
    let keys = to_u32(&ctx.read(Some(enc), k, 0, n as u64 * 4)?);
    let vals = to_u32(&ctx.read(None, v, 0, n as u64 * 4)?);
    Ok((keys, vals))
}

/// Exclusive prefix sum on the GPU (for tests).
pub fn exclusive_scan(ctx: &GpuContext, data: &[u32]) -> Result<Vec<u32>> {
    let kernels = Kernels::new(ctx)?;
    let buf = ctx.storage_init("scan", bytemuck::cast_slice(data))?;
    let mut scratch = SortScratch::default();
    let mut enc = ctx.encoder();
    scratch.scan(ctx, &kernels, &mut enc, &buf, data.len() as u32)?;
    Ok(to_u32(&ctx.read(Some(enc), &buf, 0, data.len() as u64 * 4)?))
}
