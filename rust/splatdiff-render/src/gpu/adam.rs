//! Adam over every parameter group, on the GPU.

use std::num::NonZeroU64;

use bytemuck::{Pod, Zeroable};

use super::context::{f32_bytes, to_f32, GpuContext};
use super::kernels::{dispatch, Kernels};
use super::splats::{GpuGrads, GpuSplats, Layout};
use crate::{RenderError, Result, Splats};

/// Learning rates per parameter group and Adam's constants.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    pub lr_means: f32,
    pub lr_log_scales: f32,
    pub lr_quats: f32,
    pub lr_opacity: f32,
    /// SH coefficient 0 (the DC colour).
    pub lr_sh_dc: f32,
    /// SH coefficients 1.. (view dependence).
    pub lr_sh_rest: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
}

impl Default for AdamConfig {
    /// The 3DGS defaults (means' rate before scaling by the scene extent).
    fn default() -> Self {
        Self {
            lr_means: 1.6e-4,
            lr_log_scales: 5e-3,
            lr_quats: 1e-3,
            lr_opacity: 5e-2,
            lr_sh_dc: 2.5e-3,
            lr_sh_rest: 2.5e-3 / 20.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-15,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct AdamUniform {
    n: u32,
    k3: u32,
    _a: u32,
    _b: u32,
    lr: f32,
    lr_rest: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    bc1: f32,
    bc2_sqrt: f32,
    _c: f32,
}

/// First and second moments per parameter (packed like the gradients) and the step count.
pub struct GpuAdam {
    m: wgpu::Buffer,
    v: wgpu::Buffer,
    layout: Layout,
    steps: u32,
    kernels: Kernels,
}

impl GpuAdam {
    /// Zero moments for `splats`. Panics when the GPU is out of memory; see [`GpuAdam::try_new`].
    pub fn new(ctx: &GpuContext, splats: &GpuSplats) -> Self {
        Self::try_new(ctx, splats).unwrap_or_else(|e| panic!("allocating Adam moments: {e}"))
    }

    pub fn try_new(ctx: &GpuContext, splats: &GpuSplats) -> Result<Self> {
        let layout = Layout::new(splats.len(), splats.sh_degree());
        Ok(Self {
            m: ctx.storage("adam m", layout.bytes(), wgpu::BufferUsages::empty())?,
            v: ctx.storage("adam v", layout.bytes(), wgpu::BufferUsages::empty())?,
            layout,
            steps: 0,
            kernels: Kernels::new(ctx)?,
        })
    }

    /// Steps taken (the `t` of the bias correction).
    pub fn steps(&self) -> u32 {
        self.steps
    }

    pub fn set_steps(&mut self, steps: u32) {
        self.steps = steps;
    }

    /// One Adam step on every group. Panics when the sizes disagree; see [`GpuAdam::try_step`].
    pub fn step(&mut self, ctx: &GpuContext, splats: &mut GpuSplats, grads: &GpuGrads, config: &AdamConfig) {
        self.try_step(ctx, splats, grads, config).unwrap_or_else(|e| panic!("Adam step: {e}"))
    }

    pub fn try_step(
        &mut self,
        ctx: &GpuContext,
        splats: &mut GpuSplats,
        grads: &GpuGrads,
        config: &AdamConfig,
    ) -> Result<()> {
        let layout = Layout::new(splats.len(), splats.sh_degree());
        if layout != self.layout || grads.layout != self.layout {
            return Err(RenderError::InvalidSplats(format!(
                "Adam holds moments for {} splats of SH degree {}, the splats are {} of degree {} and the gradients {} of degree {}",
                self.layout.len,
                self.layout.sh_degree,
                layout.len,
                layout.sh_degree,
                grads.layout.len,
                grads.layout.sh_degree
            )));
        }
        self.steps += 1;
        let t = self.steps as i32;
        let bc1 = 1.0 - (config.beta1 as f64).powi(t);
        let bc2 = 1.0 - (config.beta2 as f64).powi(t);
        let lrs = [config.lr_means, config.lr_log_scales, config.lr_quats, config.lr_opacity, config.lr_sh_dc];
        let mut enc = ctx.encoder();
        let params = splats.groups();
        for g in 0..5 {
            let (offset, bytes) = self.layout.range(g);
            let Some(size) = NonZeroU64::new(bytes) else { continue };
            let count = (bytes / 4) as u32;
            let u = AdamUniform {
                n: count,
                k3: if g == 4 { self.layout.widths[4] } else { 0 },
                _a: 0,
                _b: 0,
                lr: lrs[g],
                lr_rest: config.lr_sh_rest,
                beta1: config.beta1,
                beta2: config.beta2,
                eps: config.eps,
                bc1: bc1 as f32,
                bc2_sqrt: bc2.sqrt() as f32,
                _c: 0.0,
            };
            let prm = ctx.uniform(bytemuck::bytes_of(&u));
            fn section(b: &wgpu::Buffer, offset: u64, size: NonZeroU64) -> wgpu::BindingResource<'_> {
                wgpu::BindingResource::Buffer(wgpu::BufferBinding { buffer: b, offset, size: Some(size) })
            }
            let section_g = section(&grads.buffer, offset, size);
            let section_m = section(&self.m, offset, size);
            let section_v = section(&self.v, offset, size);
            dispatch(
                ctx,
                &mut enc,
                &self.kernels.adam,
                &[prm.as_entire_binding(), params[g].as_entire_binding(), section_g, section_m, section_v],
                ctx.grid(count.div_ceil(256)),
            );
        }
        ctx.queue.submit([enc.finish()]);
        ctx.check()
    }

    /// The moments as host vectors in the Splats layout: (m, v).
    /// Panics if the GPU cannot be read; see [`GpuAdam::try_download_moments`].
    pub fn download_moments(&self, ctx: &GpuContext) -> (Splats, Splats) {
        self.try_download_moments(ctx).unwrap_or_else(|e| panic!("downloading Adam moments: {e}"))
    }

    pub fn try_download_moments(&self, ctx: &GpuContext) -> Result<(Splats, Splats)> {
        let m = to_f32(&ctx.read(None, &self.m, 0, self.layout.bytes())?);
        let v = to_f32(&ctx.read(None, &self.v, 0, self.layout.bytes())?);
        Ok((self.layout.unpack(&m), self.layout.unpack(&v)))
    }

    /// Replaces the moments (e.g. after densification re-uploaded the splats);
    /// the sizes become those of `m` and `v`, which must agree. The step count is kept.
    pub fn upload_moments(&mut self, ctx: &GpuContext, m: &Splats, v: &Splats) -> Result<()> {
        for (name, s) in [("m", m), ("v", v)] {
            let n = s.len();
            let ok = s.log_scales.len() == n
                && s.quats.len() == n
                && s.opacity_logits.len() == n
                && s.sh_degree <= crate::MAX_SH_DEGREE
                && s.sh.len() == n * s.coeffs() * 3;
            if !ok {
                return Err(RenderError::InvalidSplats(format!("Adam moment {name}: group lengths disagree")));
            }
        }
        if m.len() != v.len() || m.sh_degree != v.sh_degree {
            return Err(RenderError::InvalidSplats("Adam moments m and v differ in size".into()));
        }
        let layout = Layout::new(m.len(), m.sh_degree);
        let pack = |s: &Splats| {
            layout.pack([
                s.means.as_flattened(),
                s.log_scales.as_flattened(),
                s.quats.as_flattened(),
                &s.opacity_logits,
                &s.sh,
            ])
        };
        let mb = ctx.storage_init("adam m", f32_bytes(&pack(m)))?;
        let vb = ctx.storage_init("adam v", f32_bytes(&pack(v)))?;
        self.m = mb;
        self.v = vb;
        self.layout = layout;
        Ok(())
    }
}
