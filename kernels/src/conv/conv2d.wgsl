// 2-D convolution (groups 1, dilation 1, zero padding) as an implicit GEMM:
//   C[co, q] = sum over k = (ci, kh, kw) of W[co, k] * X[img, ci, oh*sh + kh - ph, ow*sw + kw - pw]
// where the column q folds (img, oh, ow), so small images still fill whole tiles. Each workgroup owns a
// 64 (output channels) x 64 (columns) tile and walks K in steps of BK: the weight tile is read as a
// plain matrix, the input tile is gathered on the fly (zero outside the image: the padding), both are
// staged in workgroup memory as f32, and each of the 256 invocations accumulates a 4x4 register block.
// The im2col matrix is never materialised. Storage is T; arithmetic is f32. BIAS fuses `+ bias[co]`.
// PACKED: the weight is quantised blocks ([Cout, K] rows, K a whole number of blocks), read through
// quant/blocks.wgsl (prepended to this file for that variant); each K step of 32 then covers one
// q8_0 / q4_0 block or half an nf4 block, unpacked and scaled into the weight tile.

struct Params {
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    wo: u32,
    kh: u32,
    kw: u32,
    k: u32,        // cin * kh * kw, the GEMM depth
    stride_h: u32,
    stride_w: u32,
    pad_h: u32,
    pad_w: u32,
    pixels: u32,   // ho * wo, output pixels per image
    cols: u32,     // n * pixels, GEMM columns
    tiles_m: u32,  // workgroup tiles along output channels
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
#if !PACKED
@group(0) @binding(2) var<storage, read> wt: array<T>;
#endif
#if BIAS
@group(0) @binding(3) var<storage, read> bias: array<T>;
#endif
@group(0) @binding(4) var<storage, read_write> out: array<T>;

const BM: u32 = 64u;
const BN: u32 = 64u;
// [BK][BM / 4] and [BK][BN / 4]: 8 KiB together (16 KiB packed). vec4 rows let the inner loop read 4
// values at once. SETS: groups of 4 input values each invocation gathers per K step.
#if PACKED
const BK: u32 = 32u;
const SETS: u32 = 2u;
var<workgroup> a_tile: array<vec4<f32>, 512>;
var<workgroup> b_tile: array<vec4<f32>, 512>;
#else
const BK: u32 = 16u;
const SETS: u32 = 1u;
var<workgroup> a_tile: array<vec4<f32>, 256>;
var<workgroup> b_tile: array<vec4<f32>, 256>;
#endif

// Fills a_tile[kk][m] = W[m0 + m, k0 + kk] for this K step (zero past Cout or K).
#if PACKED
fn load_weights(m0: u32, k0: u32, lid: u32) {
    // One group of 8 weights per invocation: row `r`, group `g` of the step's 32 k offsets.
    let r = lid / 4u;
    let g = lid % 4u;
    let row = m0 + r;
    let slot = r / 4u;
    let lane = r % 4u;
    if row < p.cout {
        let kin = k0 % BLOCK;  // which 32 weights of a 64- or 256-weight block this step covers
        let blk = row * (p.k / BLOCK) + k0 / BLOCK;
        let d = block_scale(blk);
        let q = group(blk, g + kin / 8u);
        for (var j = 0u; j < 4u; j++) {
            a_tile[(q.k_lo - kin + j) * (BM / 4u) + slot][lane] = d * q.lo[j];
            a_tile[(q.k_hi - kin + j) * (BM / 4u) + slot][lane] = d * q.hi[j];
        }
    } else {
        for (var j = 0u; j < 8u; j++) {
            a_tile[(g * 8u + j) * (BM / 4u) + slot][lane] = 0.0;
        }
    }
}
#else
fn load_weights(m0: u32, k0: u32, lid: u32) {
    // This invocation fills k offset `ak` of rows `am + 16 i`.
    let ak = lid % BK;
    let am = lid / BK;
    let ka = k0 + ak;
    for (var i = 0u; i < 4u; i++) {
        let m = am + 16u * i;
        let row = m0 + m;
        var v = 0.0;
        if row < p.cout && ka < p.k {
            v = f32(wt[row * p.k + ka]);
        }
        a_tile[ak * (BM / 4u) + m / 4u][m % 4u] = v;
    }
}
#endif

@compute @workgroup_size(256)
fn conv2d(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    // Ids past the work (grid folding) get n0 >= cols: their loads read zeros and their writes are skipped.
    let tile = wid.x + wid.y * nwg.x;
    let m0 = (tile % p.tiles_m) * BM;
    let n0 = (tile / p.tiles_m) * BN;

    // Input loads: this invocation always gathers column `bn` (k offsets `bk + 4 i`), so the column's
    // image and output pixel are decoded once.
    let bn = lid % BN;
    let bk = lid / BN;
    let q = n0 + bn;
    let col_ok = q < p.cols;
    let qc = select(0u, q, col_ok);
    let img = qc / p.pixels;
    let pix = qc % p.pixels;
    let ih0 = i32((pix / p.wo) * p.stride_h) - i32(p.pad_h);
    let iw0 = i32((pix % p.wo) * p.stride_w) - i32(p.pad_w);
    let x_img = img * p.cin * p.h * p.w;
    // The k = k0 + bk + 4 i this invocation gathers, as (ci, kh, kw) counters (4 per set) that advance
    // by BK each step with adds and carries instead of two integer divisions per load.
    let khw = p.kh * p.kw;
    var ci: array<vec4<u32>, SETS>;
    var dy: array<vec4<u32>, SETS>;
    var dx: array<vec4<u32>, SETS>;
    for (var s = 0u; s < SETS; s++) {
        let k_init = vec4<u32>(bk, bk + 4u, bk + 8u, bk + 12u) + vec4<u32>(16u * s);
        ci[s] = k_init / khw;
        dy[s] = (k_init % khw) / p.kw;
        dx[s] = k_init % p.kw;
    }
    let step_ci = BK / khw;
    let step_dy = (BK % khw) / p.kw;
    let step_dx = BK % p.kw;

    // Compute: this invocation owns rows 4 ty .. 4 ty + 3 and columns 4 tx .. 4 tx + 3 of the tile.
    let tx = lid % 16u;
    let ty = lid / 16u;
    var acc: array<vec4<f32>, 4>;

    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        load_weights(m0, k0, lid);
        for (var s = 0u; s < SETS; s++) {
            for (var i = 0u; i < 4u; i++) {
                let kk = bk + 4u * i + 16u * s;
                let kb = k0 + kk;
                var v = 0.0;
                if col_ok && kb < p.k {
                    let ih = ih0 + i32(dy[s][i]);
                    let iw = iw0 + i32(dx[s][i]);
                    if ih >= 0 && ih < i32(p.h) && iw >= 0 && iw < i32(p.w) {
                        v = f32(x[x_img + (ci[s][i] * p.h + u32(ih)) * p.w + u32(iw)]);
                    }
                }
                b_tile[kk * (BN / 4u) + bn / 4u][bn % 4u] = v;
            }
            // k += BK in mixed radix (ci, kh, kw): each digit overflows at most once.
            dx[s] += vec4<u32>(step_dx);
            let carry_x = dx[s] >= vec4<u32>(p.kw);
            dx[s] = select(dx[s], dx[s] - vec4<u32>(p.kw), carry_x);
            dy[s] += vec4<u32>(step_dy) + select(vec4<u32>(0u), vec4<u32>(1u), carry_x);
            let carry_y = dy[s] >= vec4<u32>(p.kh);
            dy[s] = select(dy[s], dy[s] - vec4<u32>(p.kh), carry_y);
            ci[s] += vec4<u32>(step_ci) + select(vec4<u32>(0u), vec4<u32>(1u), carry_y);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            let a = a_tile[kk * (BM / 4u) + ty];
            let b = b_tile[kk * (BN / 4u) + tx];
            acc[0] += a.x * b;
            acc[1] += a.y * b;
            acc[2] += a.z * b;
            acc[3] += a.w * b;
        }
        workgroupBarrier();
    }

    for (var i = 0u; i < 4u; i++) {
        let row = m0 + 4u * ty + i;
        if row < p.cout {
#if BIAS
            let b = f32(bias[row]);
#else
            let b = 0.0;
#endif
            for (var j = 0u; j < 4u; j++) {
                let col = n0 + 4u * tx + j;
                if col < p.cols {
                    let o = (col / p.pixels) * p.cout * p.pixels + row * p.pixels + col % p.pixels;
                    out[o] = T(acc[i][j] + b);
                }
            }
        }
    }
}
