// Adam (PyTorch form, bias-corrected) over one parameter group.
struct P {
    n: u32,
    k3: u32,          // SH values per splat (sh group), else 0
    _a: u32,
    _b: u32,
    lr: f32,          // learning rate (SH: DC coefficient)
    lr_rest: f32,     // SH: higher coefficients
    beta1: f32,
    beta2: f32,
    eps: f32,
    bc1: f32,         // 1 - beta1^t
    bc2_sqrt: f32,    // sqrt(1 - beta2^t)
    _c: f32,
}
@group(0) @binding(0) var<uniform> prm: P;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> m1: array<f32>;
@group(0) @binding(4) var<storage, read_write> m2: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + li;
    if i >= prm.n {
        return;
    }
    var lr = prm.lr;
    if prm.k3 > 0u && (i % prm.k3) >= 3u {
        lr = prm.lr_rest;
    }
    let g = grad[i];
    let m = prm.beta1 * m1[i] + (1.0 - prm.beta1) * g;
    let v = prm.beta2 * m2[i] + (1.0 - prm.beta2) * g * g;
    m1[i] = m;
    m2[i] = v;
    let denom = sqrt(v) / prm.bc2_sqrt + prm.eps;
    param[i] = param[i] - (lr / prm.bc1) * m / denom;
}
