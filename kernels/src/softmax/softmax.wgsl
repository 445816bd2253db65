// Softmax of `scale * x` over contiguous rows, one workgroup per row. Storage is T (f32 or f16);
// arithmetic is f32.
//
// Each invocation keeps an online (running max, sum of exp relative to it) over its strided share of
// the row, so the row is read twice (statistics, then output) rather than three times; the pairs are
// merged by a workgroup tree reduction. Subtracting the row max keeps exp() from overflowing.

struct Params {
    rows: u32,
    width: u32,
    scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read_write> out: array<T>;

const WG: u32 = 256u;
// Stands in for -infinity, which WGSL has no literal for.
const LOWEST: f32 = -3.402823e38;

var<workgroup> row_max: array<f32, 256>;
var<workgroup> row_sum: array<f32, 256>;

@compute @workgroup_size(256)
fn softmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let r = wid.x + wid.y * nwg.x;
    // Uniform across the workgroup, so the barriers inside stay in uniform control flow.
    if r < p.rows {
        let base = r * p.width;
        var m = LOWEST;
        var s = 0.0;
        for (var i = lid; i < p.width; i += WG) {
            let v = p.scale * f32(x[base + i]);
            if v > m {
                s = s * exp(m - v) + 1.0;
                m = v;
            } else {
                s += exp(v - m);
            }
        }
        row_max[lid] = m;
        row_sum[lid] = s;
        workgroupBarrier();
        for (var step = WG / 2u; step > 0u; step = step >> 1u) {
            if lid < step {
                let m1 = row_max[lid];
                let m2 = row_max[lid + step];
                let mm = max(m1, m2);
                row_sum[lid] = row_sum[lid] * exp(m1 - mm) + row_sum[lid + step] * exp(m2 - mm);
                row_max[lid] = mm;
            }
            workgroupBarrier();
        }
        let mx = row_max[0];
        let inv = 1.0 / row_sum[0];
        for (var i = lid; i < p.width; i += WG) {
            out[base + i] = T(exp(p.scale * f32(x[base + i]) - mx) * inv);
        }
    }
}
