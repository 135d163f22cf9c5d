//! Forward and backward passes: project, depth sort, tile binning, tile sort,
//! rasterise; and back through the rasteriser and the projection.

use bytemuck::{Pod, Zeroable};

use super::context::{f32_bytes, to_f32, GpuContext};
use super::kernels::{dispatch, Kernels};
use super::sort::{ensure_buffer, SortScratch};
use super::splats::{GpuGrads, GpuSplats, Layout};
use crate::{sh_coeffs, Image, RenderError, Result, View, TILE};

/// The per-view uniform (matches `Cam` in common.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct CamUniform {
    w0: [f32; 4],
    w1: [f32; 4],
    w2: [f32; 4],
    campos: [f32; 4],
    bg: [f32; 4],
    focal: [f32; 4],
    lim: [f32; 4],
    n: u32,
    n_active: u32,
    coeffs: u32,
    tiles_x: u32,
    tiles_y: u32,
    width: u32,
    height: u32,
    _pad: u32,
    goff: [u32; 4],
    goff_sh: [u32; 4],
}

/// Bytes of one projected splat (`Proj` in common.wgsl).
const PROJ_BYTES: u64 = 48;

fn cam_uniform(view: &View, n: usize, sh_degree: u32, grads: Option<&Layout>) -> CamUniform {
    let v = view.camera.world_to_camera_opencv();
    let k = &view.camera.intrinsics;
    let pos = view.camera.position();
    let o = grads.map(|l| l.offsets).unwrap_or_default();
    CamUniform {
        w0: v.row(0).to_array(),
        w1: v.row(1).to_array(),
        w2: v.row(2).to_array(),
        campos: [pos.x, pos.y, pos.z, 0.0],
        bg: [view.background.x, view.background.y, view.background.z, 0.0],
        focal: [k.fx, k.fy, k.cx, k.cy],
        lim: [1.3 * (0.5 * k.width as f32 / k.fx), 1.3 * (0.5 * k.height as f32 / k.fy), 0.0, 0.0],
        n: n as u32,
        n_active: sh_coeffs(view.active_sh_degree) as u32,
        coeffs: sh_coeffs(sh_degree) as u32,
        tiles_x: k.width.div_ceil(TILE),
        tiles_y: k.height.div_ceil(TILE),
        width: k.width,
        height: k.height,
        _pad: 0,
        goff: [o[0], o[1], o[2], o[3]],
        goff_sh: [o[4], 0, 0, 0],
    }
}

fn validate(splats: &GpuSplats, view: &View) -> Result<()> {
    if let Some(p) = view.camera.intrinsics.problem() {
        return Err(RenderError::InvalidCamera(p));
    }
    if view.active_sh_degree > splats.sh_degree() {
        return Err(RenderError::InvalidCamera(format!(
            "active SH degree {} is above the splats' degree {}",
            view.active_sh_degree,
            splats.sh_degree()
        )));
    }
    if !view.camera.cam_to_world.is_finite() || !view.background.is_finite() {
        return Err(RenderError::InvalidCamera("camera pose or background is not finite".into()));
    }
    let k = &view.camera.intrinsics;
    if k.width as u64 * k.height as u64 > (1 << 28) {
        return Err(RenderError::InvalidCamera(format!("image size {}x{} is too large", k.width, k.height)));
    }
    Ok(())
}

/// What backward() needs from the last render().
struct LastRender {
    view: View,
    n: usize,
    sh_degree: u32,
    /// Tile-sorted splat indices (one of the intersection value buffers).
    sorted: wgpu::Buffer,
}

#[derive(Default)]
struct Buffers {
    proj: Option<wgpu::Buffer>,
    depth_keys: [Option<wgpu::Buffer>; 2],
    depth_vals: [Option<wgpu::Buffer>; 2],
    counts: Option<wgpu::Buffer>,
    isect_keys: [Option<wgpu::Buffer>; 2],
    isect_vals: [Option<wgpu::Buffer>; 2],
    ranges: Option<wgpu::Buffer>,
    image: Option<wgpu::Buffer>,
    state: Option<wgpu::Buffer>,
    dpix: Option<wgpu::Buffer>,
    rgrads: Option<wgpu::Buffer>,
}

/// Compute pipelines and scratch buffers, reused across calls (grown when needed).
pub struct GpuRenderer {
    kernels: Kernels,
    scratch: SortScratch,
    bufs: Buffers,
    last: Option<LastRender>,
    /// Intersections (splat, tile pairs) of the last render.
    last_intersections: u32,
}

fn groups(n: u64, per: u64) -> u32 {
    n.div_ceil(per) as u32
}

impl GpuRenderer {
    /// Compiles the kernels.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        Ok(Self {
            kernels: Kernels::new(ctx)?,
            scratch: SortScratch::default(),
            bufs: Buffers::default(),
            last: None,
            last_intersections: 0,
        })
    }

    /// (splat, tile) pairs the last render blended.
    pub fn last_intersections(&self) -> u32 {
        self.last_intersections
    }

    /// Forward pass; keeps its intermediate buffers for a following
    /// [`GpuRenderer::backward`] with the same splats and view.
    pub fn render(&mut self, ctx: &GpuContext, splats: &GpuSplats, view: &View) -> Result<Image> {
        self.last = None;
        validate(splats, view)?;
        let k = &self.kernels;
        let n = splats.len();
        let n64 = n as u64;
        let cam = cam_uniform(view, n, splats.sh_degree(), None);
        let cam_buf = ctx.uniform(bytemuck::bytes_of(&cam));
        let (w, h) = (cam.width as u64, cam.height as u64);
        let n_tiles = cam.tiles_x as u64 * cam.tiles_y as u64;
        let b = &mut self.bufs;

        let proj = ensure_buffer(ctx, &mut b.proj, "projected", PROJ_BYTES * n64)?.clone();
        let dk = [
            ensure_buffer(ctx, &mut b.depth_keys[0], "depth keys", 4 * n64)?.clone(),
            ensure_buffer(ctx, &mut b.depth_keys[1], "depth keys", 4 * n64)?.clone(),
        ];
        let dv = [
            ensure_buffer(ctx, &mut b.depth_vals[0], "depth order", 4 * n64)?.clone(),
            ensure_buffer(ctx, &mut b.depth_vals[1], "depth order", 4 * n64)?.clone(),
        ];
        let counts = ensure_buffer(ctx, &mut b.counts, "tile counts", 4 * (n64 + 1))?.clone();

        // Pass 1: project, sort by depth, count tiles in depth order, scan.
        let mut sorted_depth = dv[0].clone();
        let total = if n > 0 {
            let mut enc = ctx.encoder();
            let g = ctx.grid(groups(n64, 256));
            let sp = splats.groups();
            dispatch(
                ctx,
                &mut enc,
                &k.project,
                &[
                    cam_buf.as_entire_binding(),
                    sp[0].as_entire_binding(),
                    sp[1].as_entire_binding(),
                    sp[2].as_entire_binding(),
                    sp[3].as_entire_binding(),
                    sp[4].as_entire_binding(),
                    proj.as_entire_binding(),
                    dk[0].as_entire_binding(),
                    dv[0].as_entire_binding(),
                ],
                g,
            );
            let in_b = self.scratch.sort(ctx, k, &mut enc, &dk[0], &dv[0], &dk[1], &dv[1], n as u32, 32)?;
            sorted_depth = dv[in_b as usize].clone();
            dispatch(
                ctx,
                &mut enc,
                &k.gather,
                &[
                    cam_buf.as_entire_binding(),
                    proj.as_entire_binding(),
                    sorted_depth.as_entire_binding(),
                    counts.as_entire_binding(),
                ],
                ctx.grid(groups(n64 + 1, 256)),
            );
            self.scratch.scan(ctx, k, &mut enc, &counts, n as u32 + 1)?;
            let bytes = ctx.read(Some(enc), &counts, 4 * n64, 4)?;
            u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
        } else {
            0
        };
        let m = total as u64;
        if m * 4 > ctx.max_buffer() {
            return Err(RenderError::OutOfMemory(format!(
                "{m} splat-tile pairs need more than the adapter's largest buffer ({} bytes)",
                ctx.max_buffer()
            )));
        }

        // Pass 2: bin into tiles, sort by tile (stable: depth order kept), ranges, rasterise.
        let b = &mut self.bufs;
        let ik = [
            ensure_buffer(ctx, &mut b.isect_keys[0], "tile keys", 4 * m)?.clone(),
            ensure_buffer(ctx, &mut b.isect_keys[1], "tile keys", 4 * m)?.clone(),
        ];
        let iv = [
            ensure_buffer(ctx, &mut b.isect_vals[0], "tile splats", 4 * m)?.clone(),
            ensure_buffer(ctx, &mut b.isect_vals[1], "tile splats", 4 * m)?.clone(),
        ];
        let ranges = ensure_buffer(ctx, &mut b.ranges, "tile ranges", 8 * n_tiles)?.clone();
        let image = ensure_buffer(ctx, &mut b.image, "image", 20 * w * h)?.clone();
        let state = ensure_buffer(ctx, &mut b.state, "pixel state", 8 * w * h)?.clone();
        let mut enc = ctx.encoder();
        enc.clear_buffer(&ranges, 0, None);
        let mut sorted = iv[0].clone();
        if m > 0 {
            dispatch(
                ctx,
                &mut enc,
                &k.emit,
                &[
                    cam_buf.as_entire_binding(),
                    proj.as_entire_binding(),
                    sorted_depth.as_entire_binding(),
                    counts.as_entire_binding(),
                    ik[0].as_entire_binding(),
                    iv[0].as_entire_binding(),
                ],
                ctx.grid(groups(n64, 256)),
            );
            let bits = (32 - (n_tiles as u32).saturating_sub(1).leading_zeros()).max(1);
            let in_b = self.scratch.sort(ctx, k, &mut enc, &ik[0], &iv[0], &ik[1], &iv[1], total, bits)?;
            sorted = iv[in_b as usize].clone();
            let keys = &ik[in_b as usize];
            let prm = ctx.uniform(bytemuck::cast_slice(&[total, 0, 0, 0]));
            dispatch(
                ctx,
                &mut enc,
                &k.ranges,
                &[prm.as_entire_binding(), keys.as_entire_binding(), ranges.as_entire_binding()],
                ctx.grid(groups(m, 256)),
            );
        }
        dispatch(
            ctx,
            &mut enc,
            &k.raster,
            &[
                cam_buf.as_entire_binding(),
                proj.as_entire_binding(),
                sorted.as_entire_binding(),
                ranges.as_entire_binding(),
                image.as_entire_binding(),
                state.as_entire_binding(),
            ],
            (cam.tiles_x, cam.tiles_y),
        );
        let px = to_f32(&ctx.read(Some(enc), &image, 0, 20 * w * h)?);
        let mut out = Image {
            width: cam.width,
            height: cam.height,
            color: Vec::with_capacity(px.len() / 5),
            alpha: Vec::with_capacity(px.len() / 5),
            depth: Vec::with_capacity(px.len() / 5),
        };
        for p in px.chunks_exact(5) {
            out.color.push([p[0], p[1], p[2]]);
            out.alpha.push(p[3]);
            out.depth.push(p[4]);
        }
        self.last_intersections = total;
        self.last = Some(LastRender { view: *view, n, sh_degree: splats.sh_degree(), sorted });
        Ok(out)
    }

    /// Backward pass of the last [`GpuRenderer::render`]: overwrites `grads`
    /// (reallocating it if its size or SH degree differ from the splats') with
    /// dL/dparams, given per-pixel dL/d(image over background) and dL/dA.
    /// The work is queued, not waited for.
    pub fn backward(
        &mut self,
        ctx: &GpuContext,
        splats: &GpuSplats,
        view: &View,
        d_color: &[[f32; 3]],
        d_alpha: &[f32],
        grads: &mut GpuGrads,
    ) -> Result<()> {
        let last = self
            .last
            .as_ref()
            .ok_or_else(|| RenderError::Device("backward() needs a successful render() first".into()))?;
        if last.view != *view || last.n != splats.len() || last.sh_degree != splats.sh_degree() {
            return Err(RenderError::InvalidCamera("backward() needs the splats and view of the last render()".into()));
        }
        let k = &self.kernels;
        let n = splats.len();
        let n64 = n as u64;
        let pixels = view.camera.intrinsics.width as usize * view.camera.intrinsics.height as usize;
        if d_color.len() != pixels || d_alpha.len() != pixels {
            return Err(RenderError::InvalidCamera(format!(
                "d_color has {} and d_alpha {} values for an image of {pixels} pixels",
                d_color.len(),
                d_alpha.len()
            )));
        }
        let layout = Layout::new(n, splats.sh_degree());
        if grads.layout != layout {
            *grads = GpuGrads::try_new(ctx, n, splats.sh_degree())?;
        }
        if n == 0 {
            return Ok(());
        }
        let cam = cam_uniform(view, n, splats.sh_degree(), Some(&layout));
        let cam_buf = ctx.uniform(bytemuck::bytes_of(&cam));
        let b = &mut self.bufs;
        let dpix = ensure_buffer(ctx, &mut b.dpix, "pixel gradients", 16 * pixels as u64)?.clone();
        let rgrads = ensure_buffer(ctx, &mut b.rgrads, "projected gradients", 36 * n64)?.clone();
        let mut packed = Vec::with_capacity(pixels * 4);
        for (c, a) in d_color.iter().zip(d_alpha) {
            packed.extend_from_slice(&[c[0], c[1], c[2], *a]);
        }
        ctx.queue.write_buffer(&dpix, 0, f32_bytes(&packed));
        let proj = b.proj.clone().expect("render() allocated it");
        let ranges = b.ranges.clone().expect("render() allocated it");
        let state = b.state.clone().expect("render() allocated it");
        let mut enc = ctx.encoder();
        enc.clear_buffer(&rgrads, 0, None);
        dispatch(
            ctx,
            &mut enc,
            &k.raster_bwd,
            &[
                cam_buf.as_entire_binding(),
                proj.as_entire_binding(),
                last.sorted.as_entire_binding(),
                ranges.as_entire_binding(),
                state.as_entire_binding(),
                dpix.as_entire_binding(),
                rgrads.as_entire_binding(),
            ],
            (cam.tiles_x, cam.tiles_y),
        );
        let sp = splats.groups();
        dispatch(
            ctx,
            &mut enc,
            &k.project_bwd,
            &[
                cam_buf.as_entire_binding(),
                sp[0].as_entire_binding(),
                sp[1].as_entire_binding(),
                sp[2].as_entire_binding(),
                sp[3].as_entire_binding(),
                sp[4].as_entire_binding(),
                proj.as_entire_binding(),
                rgrads.as_entire_binding(),
                grads.buffer.as_entire_binding(),
            ],
            ctx.grid(groups(n64, 256)),
        );
        ctx.queue.submit([enc.finish()]);
        ctx.check()
    }
}
