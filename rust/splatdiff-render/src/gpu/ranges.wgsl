// Per-tile [start, end) into the tile-sorted pairs.
struct P { n: u32, a: u32, b: u32, c: u32 }
@group(0) @binding(0) var<uniform> prm: P;
@group(0) @binding(1) var<storage, read> keys: array<u32>;
@group(0) @binding(2) var<storage, read_write> ranges: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + li;
    if i >= prm.n {
        return;
    }
    let k = keys[i];
    if i == 0u || keys[i - 1u] != k {
        ranges[2u * k] = i;
    }
    if i == prm.n - 1u || keys[i + 1u] != k {
        ranges[2u * k + 1u] = i + 1u;
    }
}
