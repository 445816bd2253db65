// Nearest-neighbour upsampling by an integer factor over the last two dimensions of [.., H, W]:
// out[.., oh, ow] = x[.., oh / f, ow / f], one invocation per output element (a plain copy of T).

struct Params {
    n: u32,       // output elements
    h: u32,       // input height
    w: u32,       // input width
    factor: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read_write> out: array<T>;

@compute @workgroup_size(256)
fn upsample_nearest(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if i >= p.n { return; }
    let wo = p.w * p.factor;
    let ho = p.h * p.factor;
    let ow = i % wo;
    let rest = i / wo;
    let oh = rest % ho;
    let plane = rest / ho;
    out[i] = x[(plane * p.h + oh / p.factor) * p.w + ow / p.factor];
}
