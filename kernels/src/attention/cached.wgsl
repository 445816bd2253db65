// Attention of L query rows over the first kv_len rows of a KV cache ([capacity, Hkv, D]), one
// sequence: q and out are [L, Hq, D], query row l sits at position kv_len - L + l and sees key j iff
// j <= pos and, with a sliding window w > 0, pos - j < w.
//
// The query rows of one kv head are its `group` query heads times the L positions, ordered
// r = l * group + g, so a block of BQ rows spans few positions (a tight causal key range) and every
// head of the GQA group shares the key/value tiles staged for it. A workgroup owns one block of rows,
// one kv head and one chunk of keys, which it walks in tiles of BK with an online softmax as
// attention.wgsl does (running max and sum per row, output accumulators in registers).
//
// `attend` with SPLIT (decode, flash-decoding): many chunks per kv head, so a long cache spreads over
// many workgroups even for one query row; each writes its unnormalised partial (max, sum, acc) and
// `combine` merges the chunks of every row. Without SPLIT (prefill): one chunk, output written
// directly.
//
// Compiled with f16 enabled when q or the cache is f16; Q_F16 and KV_F16 pick their element types
// (the prelude's T is unused), so an f16 cache serves f32 activations without a conversion pass.
// Everything is computed in f32. Defines: HEAD_DIM (head dim rounded up to a multiple of 8), BQ, BK
// (tile sizes, as attention.wgsl), SPLIT.

struct Params {
    l: u32,          // query rows
    kv_len: u32,     // cache rows in use
    hq: u32,
    hkv: u32,
    d: u32,          // the real head dim, <= HEAD_DIM
    group: u32,      // query heads per kv head
    rows: u32,       // group * l: query rows per kv head
    row_blocks: u32, // ceil(rows / BQ)
    chunks: u32,     // key chunks per kv head
    chunk_len: u32,  // keys per chunk
    groups: u32,     // workgroups with work: hkv * chunks * row_blocks
    window: u32,     // sliding window; 0 = none
    scale: f32,
}

#if Q_F16
alias QT = f16;
#else
alias QT = f32;
#endif
#if KV_F16
alias KT = f16;
#else
alias KT = f32;
#endif

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<QT>;
@group(0) @binding(2) var<storage, read> k: array<KT>;
@group(0) @binding(3) var<storage, read> v: array<KT>;
@group(0) @binding(4) var<storage, read_write> out: array<QT>;
// SPLIT: per (kv head, chunk, row) the unnormalised accumulator [D] and [max, sum].
@group(0) @binding(5) var<storage, read_write> part_acc: array<f32>;
@group(0) @binding(6) var<storage, read_write> part_ml: array<f32>;

const WG: u32 = 64u;
const TPR: u32 = WG / BQ;        // invocations sharing one query row
const DPT: u32 = HEAD_DIM / TPR; // output columns each owns (t, t + TPR, ...)
const KS: u32 = HEAD_DIM + 1u;   // K/V tile row stride, padded against bank conflicts
const MASKED: f32 = -3.0e38;     // the score of an invisible key: finite, far below real scores
const SEEN: f32 = -1.0e38;

var<workgroup> q_tile: array<f32, BQ * HEAD_DIM>; // pre-scaled queries, zero past d and rows
var<workgroup> kv_tile: array<f32, BK * KS>;
var<workgroup> scores: array<f32, BQ * BK>;

fn kv_value(from_v: bool, i: u32) -> f32 {
    if from_v {
        return f32(v[i]);
    }
    return f32(k[i]);
}

// Stages keys or values [k0, k0 + BK) of kv head `hk`, zero at or past k_end and past d.
fn stage_kv(from_v: bool, hk: u32, k0: u32, k_end: u32, lid: u32) {
    for (var e = lid; e < BK * HEAD_DIM; e += WG) {
        let j = e / HEAD_DIM;
        let c = e % HEAD_DIM;
        var x = 0.0;
        if k0 + j < k_end && c < p.d {
            x = kv_value(from_v, ((k0 + j) * p.hkv + hk) * p.d + c);
        }
        kv_tile[j * KS + c] = x;
    }
}

// Position in the cache of query row r (of a kv head's rows).
fn position(r: u32) -> u32 {
    return p.kv_len - p.l + r / p.group;
}

// Index of row r's first element in q and out.
fn q_index(hk: u32, r: u32) -> u32 {
    return ((r / p.group) * p.hq + hk * p.group + r % p.group) * p.d;
}

@compute @workgroup_size(64)
fn attend(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    // Everything up to the tile loop depends only on the workgroup, so the loop bound and every
    // barrier are uniform. Spare workgroups of the grid run no tiles and write nothing.
    let g = wid.x + wid.y * nwg.x;
    let live = g < p.groups;
    let gl = select(0u, g, live);
    let rb = gl % p.row_blocks;
    let ch = (gl / p.row_blocks) % p.chunks;
    let hk = gl / (p.row_blocks * p.chunks);
    let r0 = rb * BQ;
    let r_last = min(r0 + BQ, p.rows) - 1u;
    // Keys some row of the block may see, within this chunk: up to the last row's position, and with
    // a window from the first row's position - window + 1.
    var k_begin = ch * p.chunk_len;
    var k_end = min(k_begin + p.chunk_len, min(p.kv_len, position(r_last) + 1u));
    if p.window != 0u {
        k_begin = max(k_begin, (position(r0) + 1u) - min(position(r0) + 1u, p.window));
    }
    if !live {
        k_end = 0u;
    }

    for (var e = lid; e < BQ * HEAD_DIM; e += WG) {
        let r = r0 + e / HEAD_DIM;
        let c = e % HEAD_DIM;
        var x = 0.0;
        if live && r < p.rows && c < p.d {
            x = f32(q[q_index(hk, r) + c]) * p.scale;
        }
        q_tile[e] = x;
    }

    let i = lid / TPR; // this invocation's row of the block
    let t = lid % TPR;
    var m = MASKED;
    var l = 0.0;
    var acc: array<f32, DPT>;

    for (var k0 = k_begin; k0 < k_end; k0 += BK) {
        stage_kv(false, hk, k0, k_end, lid);
        workgroupBarrier();
        for (var s = lid; s < BQ * BK; s += WG) {
            let si = s / BK;
            let kj = k0 + s % BK;
            let r = r0 + si;
            var score = MASKED;
            if r < p.rows && kj < k_end {
                let pos = position(r);
                if kj <= pos && (p.window == 0u || pos - kj < p.window) {
                    var dot = 0.0;
                    for (var c = 0u; c < HEAD_DIM; c++) {
                        dot += q_tile[si * HEAD_DIM + c] * kv_tile[(s % BK) * KS + c];
                    }
                    score = dot;
                }
            }
            scores[s] = score;
        }
        workgroupBarrier();
        stage_kv(true, hk, k0, k_end, lid);
        workgroupBarrier();

        // Every invocation of a row repeats the row's max and sum, so none waits for another.
        var tile_max = MASKED;
        for (var j = 0u; j < BK; j++) {
            tile_max = max(tile_max, scores[i * BK + j]);
        }
        let m_new = max(m, tile_max);
        if m_new > SEEN {
            let alpha = exp(m - m_new);
            l *= alpha;
            for (var x = 0u; x < DPT; x++) {
                acc[x] *= alpha;
            }
            for (var j = 0u; j < BK; j++) {
                let s = scores[i * BK + j];
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

    let r = r0 + i;
    if live && r < p.rows {
#if SPLIT
        // Written even when the chunk held no visible key (max MASKED, sum 0), so combine reads
        // defined values for every chunk.
        let slot = (hk * p.chunks + ch) * p.rows + r;
        if t == 0u {
            part_ml[2u * slot] = m;
            part_ml[2u * slot + 1u] = l;
        }
        for (var x = 0u; x < DPT; x++) {
            let c = t + x * TPR;
            if c < p.d {
                part_acc[slot * p.d + c] = acc[x];
            }
        }
#else
        // Every row sees at least the key at its own position, so l > 0; guarded anyway.
        let inv = select(0.0, 1.0 / l, l > 0.0);
        let base = q_index(hk, r);
        for (var x = 0u; x < DPT; x++) {
            let c = t + x * TPR;
            if c < p.d {
                out[base + c] = QT(acc[x] * inv);
            }
        }
#endif
    }
}

// Merges the chunks' partials: one invocation per output element (kv head, row, column).
@compute @workgroup_size(256)
fn combine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let e = (wid.x + wid.y * nwg.x) * 256u + lid;
    if e >= p.hkv * p.rows * p.d {
        return;
    }
    let c = e % p.d;
    let r = (e / p.d) % p.rows;
    let hk = e / (p.d * p.rows);
    var m = MASKED;
    for (var ch = 0u; ch < p.chunks; ch++) {
        m = max(m, part_ml[2u * ((hk * p.chunks + ch) * p.rows + r)]);
    }
    var l = 0.0;
    var acc = 0.0;
    if m > SEEN {
        for (var ch = 0u; ch < p.chunks; ch++) {
            let slot = (hk * p.chunks + ch) * p.rows + r;
            // A chunk with no visible key has max MASKED: its weight underflows to 0.
            let w = exp(part_ml[2u * slot] - m);
            l += w * part_ml[2u * slot + 1u];
            acc += w * part_acc[slot * p.d + c];
        }
    }
    out[q_index(hk, r) + c] = QT(select(0.0, acc / l, l > 0.0));
}
