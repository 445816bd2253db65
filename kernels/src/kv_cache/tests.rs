//! KV cache writes on both backends: several writes (every dtype pairing) then a read-back compared
//! with the values written, exactly (a conversion rounds once, the same way on both sides), and the
//! errors a bad write gives.

use kiln_runtime::{DType, Device, Tensor};

use super::*;
use crate::testing::{with_gpu, Rng};

const DTYPES: [DType; 2] = [DType::F32, DType::F16];

/// `values` rounded through `dtype`, as a write into a cache of that dtype stores them.
fn rounded(values: &[f32], dtype: DType) -> Vec<f32> {
    Tensor::from_f32(&Device::Cpu, &[values.len()], dtype, values)
        .unwrap()
        .to_vec_f32()
        .unwrap()
}

/// Three writes into a [capacity, H, D] cache on `device`, checked against the expected contents
/// (rows never written stay zero), with the cache's buffer never replaced.
fn writes_land_in_place(device: &Device) {
    let (capacity, h, d) = (9, 3, 5);
    let row = h * d;
    for cache_dtype in DTYPES {
        for rows_dtype in DTYPES {
            let mut cache = Tensor::zeros(device, &[capacity, h, d], cache_dtype).unwrap();
            let buffer_id = cache.gpu_buffer().map(|b| b.id());
            let mut want = vec![0.0f32; capacity * row];
            let mut rng = Rng::new(7);
            // A prefill of 4 rows, one decode row, then 4 more rows filling the cache exactly; the
            // last overwrites nothing earlier but ends at capacity.
            for (start, len) in [(0, 4), (4, 1), (5, 4)] {
                let values = rounded(&rng.normals(len * row), rows_dtype);
                let rows = Tensor::from_f32(device, &[len, h, d], rows_dtype, &values).unwrap();
                kv_write(&mut cache, &rows, start).unwrap();
                want[start * row..(start + len) * row]
                    .copy_from_slice(&rounded(&values, cache_dtype));
            }
            let what = format!("{} cache {cache_dtype} rows {rows_dtype}", device.name());
            assert_eq!(cache.shape(), [capacity, h, d], "{what}");
            assert_eq!(cache.dtype(), cache_dtype, "{what}");
            assert_eq!(cache.gpu_buffer().map(|b| b.id()), buffer_id, "{what}");
            assert_eq!(cache.to_vec_f32().unwrap(), want, "{what}");
            // Overwriting a row already written (a rewound sequence) replaces it.
            let ones = Tensor::from_f32(device, &[1, h, d], rows_dtype, &vec![1.0; row]).unwrap();
            kv_write(&mut cache, &ones, 2).unwrap();
            want[2 * row..3 * row].fill(1.0);
            assert_eq!(cache.to_vec_f32().unwrap(), want, "{what} overwrite");
        }
    }
}

#[test]
fn cpu_writes_land_in_place() {
    writes_land_in_place(&Device::Cpu);
}

#[test]
fn gpu_writes_land_in_place() {
    with_gpu(writes_land_in_place);
}

#[test]
fn bad_writes_are_errors() {
    let cpu = Device::Cpu;
    let mut cache = Tensor::zeros(&cpu, &[4, 2, 3], DType::F16).unwrap();
    let rows = Tensor::zeros(&cpu, &[3, 2, 3], DType::F32).unwrap();
    let err = kv_write(&mut cache, &rows, 2).unwrap_err().to_string();
    assert!(
        err.contains("kv_write")
            && err.contains("[3, 2, 3]")
            && err.contains("[4, 2, 3]")
            && err.contains("capacity 4"),
        "{err}"
    );
    // A start so large that start + L overflows is the same error, not a panic.
    let err = kv_write(&mut cache, &rows, usize::MAX)
        .unwrap_err()
        .to_string();
    assert!(err.contains("capacity"), "{err}");
    let wide = Tensor::zeros(&cpu, &[1, 2, 4], DType::F32).unwrap();
    let err = kv_write(&mut cache, &wide, 0).unwrap_err().to_string();
    assert!(err.contains("[1, 2, 4]") && err.contains("[H, D]"), "{err}");
    let flat = Tensor::zeros(&cpu, &[6], DType::F32).unwrap();
    let err = kv_write(&mut cache, &flat, 0).unwrap_err().to_string();
    assert!(err.contains("rank 3") && err.contains("[6]"), "{err}");
    let ids = Tensor::from_u32(&cpu, &[1, 2, 3], &[0; 6]).unwrap();
    let err = kv_write(&mut cache, &ids, 0).unwrap_err().to_string();
    assert!(err.contains("kv_write") && err.contains("u32"), "{err}");
    let empty = Tensor::zeros(&cpu, &[0, 2, 3], DType::F32).unwrap();
    let err = kv_write(&mut cache, &empty, 0).unwrap_err().to_string();
    assert!(err.contains("zero-size"), "{err}");
    // A view sharing the cache's storage would see the write: refused, and the cache is unchanged.
    let view = cache.reshape(&[8, 3]).unwrap();
    let one = Tensor::from_f32(&cpu, &[1, 2, 3], DType::F32, &[1.0; 6]).unwrap();
    let err = kv_write(&mut cache, &one, 0).unwrap_err().to_string();
    assert!(err.contains("kv_write") && err.contains("shares"), "{err}");
    assert!(view.to_vec_f32().unwrap().iter().all(|&v| v == 0.0));
    with_gpu(|gpu| {
        let mut on_gpu = cache.to_device(gpu).unwrap();
        let err = kv_write(&mut on_gpu, &one, 0).unwrap_err().to_string();
        assert!(err.contains("kv_write") && err.contains("device"), "{err}");
        let kept = on_gpu.clone();
        let one_gpu = one.to_device(gpu).unwrap();
        let err = kv_write(&mut on_gpu, &one_gpu, 0).unwrap_err().to_string();
        assert!(err.contains("shares"), "{err}");
        drop(kept);
        kv_write(&mut on_gpu, &one_gpu, 3).unwrap();
    });
}
