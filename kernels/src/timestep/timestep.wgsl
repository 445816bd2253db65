// Sinusoidal timestep embedding as diffusers' get_timestep_embedding: out[r] = [sin | cos] (or
// [cos | sin] when flipped) of scale * t[r] * exp(-ln(max_period) * j / (half - shift)), plus a zero
// column when the width is odd. One invocation per output element, all in f32.

struct Params {
    n: u32,          // N * dim
    dim: u32,
    half: u32,       // dim / 2
    flip: u32,       // 1: cos first
    neg_log_period: f32, // -ln(max_period)
    denom: f32,      // half - downscale_freq_shift
    scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> t: array<T>;
@group(0) @binding(2) var<storage, read_write> out: array<T>;

// 2 pi split so that k * TWO_PI_HI is exact for |k| < 2^16 (Cody-Waite): the reduced angle is then as
// accurate as the angle itself, and sin/cos only see [-pi, pi], where drivers are accurate.
const TWO_PI_HI: f32 = 6.28125;
const TWO_PI_LO: f32 = 0.0019353071795864769;
const INV_TWO_PI: f32 = 0.15915494309189535;

fn reduce_angle(a: f32) -> f32 {
    let k = round(a * INV_TWO_PI);
    return (a - k * TWO_PI_HI) - k * TWO_PI_LO;
}

@compute @workgroup_size(256)
fn timestep_embed(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if i >= p.n { return; }
    let row = i / p.dim;
    let col = i % p.dim;
    var value = 0.0;
    if col < 2u * p.half {
        let first = col < p.half;
        let j = select(col - p.half, col, first);
        let freq = exp(p.neg_log_period * f32(j) / p.denom);
        let angle = reduce_angle(p.scale * (f32(t[row]) * freq));
        // The first half is sin unless flipped.
        if first == (p.flip != 0u) {
            value = cos(angle);
        } else {
            value = sin(angle);
        }
    }
    out[i] = T(value);
}
