//! Runtime behaviour on a real wgpu device: pool reuse and peak accounting, the pipeline cache, command
//! batching hazards, device limits and dtype support. Runs on the adapter `KILN_TEST_DEVICE` picks.

use kiln_kernels::elementwise::{add, silu, unary, Unary};
use kiln_kernels::testing::{assert_close, gpu, with_gpu, Rng};
use kiln_runtime::gpu::{BufferArg, Dispatch, GpuOptions};
use kiln_runtime::preprocess::{KernelSource, Variant};
use kiln_runtime::{DType, Device, Tensor};

fn ctx(device: &Device) -> &std::sync::Arc<kiln_runtime::gpu::GpuContext> {
    match device {
        Device::Gpu(ctx) => ctx,
        Device::Cpu => unreachable!("with_gpu gives a GPU"),
    }
}

#[test]
fn freed_buffers_are_reused_and_peak_is_tracked() {
    with_gpu(|gpu| {
        let ctx = ctx(gpu);
        // An odd size unlikely to be used by other tests running in this process.
        let shape = [12_345];
        let t = Tensor::zeros(gpu, &shape, DType::F32).unwrap();
        let live_with = ctx.memory_stats().live;
        drop(t);
        assert!(
            ctx.memory_stats().live < live_with,
            "freeing lowers live bytes"
        );
        let (_, reused_before) = ctx.pool_counts();
        let again = Tensor::zeros(gpu, &shape, DType::F32).unwrap();
        let (_, reused_after) = ctx.pool_counts();
        assert!(
            reused_after > reused_before,
            "a same-class request is served from the pool"
        );
        let stats = ctx.memory_stats();
        assert!(stats.peak_live >= stats.live && stats.peak_reserved >= stats.reserved);
        assert!(stats.peak_live >= 12_345 * 4);
        drop(again);
    });
}

#[test]
fn pipelines_are_compiled_once_per_variant() {
    let Some(Device::Gpu(shared)) = gpu() else {
        return;
    };
    // A private device, so its cache sees only this test's kernels.
    let device = Device::open_gpu(shared.index(), GpuOptions::default()).unwrap();
    let ctx = ctx(&device);
    assert_eq!(ctx.pipeline_count(), 0);
    let x = Tensor::from_f32(&device, &[10], DType::F32, &[0.5; 10]).unwrap();
    silu(&x).unwrap();
    assert_eq!(ctx.pipeline_count(), 1);
    for _ in 0..3 {
        silu(&x).unwrap();
    }
    // Another op of the same entry point and dtype reuses the pipeline too.
    unary(&x, Unary::GeluErf).unwrap().to_vec_f32().unwrap();
    assert_eq!(ctx.pipeline_count(), 1);
    // A new dtype is a new variant.
    let h = Tensor::from_f32(&device, &[10], DType::F16, &[0.5; 10]).unwrap();
    silu(&h).unwrap().to_vec_f32().unwrap();
    assert_eq!(ctx.pipeline_count(), 2);
}

static BROKEN: KernelSource = KernelSource {
    file: "broken_for_test.wgsl",
    source: "@compute @workgroup_size(1) fn main() { let x: u32 = 1.5; }",
};

#[test]
fn a_shader_error_names_the_kernel_file() {
    with_gpu(|gpu| {
        let out = Tensor::zeros(gpu, &[4], DType::F32).unwrap();
        let err = ctx(gpu)
            .dispatch(Dispatch {
                op: "broken",
                kernel: &BROKEN,
                entry: "main",
                variant: Variant::new(DType::F32),
                params: &[],
                buffers: &[BufferArg::new(1, "out", &out)],
                workgroups: [1, 1, 1],
            })
            .unwrap_err()
            .to_string();
        assert!(err.contains("broken_for_test.wgsl"), "{err}");
    });
}

#[test]
fn many_dispatches_in_one_batch_give_the_cpu_result() {
    with_gpu(|gpu| {
        let values = Rng::new(5).normals(1000);
        let mut on_gpu = Tensor::from_f32(gpu, &[1000], DType::F32, &values).unwrap();
        let mut on_cpu = Tensor::from_f32(&Device::Cpu, &[1000], DType::F32, &values).unwrap();
        // Many dispatches in one submission, with every intermediate dropped (and its buffer reused)
        // while later work that depends on it is still only recorded. (Batches that outgrow one
        // submission: `gpu_overhead.rs`.)
        for i in 0..600 {
            let op = if i % 2 == 0 {
                Unary::Scale {
                    mul: 0.999,
                    add: 0.001,
                }
            } else {
                Unary::Silu
            };
            on_gpu = unary(&on_gpu, op).unwrap();
            on_cpu = unary(&on_cpu, op).unwrap();
        }
        assert_close(
            "600 chained ops",
            &on_gpu.to_vec_f32().unwrap(),
            &on_cpu.to_vec_f32().unwrap(),
            1e-5,
            1e-4,
        );
    });
}

#[test]
fn an_upload_never_overtakes_recorded_work_on_a_reused_buffer() {
    with_gpu(|gpu| {
        let n = 4099; // an odd size so the pool class is private to this test
        let a = Tensor::from_f32(gpu, &[n], DType::F32, &vec![1.0; n]).unwrap();
        let b = Tensor::from_f32(gpu, &[n], DType::F32, &vec![2.0; n]).unwrap();
        let sum = add(&a, &b).unwrap(); // recorded, not yet run
        drop(a); // its buffer returns to the pool...
        let c = Tensor::from_f32(gpu, &[n], DType::F32, &vec![100.0; n]).unwrap(); // ...and is reused
        assert!(
            sum.to_vec_f32().unwrap().iter().all(|&v| v == 3.0),
            "upload overwrote a pending input"
        );
        assert!(c.to_vec_f32().unwrap().iter().all(|&v| v == 100.0));
    });
}

#[test]
fn uploads_and_readbacks_keep_every_dtype() {
    with_gpu(|gpu| {
        let f = Tensor::from_f32(gpu, &[3], DType::F32, &[1.5, -2.0, 3.25]).unwrap();
        assert_eq!(f.to_vec_f32().unwrap(), [1.5, -2.0, 3.25]);
        let h = Tensor::from_f32(gpu, &[3], DType::F16, &[1.5, -2.0, 3.25]).unwrap();
        assert_eq!(h.to_vec_f32().unwrap(), [1.5, -2.0, 3.25]);
        let ids = Tensor::from_u32(gpu, &[5], &[0, 7, 49407, 1, 2]).unwrap();
        assert_eq!(ids.to_vec_u32().unwrap(), [0, 7, 49407, 1, 2]);
        let back = h.to_device(&Device::Cpu).unwrap();
        assert!(back.device().is_cpu());
        assert_eq!(back.to_vec_f32().unwrap(), [1.5, -2.0, 3.25]);
    });
}

#[test]
fn a_tensor_over_the_binding_limit_is_rejected_with_its_shape() {
    let Some(Device::Gpu(shared)) = gpu() else {
        return;
    };
    let small = Device::open_gpu(
        shared.index(),
        GpuOptions {
            max_storage_binding_size: Some(4096),
            ..Default::default()
        },
    )
    .expect("a second device on the same adapter");
    let x = Tensor::zeros(&small, &[32, 64], DType::F32).unwrap(); // 8 KiB
    let err = silu(&x).unwrap_err().to_string();
    assert!(
        err.contains("unary") && err.contains("[32, 64]") && err.contains("storage-binding limit"),
        "{err}"
    );
    // Under the limit the same op runs.
    let y = Tensor::zeros(&small, &[16, 64], DType::F32).unwrap();
    assert!(silu(&y).is_ok());
}

#[test]
fn without_shader_f16_half_tensors_are_refused_and_f32_is_preferred() {
    let Some(Device::Gpu(shared)) = gpu() else {
        return;
    };
    let no_f16 = Device::open_gpu(
        shared.index(),
        GpuOptions {
            disable_f16: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(no_f16.float_dtype(DType::F16), DType::F32);
    let err = Tensor::from_f32(&no_f16, &[2], DType::F16, &[1.0, 2.0])
        .unwrap_err()
        .to_string();
    assert!(err.contains("SHADER_F16"), "{err}");
}

#[test]
fn tensors_on_two_gpu_devices_do_not_mix() {
    let Some(shared) = gpu() else { return };
    let Device::Gpu(ctx) = &shared else { return };
    let other = Device::open_gpu(ctx.index(), GpuOptions::default()).unwrap();
    let a = Tensor::zeros(&shared, &[4], DType::F32).unwrap();
    let b = Tensor::zeros(&other, &[4], DType::F32).unwrap();
    assert!(add(&a, &b).is_err());
}
