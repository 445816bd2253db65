// Rotary position embedding on x [B, L, H, D]: one invocation per rotated pair. Token l sits at
// position offset + l (`rope_pairs`) or positions[l] (`rope_at`); pair j turns by
// position * theta^(-2j/D), computed here in f32 (no table). `rope_table` instead reads pair j of
// token l's cosine and sine from the caller's [L, D/2] tables (angles that are not one position
// times one frequency, e.g. Pixtral's 2-D RoPE).

struct Params {
    n: u32,           // pairs: B * L * H * D / 2
    seq_len: u32,     // L
    heads: u32,       // H
    half: u32,        // D / 2
    offset: u32,      // position of token 0 (rope_pairs only)
    interleaved: u32, // 0: pairs (j, j + D/2) as rotate_half; 1: pairs (2j, 2j + 1)
    freq_step: f32,   // -2 log2(theta) / D, so that inv_freq[j] = exp2(j * freq_step) (not rope_table)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read_write> out: array<T>;
// rope_at: one position per token, [L].
@group(0) @binding(3) var<storage, read> positions: array<u32>;
// rope_table: cos and sin of each (token, pair) angle, [L, D/2], always f32.
@group(0) @binding(4) var<storage, read> cos_table: array<f32>;
@group(0) @binding(5) var<storage, read> sin_table: array<f32>;

// 2 pi split so that k * TWO_PI_HI is exact for |k| < 2^16 (Cody-Waite): the reduced angle is then as
// accurate as the angle itself, and sin/cos only see [-pi, pi], where drivers are accurate.
const TWO_PI_HI: f32 = 6.28125;
const TWO_PI_LO: f32 = 0.0019353071795864769;
const INV_TWO_PI: f32 = 0.15915494309189535;

fn reduce_angle(a: f32) -> f32 {
    let k = round(a * INV_TWO_PI);
    return (a - k * TWO_PI_HI) - k * TWO_PI_LO;
}

// Rotates pair i (of all B * L * H * D / 2) as its token's `position` says.
fn rotate_pair(i: u32, position: u32) {
    let inv_freq = exp2(f32(i % p.half) * p.freq_step);
    let angle = reduce_angle(f32(position) * inv_freq);
    rotate_by(i, cos(angle), sin(angle));
}

// Rotates pair i by the angle whose cosine and sine are c and s.
fn rotate_by(i: u32, c: f32, s: f32) {
    let j = i % p.half;
    let base = (i / p.half) * 2u * p.half;
    var i0 = base + j;
    var i1 = base + j + p.half;
    if p.interleaved != 0u {
        i0 = base + 2u * j;
        i1 = i0 + 1u;
    }
    let a = f32(x[i0]);
    let b = f32(x[i1]);
    out[i0] = T(a * c - b * s);
    out[i1] = T(b * c + a * s);
}

// Token of pair i: rows are (b, l, h) flattened.
fn token(i: u32) -> u32 {
    return (i / p.half / p.heads) % p.seq_len;
}

@compute @workgroup_size(256)
fn rope_pairs(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if i >= p.n { return; }
    rotate_pair(i, p.offset + token(i));
}

@compute @workgroup_size(256)
fn rope_at(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if i >= p.n { return; }
    rotate_pair(i, positions[token(i)]);
}

@compute @workgroup_size(256)
fn rope_table(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if i >= p.n { return; }
    let at = token(i) * p.half + i % p.half;
    rotate_by(i, cos_table[at], sin_table[at]);
}
