// Exclusive scan within blocks of 1024 u32 (4 per thread); block totals to sums.
struct P { n: u32, a: u32, b: u32, c: u32 }
@group(0) @binding(0) var<uniform> prm: P;
@group(0) @binding(1) var<storage, read_write> data: array<u32>;
@group(0) @binding(2) var<storage, read_write> sums: array<u32>;
var<workgroup> part: array<u32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let block = wid.x + wid.y * nwg.x;
    if block * 1024u >= prm.n {
        return;
    }
    let base = block * 1024u + li * 4u;
    var v: array<u32, 4>;
    var s = 0u;
    for (var k = 0u; k < 4u; k++) {
        var x = 0u;
        if base + k < prm.n {
            x = data[base + k];
        }
        v[k] = s;
        s += x;
    }
    part[li] = s;
    workgroupBarrier();
    for (var off = 1u; off < 256u; off *= 2u) {
        var t = 0u;
        if li >= off {
            t = part[li - off];
        }
        workgroupBarrier();
        part[li] += t;
        workgroupBarrier();
    }
    let excl = part[li] - s;
    for (var k = 0u; k < 4u; k++) {
        if base + k < prm.n {
            data[base + k] = v[k] + excl;
        }
    }
    if li == 255u {
        sums[block] = part[255];
    }
}
