// Normalisation over contiguous rows: GroupNorm (a row is one (sample, group): C/groups channels times
// the spatial size), LayerNorm (GroupNorm with one group per row and one element per channel) and
// RMSNorm (alone or fused with a residual add). Storage is T (f32 or f16); statistics and arithmetic
// are f32.
//
// Short rows: one workgroup per row (`norm`, `rms_norm`). Long rows (big GroupNorm groups with few
// rows): `norm_stats` gives each (row, chunk) its own workgroup, `norm_finish` merges the chunks of a
// row, and `norm_apply` normalises elementwise, so a few huge groups still fill the GPU.
//
// Sums are taken relative to a shift (the row's or chunk's first element) and the variance is a second
// pass over squared deviations from the mean, so large means do not eat the f32 precision.

struct Params {
    rows: u32,    // normalised rows in all
    width: u32,   // elements per row
    spatial: u32, // consecutive elements sharing one channel (1 for layer and RMS norm)
    groups: u32,  // rows per sample: a row's first channel is (row % groups) * cpg
    cpg: u32,     // channels per row
    chunk: u32,   // split path: elements per chunk
    chunks: u32,  // split path: chunks per row
    eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
#if WEIGHT
@group(0) @binding(2) var<storage, read> weight: array<T>;
#endif
#if BIAS
@group(0) @binding(3) var<storage, read> bias: array<T>;
#endif
@group(0) @binding(4) var<storage, read_write> out: array<T>;
// Split path: per (row, chunk) [mean, sum of squared deviations], then per row [mean, rstd].
@group(0) @binding(5) var<storage, read_write> partials: array<f32>;
@group(0) @binding(6) var<storage, read_write> stats: array<f32>;
// add_rms_norm: the residual added to x, and that sum written out.
@group(0) @binding(7) var<storage, read> residual: array<T>;
@group(0) @binding(8) var<storage, read_write> sum_out: array<T>;

const WG: u32 = 256u;

var<workgroup> scratch: array<f32, 256>;

// Sum over the workgroup. Call from uniform control flow only.
fn workgroup_sum(v: f32, lid: u32) -> f32 {
    scratch[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if lid < s {
            scratch[lid] += scratch[lid + s];
        }
        workgroupBarrier();
    }
    let total = scratch[0];
    // Nobody may overwrite scratch for the next reduction before everyone has read the total.
    workgroupBarrier();
    return total;
}

// Affine and activation for element `i` of row `r`, already normalised to `v`.
fn epilogue(v: f32, r: u32, i: u32) -> f32 {
    var y = v;
    let c = (r % p.groups) * p.cpg + i / p.spatial;
#if WEIGHT
    y = y * f32(weight[c]);
#endif
#if BIAS
    y = y + f32(bias[c]);
#endif
#if SILU
    y = y / (1.0 + exp(-y));
#endif
    return y;
}

// Mean and sum of squared deviations of x[start .. start + len), by two passes.
fn range_moments(start: u32, len: u32, lid: u32) -> vec2<f32> {
    let shift = f32(x[start]);
    var s = 0.0;
    for (var i = lid; i < len; i += WG) {
        s += f32(x[start + i]) - shift;
    }
    let mean = shift + workgroup_sum(s, lid) / f32(len);
    var q = 0.0;
    for (var i = lid; i < len; i += WG) {
        let d = f32(x[start + i]) - mean;
        q += d * d;
    }
    return vec2<f32>(mean, workgroup_sum(q, lid));
}

@compute @workgroup_size(256)
fn norm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let r = wid.x + wid.y * nwg.x;
    // Uniform across the workgroup, so the barriers inside stay in uniform control flow.
    if r < p.rows {
        let base = r * p.width;
        let m = range_moments(base, p.width, lid);
        let rstd = inverseSqrt(m.y / f32(p.width) + p.eps);
        for (var i = lid; i < p.width; i += WG) {
            out[base + i] = T(epilogue((f32(x[base + i]) - m.x) * rstd, r, i));
        }
    }
}

@compute @workgroup_size(256)
fn rms_norm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let r = wid.x + wid.y * nwg.x;
    if r < p.rows {
        let base = r * p.width;
        var q = 0.0;
        for (var i = lid; i < p.width; i += WG) {
            let v = f32(x[base + i]);
            q += v * v;
        }
        let rstd = inverseSqrt(workgroup_sum(q, lid) / f32(p.width) + p.eps);
        for (var i = lid; i < p.width; i += WG) {
            out[base + i] = T(epilogue(f32(x[base + i]) * rstd, r, i));
        }
    }
}

// RMSNorm of x + residual, also writing the sum (rounded to T first, so both outputs are exactly
// add() then rms_norm()). The second pass recomputes the sum rather than reading it back.
@compute @workgroup_size(256)
fn add_rms_norm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let r = wid.x + wid.y * nwg.x;
    if r < p.rows {
        let base = r * p.width;
        var q = 0.0;
        for (var i = lid; i < p.width; i += WG) {
            let s = T(f32(x[base + i]) + f32(residual[base + i]));
            sum_out[base + i] = s;
            let v = f32(s);
            q += v * v;
        }
        let rstd = inverseSqrt(workgroup_sum(q, lid) / f32(p.width) + p.eps);
        for (var i = lid; i < p.width; i += WG) {
            let v = f32(T(f32(x[base + i]) + f32(residual[base + i])));
            out[base + i] = T(epilogue(v * rstd, r, i));
        }
    }
}

// Split path, step 1: one workgroup per (row, chunk).
@compute @workgroup_size(256)
fn norm_stats(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let id = wid.x + wid.y * nwg.x;
    if id < p.rows * p.chunks {
        let r = id / p.chunks;
        let start = (id % p.chunks) * p.chunk;
        let len = min(p.chunk, p.width - start);
        let m = range_moments(r * p.width + start, len, lid);
        if lid == 0u {
            partials[2u * id] = m.x;
            partials[2u * id + 1u] = m.y;
        }
    }
}

// Split path, step 2: one invocation per row merges its chunks (exactly: the squared deviations about
// the row mean are each chunk's own plus its size times its mean's squared offset).
@compute @workgroup_size(256)
fn norm_finish(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let r = (wid.x + wid.y * nwg.x) * WG + lid;
    if r >= p.rows {
        return;
    }
    let first = r * p.chunks;
    let shift = partials[2u * first];
    var s = 0.0;
    for (var k = 0u; k < p.chunks; k++) {
        let len = f32(min(p.chunk, p.width - k * p.chunk));
        s += len * (partials[2u * (first + k)] - shift);
    }
    let mean = shift + s / f32(p.width);
    var q = 0.0;
    for (var k = 0u; k < p.chunks; k++) {
        let len = f32(min(p.chunk, p.width - k * p.chunk));
        let d = partials[2u * (first + k)] - mean;
        q += partials[2u * (first + k) + 1u] + len * d * d;
    }
    stats[2u * r] = mean;
    stats[2u * r + 1u] = inverseSqrt(q / f32(p.width) + p.eps);
}

// Split path, step 3: elementwise normalisation and epilogue.
@compute @workgroup_size(256)
fn norm_apply(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if i >= p.rows * p.width {
        return;
    }
    let r = i / p.width;
    let v = (f32(x[i]) - stats[2u * r]) * stats[2u * r + 1u];
    out[i] = T(epilogue(v, r, i % p.width));
}
