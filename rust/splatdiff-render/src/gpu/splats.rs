//! Splat parameters, gradients and their packed layout on the GPU.

use super::context::{f32_bytes, to_f32, GpuContext};
use crate::{sh_coeffs, Grads, RenderError, Result, Splats};

/// Where each parameter group lies in a packed buffer (gradients, Adam moments):
/// sections in the order means, log_scales, quats, opacity_logits, sh, each
/// starting on a 256-byte boundary so it can be bound on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    pub len: usize,
    pub sh_degree: u32,
    /// Offsets in floats.
    pub offsets: [u32; 5],
    /// Floats per splat in each group.
    pub widths: [u32; 5],
    pub total: u32,
}

impl Layout {
    pub fn new(len: usize, sh_degree: u32) -> Self {
        let widths = [3, 3, 4, 1, 3 * sh_coeffs(sh_degree) as u32];
        let mut offsets = [0u32; 5];
        let mut at = 0u32;
        for g in 0..5 {
            offsets[g] = at;
            at += (widths[g] * len as u32).next_multiple_of(64);
        }
        Self { len, sh_degree, offsets, widths, total: at.max(64) }
    }

    pub fn bytes(&self) -> u64 {
        self.total as u64 * 4
    }

    /// Byte range of group `g`.
    pub fn range(&self, g: usize) -> (u64, u64) {
        (self.offsets[g] as u64 * 4, (self.widths[g] as u64 * self.len as u64) * 4)
    }

    /// Host vectors (means, log_scales, quats, opacity, sh) into one packed vector.
    pub fn pack(&self, groups: [&[f32]; 5]) -> Vec<f32> {
        let mut out = vec![0.0; self.total as usize];
        for (g, data) in groups.iter().enumerate() {
            let o = self.offsets[g] as usize;
            out[o..o + data.len()].copy_from_slice(data);
        }
        out
    }

    /// A packed vector back into Splats-shaped groups.
    pub fn unpack(&self, data: &[f32]) -> Splats {
        let group = |g: usize| {
            let o = self.offsets[g] as usize;
            &data[o..o + self.widths[g] as usize * self.len]
        };
        Splats {
            means: group(0).chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect(),
            log_scales: group(1).chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect(),
            quats: group(2).chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]).collect(),
            opacity_logits: group(3).to_vec(),
            sh: group(4).to_vec(),
            sh_degree: self.sh_degree,
        }
    }
}

/// Splat parameters on the GPU, one storage buffer per group.
pub struct GpuSplats {
    pub(crate) means: wgpu::Buffer,
    pub(crate) log_scales: wgpu::Buffer,
    pub(crate) quats: wgpu::Buffer,
    pub(crate) opacity_logits: wgpu::Buffer,
    pub(crate) sh: wgpu::Buffer,
    len: usize,
    sh_degree: u32,
}

impl GpuSplats {
    /// Uploads `splats` after checking them with [`Splats::problem`].
    pub fn upload(ctx: &GpuContext, splats: &Splats) -> Result<Self> {
        if let Some(p) = splats.problem() {
            return Err(RenderError::InvalidSplats(p));
        }
        if splats.len() * splats.coeffs() * 3 > u32::MAX as usize / 4 {
            return Err(RenderError::OutOfMemory(format!("{} splats are too many for one GPU buffer", splats.len())));
        }
        Ok(Self {
            means: ctx.storage_init("means", f32_bytes(splats.means.as_flattened()))?,
            log_scales: ctx.storage_init("log_scales", f32_bytes(splats.log_scales.as_flattened()))?,
            quats: ctx.storage_init("quats", f32_bytes(splats.quats.as_flattened()))?,
            opacity_logits: ctx.storage_init("opacity_logits", f32_bytes(&splats.opacity_logits))?,
            sh: ctx.storage_init("sh", f32_bytes(&splats.sh))?,
            len: splats.len(),
            sh_degree: splats.sh_degree,
        })
    }

    /// Copies the parameters back to the host. Panics if the GPU cannot be read
    /// (device lost); see [`GpuSplats::try_download`].
    pub fn download(&self, ctx: &GpuContext) -> Splats {
        self.try_download(ctx).unwrap_or_else(|e| panic!("downloading splats from the GPU: {e}"))
    }

    pub fn try_download(&self, ctx: &GpuContext) -> Result<Splats> {
        let n = self.len as u64;
        let read = |b: &wgpu::Buffer, w: u64| ctx.read(None, b, 0, n * w * 4).map(|v| to_f32(&v));
        let k = sh_coeffs(self.sh_degree) as u64;
        let means = read(&self.means, 3)?;
        let log_scales = read(&self.log_scales, 3)?;
        let quats = read(&self.quats, 4)?;
        Ok(Splats {
            means: means.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect(),
            log_scales: log_scales.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect(),
            quats: quats.chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]).collect(),
            opacity_logits: read(&self.opacity_logits, 1)?,
            sh: read(&self.sh, 3 * k)?,
            sh_degree: self.sh_degree,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn sh_degree(&self) -> u32 {
        self.sh_degree
    }

    pub(crate) fn groups(&self) -> [&wgpu::Buffer; 5] {
        [&self.means, &self.log_scales, &self.quats, &self.opacity_logits, &self.sh]
    }
}

/// Gradients on the GPU: one packed buffer (see the Splats layout), written by
/// [`super::GpuRenderer::backward`] and read by [`super::GpuAdam::step`].
pub struct GpuGrads {
    pub(crate) buffer: wgpu::Buffer,
    pub(crate) layout: Layout,
}

impl GpuGrads {
    /// Zero gradients for `len` splats of SH storage degree `sh_degree`.
    /// Panics when the GPU is out of memory; see [`GpuGrads::try_new`].
    pub fn new(ctx: &GpuContext, len: usize, sh_degree: u32) -> Self {
        Self::try_new(ctx, len, sh_degree).unwrap_or_else(|e| panic!("allocating gradients: {e}"))
    }

    pub fn try_new(ctx: &GpuContext, len: usize, sh_degree: u32) -> Result<Self> {
        let layout = Layout::new(len, sh_degree.min(crate::MAX_SH_DEGREE));
        Ok(Self { buffer: ctx.storage("grads", layout.bytes(), wgpu::BufferUsages::empty())?, layout })
    }

    /// Gradients from the host (e.g. for tests of the optimiser); `sh_degree` is the storage degree.
    pub fn upload(ctx: &GpuContext, grads: &Grads, sh_degree: u32) -> Result<Self> {
        let layout = Layout::new(grads.means.len(), sh_degree.min(crate::MAX_SH_DEGREE));
        let n = layout.len;
        if grads.log_scales.len() != n
            || grads.quats.len() != n
            || grads.opacity_logits.len() != n
            || grads.sh.len() != n * layout.widths[4] as usize
        {
            return Err(RenderError::InvalidSplats("gradient group lengths disagree".into()));
        }
        let packed = layout.pack([
            grads.means.as_flattened(),
            grads.log_scales.as_flattened(),
            grads.quats.as_flattened(),
            &grads.opacity_logits,
            &grads.sh,
        ]);
        Ok(Self { buffer: ctx.storage_init("grads", f32_bytes(&packed))?, layout })
    }

    pub fn len(&self) -> usize {
        self.layout.len
    }

    pub fn is_empty(&self) -> bool {
        self.layout.len == 0
    }

    /// Copies the gradients to the host. Panics if the GPU cannot be read; see [`GpuGrads::try_download`].
    pub fn download(&self, ctx: &GpuContext) -> Grads {
        self.try_download(ctx).unwrap_or_else(|e| panic!("downloading gradients from the GPU: {e}"))
    }

    pub fn try_download(&self, ctx: &GpuContext) -> Result<Grads> {
        let data = to_f32(&ctx.read(None, &self.buffer, 0, self.layout.bytes())?);
        let s = self.layout.unpack(&data);
        Ok(Grads {
            means: s.means,
            log_scales: s.log_scales,
            quats: s.quats,
            opacity_logits: s.opacity_logits,
            sh: s.sh,
        })
    }
}
