// Argmax over contiguous rows, one workgroup per row: the index of each row's largest value, lowest
// index on ties, as u32. Storage is T (f32 or f16); values are compared as f32.
//
// Each invocation scans a strided share of the row, then a workgroup tree reduction merges the
// (key, index) pairs. Values are compared through an integer key that orders floats as numbers
// (-0 folded into +0), and NaN and infinity are recognised by their bits, so the result is exact
// whatever float shortcuts the shader compiler takes (WGSL lets it assume no NaN or infinity).
//
// NaN follows the host sampler's argmax (a strict `>` scan from index 0): a NaN is never the
// maximum, and a NaN at index 0 is never replaced, so that row's answer is 0. With
// `check_finite`, a row holding any NaN or infinity gives NONE instead (the sampler rejects such
// logits outright).

struct Params {
    rows: u32,
    width: u32,
    check_finite: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

const WG: u32 = 256u;
// As an index: no candidate yet (every value seen was NaN). As a result: a non-finite row.
const NONE: u32 = 0xffffffffu;
const EXPONENT: u32 = 0x7f800000u;
const MANTISSA: u32 = 0x007fffffu;
const SIGN: u32 = 0x80000000u;

var<workgroup> best_key: array<u32, 256>;
var<workgroup> best_idx: array<u32, 256>;
// Set when the row holds a NaN or an infinity.
var<workgroup> non_finite: atomic<u32>;

// Unsigned key in the numeric order of the (non-NaN) float with these bits: positives above
// negatives, larger magnitudes further out; -0 gets +0's key so the two tie as `>` sees them.
fn order_key(bits: u32) -> u32 {
    if bits == SIGN {
        return SIGN;
    }
    if (bits & SIGN) != 0u {
        return ~bits;
    }
    return bits | SIGN;
}

fn is_nan(bits: u32) -> bool {
    return (bits & EXPONENT) == EXPONENT && (bits & MANTISSA) != 0u;
}

@compute @workgroup_size(256)
fn argmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let r = wid.x + wid.y * nwg.x;
    // Uniform across the workgroup, so the barriers inside stay in uniform control flow.
    if r < p.rows {
        let base = r * p.width;
        // Explicitly, rather than trusting the pipeline to zero workgroup memory.
        if lid == 0u {
            atomicStore(&non_finite, 0u);
        }
        workgroupBarrier();
        var key = 0u;
        var idx = NONE;
        for (var i = lid; i < p.width; i += WG) {
            let bits = bitcast<u32>(f32(x[base + i]));
            if (bits & EXPONENT) == EXPONENT {
                atomicOr(&non_finite, 1u);
                if (bits & MANTISSA) != 0u {
                    continue;
                }
            }
            let k = order_key(bits);
            // `i` only grows, so a strict `>` keeps this invocation's lowest index on ties.
            if idx == NONE || k > key {
                key = k;
                idx = i;
            }
        }
        best_key[lid] = key;
        best_idx[lid] = idx;
        workgroupBarrier();
        for (var step = WG / 2u; step > 0u; step = step >> 1u) {
            if lid < step {
                let ka = best_key[lid];
                let ia = best_idx[lid];
                let kb = best_key[lid + step];
                let ib = best_idx[lid + step];
                if ib != NONE && (ia == NONE || kb > ka || (kb == ka && ib < ia)) {
                    best_key[lid] = kb;
                    best_idx[lid] = ib;
                }
            }
            workgroupBarrier();
        }
        if lid == 0u {
            var result = best_idx[0];
            if result == NONE || is_nan(bitcast<u32>(f32(x[base]))) {
                result = 0u;
            }
            if p.check_finite != 0u && atomicLoad(&non_finite) != 0u {
                result = NONE;
            }
            out[r] = result;
        }
    }
}
