// counts[j] = tiles touched by the j-th splat in depth order; counts[n] = 0.
@group(0) @binding(1) var<storage, read> proj: array<Proj>;
@group(0) @binding(2) var<storage, read> depth_vals: array<u32>;
@group(0) @binding(3) var<storage, read_write> counts: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let j = lin_id(wid, nwg) * 256u + li;
    if j > cam.n {
        return;
    }
    if j == cam.n {
        counts[j] = 0u;
    } else {
        counts[j] = proj[depth_vals[j]].tiles;
    }
}
