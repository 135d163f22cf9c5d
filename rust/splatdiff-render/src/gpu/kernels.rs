//! Shader sources and compute pipelines.

use super::context::GpuContext;
use crate::{RenderError, Result, ALPHA_MAX, ALPHA_MIN, BLUR, NEAR, SH_C0, TILE, T_MIN};

const COMMON: &str = include_str!("common.wgsl");

/// Constants from lib.rs, plus the choices the CPU reference makes.
fn header() -> String {
    format!(
        "const TILE: u32 = {TILE}u;\nconst NEAR: f32 = {NEAR:?};\nconst BLUR: f32 = {BLUR:?};\n\
         const ALPHA_MIN: f32 = {ALPHA_MIN:?};\nconst ALPHA_MAX: f32 = {ALPHA_MAX:?};\n\
         const T_MIN: f32 = {T_MIN:?};\nconst SH_C0: f32 = {SH_C0:?};\n\
         // Exact largest eigenvalue (the official code floors the discriminant at 0.1).\n\
         const LAMBDA_FLOOR: f32 = 0.0;\n\
         // No gradient through the ALPHA_MAX clamp.\nconst CLAMP_GRAD: bool = true;\n"
    )
}

const ATOMIC_NATIVE: &str = "
@group(0) @binding(6) var<storage, read_write> rgrads: array<atomic<f32>>;
fn atomic_add_f(i: u32, v: f32) {
    if v != 0.0 {
        atomicAdd(&rgrads[i], v);
    }
}
";

const ATOMIC_CAS: &str = "
@group(0) @binding(6) var<storage, read_write> rgrads: array<atomic<u32>>;
fn atomic_add_f(i: u32, v: f32) {
    if v == 0.0 {
        return;
    }
    var old = atomicLoad(&rgrads[i]);
    loop {
        let r = atomicCompareExchangeWeak(&rgrads[i], old, bitcast<u32>(bitcast<f32>(old) + v));
        if r.exchanged {
            break;
        }
        old = r.old_value;
    }
}
";

pub(crate) struct Kernels {
    pub project: wgpu::ComputePipeline,
    pub gather: wgpu::ComputePipeline,
    pub emit: wgpu::ComputePipeline,
    pub ranges: wgpu::ComputePipeline,
    pub raster: wgpu::ComputePipeline,
    pub raster_bwd: wgpu::ComputePipeline,
    pub project_bwd: wgpu::ComputePipeline,
    pub scan_local: wgpu::ComputePipeline,
    pub scan_add: wgpu::ComputePipeline,
    pub sort_hist: wgpu::ComputePipeline,
    pub sort_scatter: wgpu::ComputePipeline,
    pub adam: wgpu::ComputePipeline,
}

impl Kernels {
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let with_common = |body: &str| format!("{}{COMMON}\n{body}", header());
        let atomic = if ctx.float_atomics { ATOMIC_NATIVE } else { ATOMIC_CAS };
        let make = |name: &str, src: String| {
            let module = ctx.device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(name),
                source: wgpu::ShaderSource::Wgsl(src.into()),
            });
            ctx.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(name),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            })
        };
        let k = Self {
            project: make("project", with_common(include_str!("project.wgsl"))),
            gather: make("gather", with_common(include_str!("gather.wgsl"))),
            emit: make("emit", with_common(include_str!("emit.wgsl"))),
            ranges: make("ranges", include_str!("ranges.wgsl").into()),
            raster: make("raster", with_common(include_str!("raster.wgsl"))),
            raster_bwd: make(
                "raster_bwd",
                with_common(&include_str!("raster_bwd.wgsl").replace("ATOMIC_ADD_IMPL", atomic)),
            ),
            project_bwd: make("project_bwd", with_common(include_str!("project_bwd.wgsl"))),
            scan_local: make("scan_local", include_str!("scan_local.wgsl").into()),
            scan_add: make("scan_add", include_str!("scan_add.wgsl").into()),
            sort_hist: make("sort_hist", include_str!("sort_hist.wgsl").into()),
            sort_scatter: make("sort_scatter", include_str!("sort_scatter.wgsl").into()),
            adam: make("adam", include_str!("adam.wgsl").into()),
        };
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(RenderError::Device(format!("compiling the compute shaders: {e}")));
        }
        ctx.check()?;
        Ok(k)
    }
}

/// Records one dispatch of `pipeline` with `entries` as bind group 0.
pub(crate) fn dispatch(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    pipeline: &wgpu::ComputePipeline,
    entries: &[wgpu::BindingResource<'_>],
    groups: (u32, u32),
) {
    if groups.0 == 0 || groups.1 == 0 {
        return;
    }
    let layout = pipeline.get_bind_group_layout(0);
    let entries: Vec<wgpu::BindGroupEntry<'_>> = entries
        .iter()
        .enumerate()
        .map(|(i, r)| wgpu::BindGroupEntry { binding: i as u32, resource: r.clone() })
        .collect();
    let bind =
        ctx.device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout: &layout, entries: &entries });
    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None });
    pass.set_pipeline(pipeline);
    pass.set_bind_group(0, &bind, &[]);
    pass.dispatch_workgroups(groups.0, groups.1, 1);
}
