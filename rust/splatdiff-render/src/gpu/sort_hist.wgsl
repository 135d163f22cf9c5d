// Radix sort pass, step 1: per-block digit counts, digit-major: hist[d * nb + block].
struct P { n: u32, shift: u32, nb: u32, c: u32 }
@group(0) @binding(0) var<uniform> prm: P;
@group(0) @binding(1) var<storage, read> keys: array<u32>;
@group(0) @binding(2) var<storage, read_write> hist: array<u32>;
var<workgroup> counts: array<atomic<u32>, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let block = wid.x + wid.y * nwg.x;
    if block >= prm.nb {
        return;
    }
    atomicStore(&counts[li], 0u);
    workgroupBarrier();
    for (var k = 0u; k < 4u; k++) {
        let i = block * 1024u + k * 256u + li;
        if i < prm.n {
            atomicAdd(&counts[(keys[i] >> prm.shift) & 255u], 1u);
        }
    }
    workgroupBarrier();
    hist[li * prm.nb + block] = atomicLoad(&counts[li]);
}
