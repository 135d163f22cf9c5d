// Backward rasterisation (3DGS renderCUDA backward): per tile, back to front
// from each pixel's last contributor; per-splat gradients of mean2d, conic,
// opacity and colour accumulate with float atomic adds (the placeholder below
// is either native atomic<f32> or a compare-exchange loop on u32 bits).
@group(0) @binding(1) var<storage, read> proj: array<Proj>;
@group(0) @binding(2) var<storage, read> vals: array<u32>;
@group(0) @binding(3) var<storage, read> ranges: array<u32>;
@group(0) @binding(4) var<storage, read> state: array<u32>;
@group(0) @binding(5) var<storage, read> dpix: array<f32>;   // d colour rgb, d alpha per pixel

// rgrads per splat: d mean2d (2), d conic (a, b, c) (3), d opacity (1), d colour (3)
ATOMIC_ADD_IMPL

var<workgroup> s_xy_op: array<vec4<f32>, 256>;
var<workgroup> s_conic: array<vec4<f32>, 256>;
var<workgroup> s_col: array<vec4<f32>, 256>;
var<workgroup> s_id: array<u32, 256>;
var<workgroup> s_range: vec2<u32>;
var<workgroup> s_max_last: atomic<u32>;
var<workgroup> s_max_last_u: u32;

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let tile = wid.y * cam.tiles_x + wid.x;
    let px = wid.x * TILE + lid.x;
    let py = wid.y * TILE + lid.y;
    let inside = px < cam.width && py < cam.height;
    let pixf = vec2<f32>(f32(px) + 0.5, f32(py) + 0.5);
    let pix = py * cam.width + px;
    var t_final = 1.0;
    var last = 0u;
    var dp = vec4<f32>(0.0);
    if inside {
        t_final = bitcast<f32>(state[2u * pix]);
        last = state[2u * pix + 1u];
        dp = vec4<f32>(dpix[4u * pix], dpix[4u * pix + 1u], dpix[4u * pix + 2u], dpix[4u * pix + 3u]);
    }
    if li == 0u {
        s_range = vec2<u32>(ranges[2u * tile], ranges[2u * tile + 1u]);
        atomicStore(&s_max_last, 0u);
    }
    workgroupBarrier();
    atomicMax(&s_max_last, last);
    workgroupBarrier();
    if li == 0u {
        s_max_last_u = atomicLoad(&s_max_last);
    }
    let range = workgroupUniformLoad(&s_range);
    let max_last = workgroupUniformLoad(&s_max_last_u);
    // Splats at positions >= max_last contributed to no pixel of this tile.
    let n = min(range.y - range.x, max_last);
    let batches = (n + 255u) / 256u;
    let bg_dot = dot(cam.bg.xyz, dp.xyz);
    var T = t_final;
    var accum = vec3<f32>(0.0);
    var last_alpha = 0.0;
    var last_color = vec3<f32>(0.0);
    for (var b = 0u; b < batches; b++) {
        let q = b * 256u + li;
        if q < n {
            let id = vals[range.x + n - 1u - q];
            let p = proj[id];
            s_id[li] = id;
            s_xy_op[li] = vec4<f32>(p.mx, p.my, p.opacity, p.depth);
            s_conic[li] = vec4<f32>(p.ca, p.cb, p.cc, 0.0);
            s_col[li] = vec4<f32>(p.r, p.g, p.b, 0.0);
        }
        workgroupBarrier();
        let cnt = min(256u, n - b * 256u);
        if inside {
            for (var j = 0u; j < cnt; j++) {
                let pos = n - 1u - (b * 256u + j);
                if pos >= last {
                    continue;
                }
                let xy = s_xy_op[j];
                let con = s_conic[j];
                let d = xy.xy - pixf;
                let power = -0.5 * (con.x * d.x * d.x + con.z * d.y * d.y) - con.y * d.x * d.y;
                if power > 0.0 {
                    continue;
                }
                let G = exp(power);
                let raw_alpha = xy.z * G;
                let alpha = min(ALPHA_MAX, raw_alpha);
                if alpha < ALPHA_MIN {
                    continue;
                }
                T = T / (1.0 - alpha);
                let w = alpha * T;
                let c = s_col[j].xyz;
                accum = last_alpha * last_color + (1.0 - last_alpha) * accum;
                last_color = c;
                var dl_dalpha = dot(c - accum, dp.xyz) * T;
                last_alpha = alpha;
                dl_dalpha += t_final / (1.0 - alpha) * (dp.w - bg_dot);
                // d alpha / d (opacity, G): zero where the ALPHA_MAX clamp is active.
                var dl_draw = dl_dalpha;
                if CLAMP_GRAD && raw_alpha > ALPHA_MAX {
                    dl_draw = 0.0;
                }
                let dl_dg = xy.z * dl_draw;
                let gdx = G * d.x;
                let gdy = G * d.y;
                let dg_ddx = -gdx * con.x - gdy * con.y;
                let dg_ddy = -gdy * con.z - gdx * con.y;
                let o = 9u * s_id[j];
                atomic_add_f(o, dl_dg * dg_ddx);
                atomic_add_f(o + 1u, dl_dg * dg_ddy);
                atomic_add_f(o + 2u, -0.5 * gdx * d.x * dl_dg);
                atomic_add_f(o + 3u, -gdx * d.y * dl_dg);
                atomic_add_f(o + 4u, -0.5 * gdy * d.y * dl_dg);
                atomic_add_f(o + 5u, G * dl_draw);
                atomic_add_f(o + 6u, w * dp.x);
                atomic_add_f(o + 7u, w * dp.y);
                atomic_add_f(o + 8u, w * dp.z);
            }
        }
        workgroupBarrier();
    }
}
