// Forward projection: one thread per splat.
@group(0) @binding(1) var<storage, read> means: array<f32>;
@group(0) @binding(2) var<storage, read> log_scales: array<f32>;
@group(0) @binding(3) var<storage, read> quats: array<f32>;
@group(0) @binding(4) var<storage, read> opacity_logits: array<f32>;
@group(0) @binding(5) var<storage, read> sh: array<f32>;
@group(0) @binding(6) var<storage, read_write> proj: array<Proj>;
@group(0) @binding(7) var<storage, read_write> depth_keys: array<u32>;
@group(0) @binding(8) var<storage, read_write> depth_vals: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = lin_id(wid, nwg) * 256u + li;
    if i >= cam.n {
        return;
    }
    var p: Proj;
    depth_vals[i] = i;
    depth_keys[i] = 0xffffffffu;
    let mu = vec3<f32>(means[3u * i], means[3u * i + 1u], means[3u * i + 2u]);
    let ls = vec3<f32>(log_scales[3u * i], log_scales[3u * i + 1u], log_scales[3u * i + 2u]);
    let q = vec4<f32>(quats[4u * i], quats[4u * i + 1u], quats[4u * i + 2u], quats[4u * i + 3u]);
    let g = geom(mu, ls, q);
    if !g.ok {
        proj[i] = p;
        return;
    }
    let rect = tile_rect(g.mean2d, g.radius);
    let tiles = (rect.z - rect.x) * (rect.w - rect.y);
    if tiles == 0u || g.radius <= 0.0 {
        proj[i] = p;
        return;
    }
    let dir = normalize(mu - cam.campos.xyz);
    var basis = sh_basis(dir);
    var col = vec3<f32>(0.0);
    let base = i * cam.coeffs * 3u;
    for (var k = 0u; k < cam.n_active; k++) {
        let o = base + 3u * k;
        col += basis[k] * vec3<f32>(sh[o], sh[o + 1u], sh[o + 2u]);
    }
    col = max(col + 0.5, vec3<f32>(0.0));
    p.mx = g.mean2d.x;
    p.my = g.mean2d.y;
    p.ca = g.conic.x;
    p.cb = g.conic.y;
    p.cc = g.conic.z;
    p.depth = g.t.z;
    p.opacity = 1.0 / (1.0 + exp(-opacity_logits[i]));
    p.radius = g.radius;
    p.r = col.x;
    p.g = col.y;
    p.b = col.z;
    p.tiles = tiles;
    proj[i] = p;
    // Positive floats order like their bit patterns.
    depth_keys[i] = bitcast<u32>(g.t.z);
}
