// Nearest-neighbour upsampling over the last two dimensions of [.., H, W], one invocation per
// output element (a plain copy of T). The source index follows PyTorch's `nearest_idx`: identity for
// equal sizes, o >> 1 for exactly twice the size, else min(floor(o * scale), in - 1) in f32.

struct Params {
    n: u32,        // output elements
    h: u32,        // input height
    w: u32,        // input width
    ho: u32,       // output height
    wo: u32,       // output width
    scale_h: f32,
    scale_w: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read_write> out: array<T>;

fn source(o: u32, input: u32, output: u32, scale: f32) -> u32 {
    if output == input { return o; }
    if output == 2u * input { return o >> 1u; }
    return min(u32(floor(f32(o) * scale)), input - 1u);
}

@compute @workgroup_size(256)
fn upsample_nearest(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if i >= p.n { return; }
    let ow = i % p.wo;
    let rest = i / p.wo;
    let oh = rest % p.ho;
    let plane = rest / p.ho;
    let ih = source(oh, p.h, p.ho, p.scale_h);
    let iw = source(ow, p.w, p.wo, p.scale_w);
    out[i] = x[(plane * p.h + ih) * p.w + iw];
}
