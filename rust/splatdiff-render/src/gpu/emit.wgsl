// One (tile id, splat index) pair per touched tile, splats taken in depth order.
@group(0) @binding(1) var<storage, read> proj: array<Proj>;
@group(0) @binding(2) var<storage, read> depth_vals: array<u32>;
@group(0) @binding(3) var<storage, read> offsets: array<u32>;
@group(0) @binding(4) var<storage, read_write> keys: array<u32>;
@group(0) @binding(5) var<storage, read_write> vals: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let j = lin_id(wid, nwg) * 256u + li;
    if j >= cam.n {
        return;
    }
    let idx = depth_vals[j];
    let p = proj[idx];
    if p.tiles == 0u {
        return;
    }
    let rect = tile_rect(vec2<f32>(p.mx, p.my), p.radius);
    var off = offsets[j];
    for (var ty = rect.y; ty < rect.w; ty++) {
        for (var tx = rect.x; tx < rect.z; tx++) {
            keys[off] = ty * cam.tiles_x + tx;
            vals[off] = idx;
            off++;
        }
    }
}
