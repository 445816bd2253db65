//! Criterion benches of every kernel case on the CPU backend and, when present, the GPU under test
//! (`KILN_TEST_DEVICE`, as for the tests). `KILN_BENCH_SIZE=quick` uses the tiny shapes.

use criterion::{criterion_group, criterion_main, Criterion};
use kiln_benches::{kernel_cases, Size};
use kiln_kernels::testing::gpu;
use kiln_runtime::{DType, Device};

fn bench_device(c: &mut Criterion, label: &str, device: &Device, size: Size) {
    for dtype in [DType::F32, DType::F16] {
        if !device.supports(dtype) {
            continue;
        }
        let mut group = c.benchmark_group(format!("{label}/{dtype}"));
        group.sample_size(10);
        for case in kernel_cases(size, dtype) {
            let run = (case.prepare)(device).expect("case inputs");
            group.bench_function(&case.name, |b| {
                b.iter(|| {
                    // Wait for the device inside the timed closure so GPU work is counted.
                    let out = run().expect("kernel run");
                    device.synchronize().expect("synchronize");
                    out
                })
            });
        }
        group.finish();
    }
}

fn kernels(c: &mut Criterion) {
    let size = match std::env::var("KILN_BENCH_SIZE").as_deref() {
        Ok("quick") => Size::Quick,
        _ => Size::Standard,
    };
    bench_device(c, "cpu", &Device::Cpu, size);
    if let Some(device) = gpu() {
        bench_device(c, "gpu", &device, size);
    }
}

criterion_group!(benches, kernels);
criterion_main!(benches);
