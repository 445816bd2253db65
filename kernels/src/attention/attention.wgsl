// Flash attention: softmax(q kᵀ * scale + masks) v on [B, L, H, D] tensors, without ever holding the
// Lq x Lk score matrix. A workgroup owns BQ query rows of one (batch, query head) and walks the keys
// in tiles of BK staged through workgroup memory. Per row it keeps a running max and sum (online
// softmax), rescaling the output accumulator, which lives in registers, whenever the max grows.
// Storage is T (f32 or f16); everything is computed in f32.
//
// Defines: HEAD_DIM (the head dim rounded up to a multiple of 8: it sizes the arrays), BQ and BK
// (tile sizes, chosen by the launcher to fit 16 KiB of workgroup memory), MASK (a key padding mask
// is bound).

struct Params {
    lq: u32,
    lk: u32,
    hq: u32,
    hkv: u32,
    d: u32,        // the real head dim, <= HEAD_DIM
    group: u32,    // query heads per key/value head
    q_blocks: u32, // ceil(lq / BQ)
    groups: u32,   // workgroups with work: batch * hq * q_blocks
    causal: u32,   // query i sees key j iff j + lq <= i + lk
    scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<T>;
@group(0) @binding(2) var<storage, read> k: array<T>;
@group(0) @binding(3) var<storage, read> v: array<T>;
@group(0) @binding(4) var<storage, read_write> out: array<T>;
#if MASK
@group(0) @binding(5) var<storage, read> key_mask: array<u32>; // [B, Lk], 0 = padding
#endif

const WG: u32 = 64u;
const TPR: u32 = WG / BQ;        // invocations sharing one query row
const DPT: u32 = HEAD_DIM / TPR; // output columns each of them owns (columns t, t + TPR, ...)
const KS: u32 = HEAD_DIM + 1u;   // K/V tile row stride, one word of padding against bank conflicts
// The score of a key a row cannot see. Finite, so no inf arithmetic is needed; real scores are far
// above SEEN.
const MASKED: f32 = -3.0e38;
const SEEN: f32 = -1.0e38;

var<workgroup> q_tile: array<f32, BQ * HEAD_DIM>; // pre-scaled queries, zero past d and lq
var<workgroup> kv_tile: array<f32, BK * KS>;      // the keys, then the values, of one tile
var<workgroup> scores: array<f32, BQ * BK>;

fn kv_value(from_v: bool, i: u32) -> f32 {
    if from_v {
        return f32(v[i]);
    }
    return f32(k[i]);
}

// Stages keys or values [k0, k0 + BK) of one kv head, zero past lk and past d.
fn stage_kv(from_v: bool, base: u32, row_stride: u32, k0: u32, lid: u32) {
    for (var e = lid; e < BK * HEAD_DIM; e += WG) {
        let j = e / HEAD_DIM;
        let c = e % HEAD_DIM;
        var x = 0.0;
        if k0 + j < p.lk && c < p.d {
            x = kv_value(from_v, base + (k0 + j) * row_stride + c);
        }
        kv_tile[j * KS + c] = x;
    }
}

@compute @workgroup_size(64)
fn flash_attention(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    // Everything up to the tile loop depends only on the workgroup, so the loop bound (and with it
    // every barrier) is uniform. Spare workgroups of the grid run no tiles and write nothing.
    let g = wid.x + wid.y * nwg.x;
    let live = g < p.groups;
    let gl = select(0u, g, live);
    let qb = gl % p.q_blocks;
    let h = (gl / p.q_blocks) % p.hq;
    let b = gl / (p.q_blocks * p.hq);
    let hk = h / p.group;
    let q0 = qb * BQ;
    let q_end = min(q0 + BQ, p.lq);
    // Keys some row of the block may see: with the causal mask, up to (q_end - 1) + lk - lq.
    var k_end = select(0u, p.lk, live);
    if p.causal != 0u {
        k_end = select(0u, min(k_end, q_end + p.lk - p.lq), q_end + p.lk > p.lq);
    }

    for (var e = lid; e < BQ * HEAD_DIM; e += WG) {
        let i = q0 + e / HEAD_DIM;
        let c = e % HEAD_DIM;
        var x = 0.0;
        if live && i < p.lq && c < p.d {
            x = f32(q[((b * p.lq + i) * p.hq + h) * p.d + c]) * p.scale;
        }
        q_tile[e] = x;
    }

    let r = lid / TPR; // this invocation's row of the block
    let t = lid % TPR;
    var m = MASKED;    // running max of the row's scores
    var l = 0.0;       // running sum of exp(score - m)
    var acc: array<f32, DPT>;
    let kv_stride = p.hkv * p.d;
    let kv_base = b * p.lk * kv_stride + hk * p.d;

    for (var k0 = 0u; k0 < k_end; k0 += BK) {
        stage_kv(false, kv_base, kv_stride, k0, lid);
        workgroupBarrier();
        for (var s = lid; s < BQ * BK; s += WG) {
            let i = s / BK;
            let j = s % BK;
            let qi = q0 + i;
            let kj = k0 + j;
            var visible = qi < p.lq && kj < k_end;
            if p.causal != 0u {
                visible = visible && kj + p.lq <= qi + p.lk;
            }
#if MASK
            if visible {
                visible = key_mask[b * p.lk + kj] != 0u;
            }
#endif
            var score = MASKED;
            if visible {
                var dot = 0.0;
                for (var c = 0u; c < HEAD_DIM; c++) {
                    dot += q_tile[i * HEAD_DIM + c] * kv_tile[j * KS + c];
                }
                score = dot;
            }
            scores[s] = score;
        }
        workgroupBarrier();
        stage_kv(true, kv_base, kv_stride, k0, lid);
        workgroupBarrier();

        // Every invocation of a row repeats the row's max and sum, so none has to wait for another.
        var tile_max = MASKED;
        for (var j = 0u; j < BK; j++) {
            tile_max = max(tile_max, scores[r * BK + j]);
        }
        let m_new = max(m, tile_max);
        if m_new > SEEN {
            let alpha = exp(m - m_new); // 0 while nothing was seen before
            l *= alpha;
            for (var x = 0u; x < DPT; x++) {
                acc[x] *= alpha;
            }
            for (var j = 0u; j < BK; j++) {
                let s = scores[r * BK + j];
                if s > SEEN {
                    let w = exp(s - m_new);
                    l += w;
                    let row = j * KS + t;
                    for (var x = 0u; x < DPT; x++) {
                        acc[x] += w * kv_tile[row + x * TPR];
                    }
                }
            }
            m = m_new;
        }
        workgroupBarrier();
    }

    // A row that saw no key has l = 0 and writes zeros.
    let qi = q0 + r;
    if live && qi < p.lq {
        let inv = select(0.0, 1.0 / l, l > 0.0);
        let base = ((b * p.lq + qi) * p.hq + h) * p.d;
        for (var x = 0u; x < DPT; x++) {
            let c = t + x * TPR;
            if c < p.d {
                out[base + c] = T(acc[x] * inv);
            }
        }
    }
}
