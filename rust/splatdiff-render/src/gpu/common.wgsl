// Shared declarations: the per-view uniform, the projected-splat record and
// the projection maths (3DGS conventions, see lib.rs). The constants TILE,
// NEAR, BLUR, ALPHA_MIN, ALPHA_MAX, T_MIN, SH_C0 are prepended from lib.rs.

struct Cam {
    w0: vec4<f32>,        // rows of world_to_camera_opencv: rotation | translation
    w1: vec4<f32>,
    w2: vec4<f32>,
    campos: vec4<f32>,    // camera centre (world)
    bg: vec4<f32>,        // background rgb
    focal: vec4<f32>,     // fx, fy, cx, cy
    lim: vec4<f32>,       // 1.3 tan(fov_x/2), 1.3 tan(fov_y/2)
    n: u32,               // splats
    n_active: u32,         // active SH coefficients (deg+1)^2
    coeffs: u32,          // stored SH coefficients per splat
    tiles_x: u32,
    tiles_y: u32,
    width: u32,
    height: u32,
    _pad: u32,
    goff: vec4<u32>,      // gradient section offsets (floats): means, log_scales, quats, opacity
    goff_sh: vec4<u32>,   // sh
}

struct Proj {
    mx: f32, my: f32,
    ca: f32, cb: f32, cc: f32,
    depth: f32,
    opacity: f32,
    radius: f32,
    r: f32, g: f32, b: f32,
    tiles: u32,
}

@group(0) @binding(0) var<uniform> cam: Cam;

const SH_C1: f32 = 0.4886025119029199;
const SH_C2_0: f32 = 1.0925484305920792;
const SH_C2_1: f32 = -1.0925484305920792;
const SH_C2_2: f32 = 0.31539156525252005;
const SH_C2_3: f32 = -1.0925484305920792;
const SH_C2_4: f32 = 0.5462742152960396;
const SH_C3_0: f32 = -0.5900435899266435;
const SH_C3_1: f32 = 2.890611442640554;
const SH_C3_2: f32 = -0.4570457994644658;
const SH_C3_3: f32 = 0.3731763325901154;
const SH_C3_4: f32 = -0.4570457994644658;
const SH_C3_5: f32 = 1.445305721320277;
const SH_C3_6: f32 = -0.5900435899266435;

fn lin_id(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

fn view_rot() -> mat3x3<f32> {
    return transpose(mat3x3<f32>(cam.w0.xyz, cam.w1.xyz, cam.w2.xyz));
}

// R(q) for a unit quaternion (w, x, y, z).
fn quat_rot(q: vec4<f32>) -> mat3x3<f32> {
    let w = q.x;
    let x = q.y;
    let y = q.z;
    let z = q.w;
    let r0 = vec3<f32>(1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y - w * z), 2.0 * (x * z + w * y));
    let r1 = vec3<f32>(2.0 * (x * y + w * z), 1.0 - 2.0 * (x * x + z * z), 2.0 * (y * z - w * x));
    let r2 = vec3<f32>(2.0 * (x * z - w * y), 2.0 * (y * z + w * x), 1.0 - 2.0 * (x * x + y * y));
    return transpose(mat3x3<f32>(r0, r1, r2));
}

struct Geom {
    t: vec3<f32>,
    qn: vec4<f32>,
    rot: mat3x3<f32>,
    scale: vec3<f32>,
    sigma: mat3x3<f32>,   // world-frame covariance
    jw: mat3x2<f32>,      // J W
    tx_c: f32,            // t.x, t.y after the field-of-view clamp
    ty_c: f32,
    conic: vec3<f32>,
    mean2d: vec2<f32>,
    radius: f32,
    clamp_x: bool,
    clamp_y: bool,
    ok: bool,
}

fn geom(mu: vec3<f32>, ls: vec3<f32>, q: vec4<f32>) -> Geom {
    var g: Geom;
    let W = view_rot();
    g.t = W * mu + vec3<f32>(cam.w0.w, cam.w1.w, cam.w2.w);
    g.ok = g.t.z >= NEAR;
    if !g.ok {
        return g;
    }
    g.qn = q / sqrt(dot(q, q));
    g.rot = quat_rot(g.qn);
    g.scale = exp(ls);
    let m = mat3x3<f32>(g.rot[0] * g.scale.x, g.rot[1] * g.scale.y, g.rot[2] * g.scale.z);
    g.sigma = m * transpose(m);
    let tz = g.t.z;
    let txtz = g.t.x / tz;
    let tytz = g.t.y / tz;
    g.clamp_x = txtz < -cam.lim.x || txtz > cam.lim.x;
    g.clamp_y = tytz < -cam.lim.y || tytz > cam.lim.y;
    let tx = clamp(txtz, -cam.lim.x, cam.lim.x) * tz;
    let ty = clamp(tytz, -cam.lim.y, cam.lim.y) * tz;
    let fx = cam.focal.x;
    let fy = cam.focal.y;
    g.tx_c = tx;
    g.ty_c = ty;
    let j = mat3x2<f32>(
        vec2<f32>(fx / tz, 0.0),
        vec2<f32>(0.0, fy / tz),
        vec2<f32>(-fx * tx / (tz * tz), -fy * ty / (tz * tz)),
    );
    g.jw = j * W;
    let cov = g.jw * g.sigma * transpose(g.jw);
    let a = cov[0][0] + BLUR;
    let b = cov[0][1];
    let c = cov[1][1] + BLUR;
    let det = a * c - b * b;
    if !(det > 0.0) {
        g.ok = false;
        return g;
    }
    let det_inv = 1.0 / det;
    g.conic = vec3<f32>(c * det_inv, -b * det_inv, a * det_inv);
    let mid = 0.5 * (a + c);
    let lambda = mid + sqrt(max(LAMBDA_FLOOR, mid * mid - det));
    g.radius = ceil(3.0 * sqrt(lambda));
    if !(g.radius >= 1.0) {
        g.ok = false;
        return g;
    }
    g.mean2d = vec2<f32>(fx * g.t.x / tz + cam.focal.z, fy * g.t.y / tz + cam.focal.w);
    return g;
}

// Tiles overlapped by the square centre ± radius: [lo, hi) in x and y.
fn tile_rect(mean: vec2<f32>, radius: f32) -> vec4<u32> {
    let tf = f32(TILE);
    let tmax = vec2<f32>(f32(cam.tiles_x), f32(cam.tiles_y));
    let lo = clamp(floor((mean - radius) / tf), vec2<f32>(0.0), tmax);
    let hi = clamp(ceil((mean + radius) / tf), vec2<f32>(0.0), tmax);
    return vec4<u32>(vec2<u32>(lo), vec2<u32>(hi));
}

fn sh_basis(d: vec3<f32>) -> array<f32, 16> {
    var y: array<f32, 16>;
    let x = d.x;
    let yy_ = d.y;
    let z = d.z;
    let xx = x * x;
    let yy = yy_ * yy_;
    let zz = z * z;
    y[0] = SH_C0;
    y[1] = -SH_C1 * yy_;
    y[2] = SH_C1 * z;
    y[3] = -SH_C1 * x;
    y[4] = SH_C2_0 * x * yy_;
    y[5] = SH_C2_1 * yy_ * z;
    y[6] = SH_C2_2 * (2.0 * zz - xx - yy);
    y[7] = SH_C2_3 * x * z;
    y[8] = SH_C2_4 * (xx - yy);
    y[9] = SH_C3_0 * yy_ * (3.0 * xx - yy);
    y[10] = SH_C3_1 * x * yy_ * z;
    y[11] = SH_C3_2 * yy_ * (4.0 * zz - xx - yy);
    y[12] = SH_C3_3 * z * (2.0 * zz - 3.0 * xx - 3.0 * yy);
    y[13] = SH_C3_4 * x * (4.0 * zz - xx - yy);
    y[14] = SH_C3_5 * z * (xx - yy);
    y[15] = SH_C3_6 * x * (xx - 3.0 * yy);
    return y;
}

// Gradients of the SH basis functions with respect to the (unit) direction.
fn sh_basis_grad(d: vec3<f32>) -> array<vec3<f32>, 16> {
    var g: array<vec3<f32>, 16>;
    let x = d.x;
    let y = d.y;
    let z = d.z;
    let xx = x * x;
    let yy = y * y;
    let zz = z * z;
    g[0] = vec3<f32>(0.0);
    g[1] = vec3<f32>(0.0, -SH_C1, 0.0);
    g[2] = vec3<f32>(0.0, 0.0, SH_C1);
    g[3] = vec3<f32>(-SH_C1, 0.0, 0.0);
    g[4] = SH_C2_0 * vec3<f32>(y, x, 0.0);
    g[5] = SH_C2_1 * vec3<f32>(0.0, z, y);
    g[6] = SH_C2_2 * vec3<f32>(-2.0 * x, -2.0 * y, 4.0 * z);
    g[7] = SH_C2_3 * vec3<f32>(z, 0.0, x);
    g[8] = SH_C2_4 * vec3<f32>(2.0 * x, -2.0 * y, 0.0);
    g[9] = SH_C3_0 * vec3<f32>(6.0 * x * y, 3.0 * xx - 3.0 * yy, 0.0);
    g[10] = SH_C3_1 * vec3<f32>(y * z, x * z, x * y);
    g[11] = SH_C3_2 * vec3<f32>(-2.0 * x * y, 4.0 * zz - xx - 3.0 * yy, 8.0 * y * z);
    g[12] = SH_C3_3 * vec3<f32>(-6.0 * x * z, -6.0 * y * z, 6.0 * zz - 3.0 * xx - 3.0 * yy);
    g[13] = SH_C3_4 * vec3<f32>(4.0 * zz - 3.0 * xx - yy, -2.0 * x * y, 8.0 * x * z);
    g[14] = SH_C3_5 * vec3<f32>(2.0 * x * z, -2.0 * y * z, xx - yy);
    g[15] = SH_C3_6 * vec3<f32>(3.0 * xx - 3.0 * yy, -6.0 * x * y, 0.0);
    return g;
}
