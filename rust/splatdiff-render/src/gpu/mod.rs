//! wgpu implementation of the rasterizer: forward, backward and Adam as compute
//! shaders (WGSL beside this file), on any Vulkan, Metal or DX12 adapter
//! (Mesa's lavapipe included).
//!
//! # Pipeline (as Brush and gsplat)
//! 1. `project.wgsl`: per splat, the 2D mean, conic, depth, radius, opacity,
//!    colour and the number of 16×16 tiles its `centre ± radius` square overlaps
//!    (0 when culled); a depth key (the float bits of `t.z`, which order like
//!    the floats for positive values; culled splats get `u32::MAX`).
//! 2. Stable radix sort of (depth key, splat index) over all splats: a global
//!    front-to-back order with ties by splat index.
//! 3. Tile counts in that order, exclusive scan (`scan_*.wgsl`); the total
//!    (splat-tile pairs) is read back to size the pair buffers.
//! 4. `emit.wgsl`: one (tile id, splat index) pair per touched tile, written in
//!    depth order; a stable radix sort on the tile id's `ceil(log2 tiles)` bits
//!    then leaves every tile's run sorted by depth, ties by splat index —
//!    exactly the order of the CPU reference, with no depth quantisation.
//! 5. `ranges.wgsl`: per-tile [start, end).
//! 6. `raster.wgsl`: one 16×16 workgroup per tile, front-to-back blending as lib.rs.
//! 7. `raster_bwd.wgsl`: back to front from each pixel's last contributor,
//!    per-splat gradients by float atomic adds (native `atomic<f32>` where the
//!    adapter has `SHADER_FLOAT32_ATOMIC`, else a compare-exchange loop).
//! 8. `project_bwd.wgsl`: chain rule to every parameter.
//! 9. `adam.wgsl`: Adam with bias correction per group.
//!
//! Gradients and Adam moments live in one packed buffer each (groups at
//! 256-byte-aligned offsets); splat parameters in one buffer per group.

mod adam;
mod context;
mod kernels;
mod renderer;
mod sort;
mod splats;

pub use adam::{AdamConfig, GpuAdam};
pub use context::{GpuContext, GpuOptions};
pub use renderer::GpuRenderer;
pub use sort::{exclusive_scan, radix_sort_pairs};
pub use splats::{GpuGrads, GpuSplats};
