// Adds each block's scanned offset to its 1024 elements.
struct P { n: u32, a: u32, b: u32, c: u32 }
@group(0) @binding(0) var<uniform> prm: P;
@group(0) @binding(1) var<storage, read_write> data: array<u32>;
@group(0) @binding(2) var<storage, read> sums: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let block = wid.x + wid.y * nwg.x;
    let add = sums[block];
    for (var k = 0u; k < 4u; k++) {
        let i = block * 1024u + k * 256u + li;
        if i < prm.n {
            data[i] += add;
        }
    }
}
