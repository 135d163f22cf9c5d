// Backward projection: per splat, chain rule from the rasteriser's per-splat
// gradients (mean2d, conic, opacity, colour) to every parameter.
@group(0) @binding(1) var<storage, read> means: array<f32>;
@group(0) @binding(2) var<storage, read> log_scales: array<f32>;
@group(0) @binding(3) var<storage, read> quats: array<f32>;
@group(0) @binding(4) var<storage, read> opacity_logits: array<f32>;
@group(0) @binding(5) var<storage, read> sh: array<f32>;
@group(0) @binding(6) var<storage, read> proj: array<Proj>;
@group(0) @binding(7) var<storage, read> rgrads: array<f32>;
@group(0) @binding(8) var<storage, read_write> grads: array<f32>;

fn write_zero(i: u32) {
    for (var c = 0u; c < 3u; c++) {
        grads[cam.goff.x + 3u * i + c] = 0.0;
        grads[cam.goff.y + 3u * i + c] = 0.0;
    }
    for (var c = 0u; c < 4u; c++) {
        grads[cam.goff.z + 4u * i + c] = 0.0;
    }
    grads[cam.goff.w + i] = 0.0;
    let base = i * cam.coeffs * 3u;
    for (var c = 0u; c < cam.coeffs * 3u; c++) {
        grads[cam.goff_sh.x + base + c] = 0.0;
    }
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = lin_id(wid, nwg) * 256u + li;
    if i >= cam.n {
        return;
    }
    if proj[i].tiles == 0u {
        write_zero(i);
        return;
    }
    let mu = vec3<f32>(means[3u * i], means[3u * i + 1u], means[3u * i + 2u]);
    let ls = vec3<f32>(log_scales[3u * i], log_scales[3u * i + 1u], log_scales[3u * i + 2u]);
    let qraw = vec4<f32>(quats[4u * i], quats[4u * i + 1u], quats[4u * i + 2u], quats[4u * i + 3u]);
    let g = geom(mu, ls, qraw);
    if !g.ok {
        write_zero(i);
        return;
    }
    let o9 = 9u * i;
    let d_mean2d = vec2<f32>(rgrads[o9], rgrads[o9 + 1u]);
    let d_conic = vec3<f32>(rgrads[o9 + 2u], rgrads[o9 + 3u], rgrads[o9 + 4u]);
    let d_opacity = rgrads[o9 + 5u];
    var d_col = vec3<f32>(rgrads[o9 + 6u], rgrads[o9 + 7u], rgrads[o9 + 8u]);

    // Colour (SH), masked where the colour was clamped at 0.
    let dir_raw = mu - cam.campos.xyz;
    let dist = length(dir_raw);
    let dir = dir_raw / dist;
    var basis = sh_basis(dir);
    var basis_g = sh_basis_grad(dir);
    let base = i * cam.coeffs * 3u;
    var col = vec3<f32>(0.0);
    for (var k = 0u; k < cam.n_active; k++) {
        let o = base + 3u * k;
        col += basis[k] * vec3<f32>(sh[o], sh[o + 1u], sh[o + 2u]);
    }
    col += 0.5;
    d_col = select(d_col, vec3<f32>(0.0), col < vec3<f32>(0.0));
    var d_dir = vec3<f32>(0.0);
    for (var k = 0u; k < cam.coeffs; k++) {
        let o = base + 3u * k;
        if k < cam.n_active {
            let c = vec3<f32>(sh[o], sh[o + 1u], sh[o + 2u]);
            d_dir += basis_g[k] * dot(c, d_col);
            grads[cam.goff_sh.x + o] = basis[k] * d_col.x;
            grads[cam.goff_sh.x + o + 1u] = basis[k] * d_col.y;
            grads[cam.goff_sh.x + o + 2u] = basis[k] * d_col.z;
        } else {
            grads[cam.goff_sh.x + o] = 0.0;
            grads[cam.goff_sh.x + o + 1u] = 0.0;
            grads[cam.goff_sh.x + o + 2u] = 0.0;
        }
    }
    var d_mu = (d_dir - dir * dot(dir, d_dir)) / dist;

    // Conic -> 2D covariance: d Sigma' = -K Gs K with Gs the symmetric gradient.
    let K = mat2x2<f32>(vec2<f32>(g.conic.x, g.conic.y), vec2<f32>(g.conic.y, g.conic.z));
    let Gs = mat2x2<f32>(vec2<f32>(d_conic.x, 0.5 * d_conic.y), vec2<f32>(0.5 * d_conic.y, d_conic.z));
    let H = (K * Gs * K) * -1.0;
    // Sigma' = (J W) Sigma (J W)^T (+ blur).
    let W = view_rot();
    let d_sigma = transpose(g.jw) * H * g.jw;
    let d_j = 2.0 * (H * g.jw * g.sigma) * transpose(W);
    // Sigma = M M^T, M = R S.
    let m = mat3x3<f32>(g.rot[0] * g.scale.x, g.rot[1] * g.scale.y, g.rot[2] * g.scale.z);
    let d_m = 2.0 * (d_sigma * m);
    let rt_dm = transpose(g.rot) * d_m;
    let d_ls = vec3<f32>(rt_dm[0][0], rt_dm[1][1], rt_dm[2][2]) * g.scale;
    let dR = mat3x3<f32>(d_m[0] * g.scale.x, d_m[1] * g.scale.y, d_m[2] * g.scale.z);
    // dR[c][r] is dL/dR_rc.
    let r00 = dR[0][0];
    let r01 = dR[1][0];
    let r02 = dR[2][0];
    let r10 = dR[0][1];
    let r11 = dR[1][1];
    let r12 = dR[2][1];
    let r20 = dR[0][2];
    let r21 = dR[1][2];
    let r22 = dR[2][2];
    let qw = g.qn.x;
    let qx = g.qn.y;
    let qy = g.qn.z;
    let qz = g.qn.w;
    let d_qn = 2.0 * vec4<f32>(
        qz * (r10 - r01) + qy * (r02 - r20) + qx * (r21 - r12),
        qy * (r01 + r10) + qz * (r02 + r20) + qw * (r21 - r12) - 2.0 * qx * (r11 + r22),
        qx * (r01 + r10) + qw * (r02 - r20) + qz * (r12 + r21) - 2.0 * qy * (r00 + r22),
        qw * (r10 - r01) + qx * (r02 + r20) + qy * (r12 + r21) - 2.0 * qz * (r00 + r11),
    );
    let d_q = (d_qn - g.qn * dot(g.qn, d_qn)) / sqrt(dot(qraw, qraw));

    // J(t), with no gradient through the field-of-view clamp.
    let t = g.t;
    let tz = t.z;
    let tz2 = tz * tz;
    let tz3 = tz2 * tz;
    let fx = cam.focal.x;
    let fy = cam.focal.y;
    // d_j[c][r] is dL/dJ_rc. No gradient through a clamped t.x/t.z, but the
    // clamped t.x' = lim t.z still depends on t.z (as gsplat).
    var d_t = vec3<f32>(0.0);
    d_t.z += -fx / tz2 * d_j[0][0] - fy / tz2 * d_j[1][1];
    if g.clamp_x {
        d_t.z += fx * g.tx_c / tz3 * d_j[2][0];
    } else {
        d_t.x += -fx / tz2 * d_j[2][0];
        d_t.z += 2.0 * fx * t.x / tz3 * d_j[2][0];
    }
    if g.clamp_y {
        d_t.z += fy * g.ty_c / tz3 * d_j[2][1];
    } else {
        d_t.y += -fy / tz2 * d_j[2][1];
        d_t.z += 2.0 * fy * t.y / tz3 * d_j[2][1];
    }
    // Mean in pixels.
    d_t.x += d_mean2d.x * fx / tz;
    d_t.y += d_mean2d.y * fy / tz;
    d_t.z += -d_mean2d.x * fx * t.x / tz2 - d_mean2d.y * fy * t.y / tz2;
    d_mu += transpose(W) * d_t;

    let op = 1.0 / (1.0 + exp(-opacity_logits[i]));
    for (var c = 0u; c < 3u; c++) {
        grads[cam.goff.x + 3u * i + c] = d_mu[c];
        grads[cam.goff.y + 3u * i + c] = d_ls[c];
    }
    for (var c = 0u; c < 4u; c++) {
        grads[cam.goff.z + 4u * i + c] = d_q[c];
    }
    grads[cam.goff.w + i] = d_opacity * op * (1.0 - op);
}
