// Radix sort pass, step 3: stable scatter. Within a block, elements are ranked
// among equal digits by a per-digit bitmask of the 256 threads (no subgroups).
struct P { n: u32, shift: u32, nb: u32, c: u32 }
@group(0) @binding(0) var<uniform> prm: P;
@group(0) @binding(1) var<storage, read> keys_in: array<u32>;
@group(0) @binding(2) var<storage, read> vals_in: array<u32>;
@group(0) @binding(3) var<storage, read> hist: array<u32>;
@group(0) @binding(4) var<storage, read_write> keys_out: array<u32>;
@group(0) @binding(5) var<storage, read_write> vals_out: array<u32>;
var<workgroup> masks: array<atomic<u32>, 2048>;
var<workgroup> running: array<u32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let block = wid.x + wid.y * nwg.x;
    if block >= prm.nb {
        return;
    }
    running[li] = hist[li * prm.nb + block];
    for (var s = 0u; s < 4u; s++) {
        for (var w = 0u; w < 8u; w++) {
            atomicStore(&masks[li * 8u + w], 0u);
        }
        workgroupBarrier();
        let i = block * 1024u + s * 256u + li;
        let valid = i < prm.n;
        var key = 0u;
        var digit = 0u;
        if valid {
            key = keys_in[i];
            digit = (key >> prm.shift) & 255u;
            atomicOr(&masks[digit * 8u + li / 32u], 1u << (li % 32u));
        }
        workgroupBarrier();
        if valid {
            var rank = 0u;
            let wi = li / 32u;
            for (var w = 0u; w < wi; w++) {
                rank += countOneBits(atomicLoad(&masks[digit * 8u + w]));
            }
            rank += countOneBits(atomicLoad(&masks[digit * 8u + wi]) & ((1u << (li % 32u)) - 1u));
            let dst = running[digit] + rank;
            keys_out[dst] = key;
            vals_out[dst] = vals_in[i];
        }
        workgroupBarrier();
        var c = 0u;
        for (var w = 0u; w < 8u; w++) {
            c += countOneBits(atomicLoad(&masks[li * 8u + w]));
        }
        running[li] += c;
        workgroupBarrier();
    }
}
