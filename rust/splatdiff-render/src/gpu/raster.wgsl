// Forward rasterisation: one 16x16 workgroup per tile, splats front to back in
// batches of 256 through workgroup memory (as 3DGS renderCUDA).
@group(0) @binding(1) var<storage, read> proj: array<Proj>;
@group(0) @binding(2) var<storage, read> vals: array<u32>;
@group(0) @binding(3) var<storage, read> ranges: array<u32>;
@group(0) @binding(4) var<storage, read_write> out_img: array<f32>;   // r, g, b, alpha, depth per pixel
@group(0) @binding(5) var<storage, read_write> out_state: array<u32>; // final T bits, contributors per pixel

var<workgroup> s_xy_op: array<vec4<f32>, 256>;   // mx, my, opacity, depth
var<workgroup> s_conic: array<vec4<f32>, 256>;
var<workgroup> s_col: array<vec4<f32>, 256>;
var<workgroup> s_range: vec2<u32>;
var<workgroup> s_done: atomic<u32>;
var<workgroup> s_done_flag: u32;

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let tile = wid.y * cam.tiles_x + wid.x;
    let px = wid.x * TILE + lid.x;
    let py = wid.y * TILE + lid.y;
    let inside = px < cam.width && py < cam.height;
    let pixf = vec2<f32>(f32(px) + 0.5, f32(py) + 0.5);
    if li == 0u {
        s_range = vec2<u32>(ranges[2u * tile], ranges[2u * tile + 1u]);
    }
    let range = workgroupUniformLoad(&s_range);
    let n = range.y - range.x;
    let batches = (n + 255u) / 256u;
    var done = !inside;
    var T = 1.0;
    var C = vec3<f32>(0.0);
    var D = 0.0;
    var contributor = 0u;
    var last = 0u;
    for (var b = 0u; b < batches; b++) {
        if li == 0u {
            atomicStore(&s_done, 0u);
        }
        workgroupBarrier();
        if done {
            atomicAdd(&s_done, 1u);
        }
        workgroupBarrier();
        if li == 0u {
            s_done_flag = atomicLoad(&s_done);
        }
        let nd = workgroupUniformLoad(&s_done_flag);
        if nd == 256u {
            break;
        }
        let k = range.x + b * 256u + li;
        if k < range.y {
            let p = proj[vals[k]];
            s_xy_op[li] = vec4<f32>(p.mx, p.my, p.opacity, p.depth);
            s_conic[li] = vec4<f32>(p.ca, p.cb, p.cc, 0.0);
            s_col[li] = vec4<f32>(p.r, p.g, p.b, 0.0);
        }
        workgroupBarrier();
        let cnt = min(256u, n - b * 256u);
        for (var j = 0u; j < cnt; j++) {
            if done {
                break;
            }
            contributor++;
            let xy = s_xy_op[j];
            let con = s_conic[j];
            let d = xy.xy - pixf;
            let power = -0.5 * (con.x * d.x * d.x + con.z * d.y * d.y) - con.y * d.x * d.y;
            if power > 0.0 {
                continue;
            }
            let alpha = min(ALPHA_MAX, xy.z * exp(power));
            if alpha < ALPHA_MIN {
                continue;
            }
            let test_t = T * (1.0 - alpha);
            if test_t < T_MIN {
                done = true;
                break;
            }
            let w = alpha * T;
            C += s_col[j].xyz * w;
            D += xy.w * w;
            T = test_t;
            last = contributor;
        }
        workgroupBarrier();
    }
    if inside {
        let pix = py * cam.width + px;
        let a = 1.0 - T;
        let col = C + T * cam.bg.xyz;
        out_img[5u * pix] = col.x;
        out_img[5u * pix + 1u] = col.y;
        out_img[5u * pix + 2u] = col.z;
        out_img[5u * pix + 3u] = a;
        var depth = 0.0;
        if a > 0.0 {
            depth = D / a;
        }
        out_img[5u * pix + 4u] = depth;
        out_state[2u * pix] = bitcast<u32>(T);
        out_state[2u * pix + 1u] = last;
    }
}
