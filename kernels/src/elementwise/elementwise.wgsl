// Elementwise ops: unary activations, broadcasting binary arithmetic, GEGLU and SwiGLU.
// Storage is T (f32 or f16); arithmetic is f32.

// Shared by every entry point in this file; each reads the fields it needs.
struct Params {
    n: u32,       // output elements
    op: u32,      // which unary or binary op
    alpha: f32,   // scale: y = alpha * x + beta; leaky relu: the negative slope
    beta: f32,
    rank: u32,    // binary: dimensions in use
    half_width: u32, // geglu: output features (half the input's last dimension)
    _pad0: u32,
    _pad1: u32,
    out_dims: array<vec4<u32>, 2>,
    a_strides: array<vec4<u32>, 2>, // 0 where `a` is broadcast
    b_strides: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<T>;
@group(0) @binding(2) var<storage, read> b: array<T>;
@group(0) @binding(3) var<storage, read_write> out: array<T>;

const WG: u32 = 256u;

fn linear_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + lid;
}

// erf by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7); WGSL has no built-in erf.
fn erf_approx(x: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.3275911 * abs(x));
    let poly = ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t;
    return sign(x) * (1.0 - poly * exp(-x * x));
}

fn gelu_erf(x: f32) -> f32 {
    return 0.5 * x * (1.0 + erf_approx(x * 0.70710678118654752));
}

fn gelu_tanh(x: f32) -> f32 {
    // Clamped: some drivers' tanh returns NaN for large arguments.
    let inner = clamp(0.7978845608028654 * (x + 0.044715 * x * x * x), -15.0, 15.0);
    return 0.5 * x * (1.0 + tanh(inner));
}

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

fn apply_unary(x: f32) -> f32 {
    switch p.op {
        case 0u: { return p.alpha * x + p.beta; }
        case 1u: { return x * sigmoid(x); }
        case 2u: { return gelu_erf(x); }
        case 3u: { return gelu_tanh(x); }
        case 4u: { return x * sigmoid(1.702 * x); }
        case 5u: { return select(p.alpha * x, x, x >= 0.0); }
        default: { return x; }
    }
}

@compute @workgroup_size(256)
fn unary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wid, nwg, lid);
    if i >= p.n { return; }
    out[i] = T(apply_unary(f32(a[i])));
}

fn apply_binary(x: f32, y: f32) -> f32 {
    switch p.op {
        case 0u: { return x + y; }
        case 1u: { return x - y; }
        case 2u: { return x * y; }
        default: { return x / y; }
    }
}

@compute @workgroup_size(256)
fn binary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wid, nwg, lid);
    if i >= p.n { return; }
    // Walk the output coordinates from the innermost dimension out.
    var rest = i;
    var ia = 0u;
    var ib = 0u;
    for (var d = i32(p.rank) - 1; d >= 0; d--) {
        let du = u32(d);
        let size = p.out_dims[du / 4u][du % 4u];
        let coord = rest % size;
        rest = rest / size;
        ia += coord * p.a_strides[du / 4u][du % 4u];
        ib += coord * p.b_strides[du / 4u][du % 4u];
    }
    out[i] = T(apply_binary(f32(a[ia]), f32(b[ib])));
}

// GEGLU as diffusers defines it: the first half of the features times GELU(second half).
@compute @workgroup_size(256)
fn geglu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wid, nwg, lid);
    if i >= p.n { return; }
    let row = i / p.half_width;
    let col = i % p.half_width;
    let base = row * 2u * p.half_width;
    let value = f32(a[base + col]);
    let gate = f32(a[base + p.half_width + col]);
    out[i] = T(value * gelu_erf(gate));
}

// SwiGLU: silu(gate) * up, gate in `a` and up in `b` (same shapes).
@compute @workgroup_size(256)
fn swiglu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wid, nwg, lid);
    if i >= p.n { return; }
    let g = f32(a[i]);
    out[i] = T(g * sigmoid(g) * f32(b[i]));
}
