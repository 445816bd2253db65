//! The GPU command path's caches and counters on a real device: a repeated step reuses every bind
//! group and is one submission; a recycled or destroyed buffer never meets a stale bind group; the
//! parameters of many launches sharing one bind group stay apart; per-pass and per-dispatch timing.
//! Each test opens a private device so its counters and buffer ids see only its own work.

use kiln_kernels::elementwise::{add, silu, unary, Unary};
use kiln_kernels::matmul::{matmul, MatmulOptions};
use kiln_kernels::testing::{assert_close, gpu, Rng};
use kiln_runtime::gpu::{BufferArg, Dispatch, GpuContext, GpuOptions};
use kiln_runtime::preprocess::{KernelSource, Variant};
use kiln_runtime::{DType, Device, Tensor};
use std::sync::Arc;

fn private_device() -> Option<(Device, Arc<GpuContext>)> {
    let Some(Device::Gpu(shared)) = gpu() else {
        return None;
    };
    let device = Device::open_gpu(shared.index(), GpuOptions::default()).unwrap();
    let Device::Gpu(ctx) = &device else {
        unreachable!()
    };
    let ctx = ctx.clone();
    Some((device, ctx))
}

/// A small model-like step: upload, a few ops whose intermediates are dropped, read back.
fn step(device: &Device, x: &[f32], w: &Tensor) -> Vec<f32> {
    let x = Tensor::from_f32(device, &[6, 20], DType::F32, x).unwrap();
    let h = matmul(&x, w, MatmulOptions::default()).unwrap();
    let h = silu(&h).unwrap();
    let h = add(&h, &h).unwrap();
    let h = unary(&h, Unary::Scale { mul: 0.5, add: 1.0 }).unwrap();
    h.to_vec_f32().unwrap()
}

#[test]
fn a_repeated_step_reuses_every_bind_group_in_one_submission() {
    let Some((device, ctx)) = private_device() else {
        return;
    };
    let mut rng = Rng::new(11);
    let wv = rng.normals(20 * 12);
    let w = Tensor::from_f32(&device, &[20, 12], DType::F32, &wv).unwrap();
    let w_cpu = Tensor::from_f32(&Device::Cpu, &[20, 12], DType::F32, &wv).unwrap();

    let x1 = rng.normals(6 * 20);
    let first = step(&device, &x1, &w);
    let before = ctx.stats().unwrap();
    // New input values, same shapes: the buffers recur, so must the bind groups.
    let x2 = rng.normals(6 * 20);
    let second = step(&device, &x2, &w);
    let d = ctx.stats().unwrap() - before;

    assert!(d.dispatches >= 4, "{d:?}");
    assert_eq!(
        d.bind_groups_created, 0,
        "second step created bind groups: {d:?}"
    );
    assert_eq!(d.bind_groups_reused, d.dispatches, "{d:?}");
    assert_eq!((d.submissions, d.passes), (1, 1), "{d:?}");
    assert!(d.record_nanos > 0 && d.submit_nanos > 0, "{d:?}");

    // Cached bind groups bound the right (new) data: both runs match the CPU.
    for (x, got) in [(&x1, &first), (&x2, &second)] {
        let want = step(&Device::Cpu, x, &w_cpu);
        assert_close("step", got, &want, 1e-5, 1e-4);
    }
}

/// Writes the bound length of `out` (in elements) plus a parameter into every element: what a kernel
/// sees through `arrayLength`, so a bind group with a stale size would show.
static LENGTH_PROBE: KernelSource = KernelSource {
    file: "length_probe_for_test.wgsl",
    source: "
struct Params { add: f32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let n = arrayLength(&out);
    if (id.x < n) { out[id.x] = f32(n) + params.add; }
}
",
};

/// Every element equals `want` (reported by the first element off, not the whole buffer).
fn assert_all(t: &Tensor, want: f32) {
    let v = t.to_vec_f32().unwrap();
    if let Some(bad) = v.iter().position(|&x| x != want) {
        panic!("element {bad} is {}, want {want}", v[bad]);
    }
}

fn probe(ctx: &GpuContext, out: &Tensor, add: f32) {
    ctx.dispatch(Dispatch {
        op: "length probe",
        kernel: &LENGTH_PROBE,
        entry: "main",
        variant: Variant::new(DType::F32),
        params: &add.to_le_bytes(),
        buffers: &[BufferArg::new(1, "out", out)],
        workgroups: [(out.numel() as u32).div_ceil(64), 1, 1],
    })
    .unwrap();
}

#[test]
fn a_recycled_buffer_of_another_size_gets_its_own_bind_group() {
    let Some((device, ctx)) = private_device() else {
        return;
    };
    let big = Tensor::zeros(&device, &[1000], DType::F32).unwrap();
    let id = big.gpu_buffer().unwrap().id();
    probe(&ctx, &big, 0.5);
    assert_all(&big, 1000.5);
    drop(big);

    // 900 floats fall in the same size class: the pool hands the same buffer back.
    let small = Tensor::zeros(&device, &[900], DType::F32).unwrap();
    assert_eq!(
        small.gpu_buffer().unwrap().id(),
        id,
        "the buffer was recycled"
    );
    let before = ctx.stats().unwrap();
    probe(&ctx, &small, 0.25);
    assert_all(&small, 900.25);
    assert_eq!((ctx.stats().unwrap() - before).bind_groups_created, 1);
}

#[test]
fn a_binding_the_kernel_does_not_declare_is_an_error_naming_the_op() {
    let Some((device, ctx)) = private_device() else {
        return;
    };
    let out = Tensor::zeros(&device, &[8], DType::F32).unwrap();
    let dispatch = || {
        ctx.dispatch(Dispatch {
            op: "length probe",
            kernel: &LENGTH_PROBE,
            entry: "main",
            variant: Variant::new(DType::F32),
            params: &[0; 4],
            buffers: &[BufferArg::new(2, "out", &out)],
            workgroups: [1, 1, 1],
        })
    };
    let err = dispatch().unwrap_err().to_string();
    assert!(err.contains("length probe") && err.contains("out"), "{err}");
    // Not cached: the second try fails the same way rather than binding a broken group.
    assert!(dispatch().is_err());
    assert_eq!(ctx.bind_group_count(), 0);
}

#[test]
fn trimming_the_pool_drops_the_bind_groups_of_destroyed_buffers() {
    let Some((device, ctx)) = private_device() else {
        return;
    };
    let t = Tensor::zeros(&device, &[300], DType::F32).unwrap();
    let old_id = t.gpu_buffer().unwrap().id();
    probe(&ctx, &t, 1.0);
    assert_all(&t, 301.0);
    let cached = ctx.bind_group_count();
    assert!(cached >= 1);
    drop(t);
    ctx.trim_pool();
    assert_eq!(ctx.bind_group_count(), cached - 1, "its bind group is gone");

    // A new buffer of the same size is a new id, so it cannot meet the old entry.
    let t = Tensor::zeros(&device, &[300], DType::F32).unwrap();
    assert_ne!(t.gpu_buffer().unwrap().id(), old_id);
    probe(&ctx, &t, 2.0);
    assert_all(&t, 302.0);
}

#[test]
fn launches_sharing_a_bind_group_keep_their_own_parameters() {
    let Some((device, ctx)) = private_device() else {
        return;
    };
    // Ping-pong between two buffers: from the third launch on, every bind group is a cached one and
    // only the parameter offset tells the launches apart. More launches than one submission holds.
    let values = Rng::new(5).normals(1000);
    let mut on_gpu = Tensor::from_f32(&device, &[1000], DType::F32, &values).unwrap();
    let mut on_cpu = Tensor::from_f32(&Device::Cpu, &[1000], DType::F32, &values).unwrap();
    let before = ctx.stats().unwrap();
    let n = 4200;
    for i in 0..n {
        let op = Unary::Scale {
            mul: if i % 2 == 0 { 1.001 } else { 0.998 },
            add: (i % 7) as f32 * 1e-3,
        };
        on_gpu = unary(&on_gpu, op).unwrap();
        on_cpu = unary(&on_cpu, op).unwrap();
    }
    let got = on_gpu.to_vec_f32().unwrap();
    let d = ctx.stats().unwrap() - before;
    assert_close(
        "4200 chained ops",
        &got,
        &on_cpu.to_vec_f32().unwrap(),
        1e-4,
        1e-3,
    );
    assert_eq!(d.dispatches, n);
    assert!(d.bind_groups_created <= 3, "{d:?}");
    assert!(d.submissions >= 2, "a full batch is submitted early: {d:?}");
}

#[test]
fn pass_and_dispatch_timing_report_device_time() {
    let Some((device, ctx)) = private_device() else {
        return;
    };
    if !ctx.has_timestamps() {
        assert!(!ctx.set_gpu_timing(true).unwrap());
        return;
    }
    let x = Tensor::from_f32(&device, &[4096], DType::F32, &Rng::new(3).normals(4096)).unwrap();
    assert!(ctx.set_gpu_timing(true).unwrap());
    let before = ctx.stats().unwrap();
    silu(&silu(&x).unwrap()).unwrap().to_vec_f32().unwrap();
    let d = ctx.stats().unwrap() - before;
    assert_eq!((d.timed_passes, d.passes), (1, 1), "{d:?}");
    assert!(d.gpu_nanos > 0, "{d:?}");
    ctx.set_gpu_timing(false).unwrap();

    // Per-dispatch profiling: one timing per launch, and the results are still right.
    ctx.begin_profiling().unwrap();
    let y = silu(&silu(&x).unwrap()).unwrap();
    let timings = ctx.end_profiling().unwrap();
    assert_eq!(timings.len(), 2);
    assert!(
        timings[0].label.contains("elementwise"),
        "{}",
        timings[0].label
    );
    let want = silu(&silu(&x.to_device(&Device::Cpu).unwrap()).unwrap()).unwrap();
    assert_close(
        "profiled silu",
        &y.to_vec_f32().unwrap(),
        &want.to_vec_f32().unwrap(),
        1e-6,
        1e-5,
    );
}
