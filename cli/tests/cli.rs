//! The `kiln` binary end to end: device listing, device choice errors and the kernel benchmark.

use std::process::{Command, Output};

use kiln_kernels::testing::gpu;
use kiln_runtime::Device;

mod common;
use common::{assert_ok, kiln};

#[test]
fn devices_json_lists_adapters_and_the_cpu_backend() {
    let out = kiln().args(["devices", "--json"]).output().unwrap();
    assert_ok(&out);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = list.as_array().unwrap();
    let cpu = list
        .iter()
        .find(|d| d["id"] == "cpu")
        .expect("the CPU backend is listed");
    assert_eq!(cpu["auto_eligible"], true);
    for key in [
        "name",
        "backend",
        "device_type",
        "driver",
        "f16",
        "subgroups",
        "timestamp_queries",
        "cooperative_matrix",
        "max_buffer_size",
        "max_storage_binding_size",
    ] {
        assert!(cpu.get(key).is_some(), "missing {key}");
    }
    if gpu().is_some() {
        assert!(
            list.iter().any(|d| d["id"] == "gpu:0"),
            "the adapter under test is listed"
        );
    }
    let table = kiln().arg("devices").output().unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("cpu") && text.contains("native CPU backend"),
        "{text}"
    );
}

#[test]
fn an_unknown_device_is_a_clear_error() {
    for (flag, expect) in [
        ("gpu:99", "gpu:99 does not exist"),
        ("tpu", "unknown device `tpu`"),
    ] {
        let out = kiln()
            .args(["--device", flag, "bench", "kernels", "--quick"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{err}");
    }
    // The environment variable is read the same way.
    let out = kiln()
        .env("KILN_DEVICE", "gpu:77")
        .args(["bench", "kernels", "--quick"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("gpu:77"));
}

/// The CPU backend, and the GPU under test when there is one (`--device` values).
fn devices_under_test() -> Vec<String> {
    let mut devices = vec!["cpu".to_string()];
    if let Some(Device::Gpu(ctx)) = gpu() {
        devices.push(format!("gpu:{}", ctx.index()));
    }
    devices
}

/// Runs `kiln ARGS --json PATH` on `device` (benchmark `what`) and asserts it succeeds: the
/// output and the JSON report.
fn bench_json(device: &str, what: &str, args: &[&str]) -> (Output, serde_json::Value) {
    let path = std::env::temp_dir().join(format!(
        "kiln-bench-{what}-{}-{device}.json",
        std::process::id()
    ));
    let out = kiln().args(args).arg("--json").arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "{device}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    (out, report)
}

#[test]
fn quick_kernel_benchmark_writes_json_on_cpu_and_gpu() {
    for device in devices_under_test() {
        let (out, report) = bench_json(
            &device,
            "kernels",
            &[
                "--device",
                &device,
                "--report-memory",
                "bench",
                "kernels",
                "--quick",
                "--iters",
                "1",
                "--warmup",
                "0",
                "--dtype",
                "f32",
            ],
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("peak memory"));
        let results = report["results"].as_array().unwrap();
        let ops: Vec<&str> = results.iter().map(|r| r["op"].as_str().unwrap()).collect();
        for op in [
            "matmul",
            "attention",
            "conv2d",
            "group_norm",
            "softmax",
            "add",
            "upsample",
        ] {
            assert!(ops.contains(&op), "{device}: no {op} case in {ops:?}");
        }
        for r in results {
            assert!(r["mean_ms"].as_f64().unwrap() > 0.0, "{device}: {r}");
        }
        let timing = if device == "cpu" {
            "wall-clock"
        } else {
            "gpu-timestamps"
        };
        assert!(results.iter().all(|r| r["timing"] == timing), "{device}");
    }
}

#[test]
fn sd_benchmark_reports_every_stage_and_peak_memory() {
    for device in devices_under_test() {
        let (out, r) = bench_json(
            &device,
            "sd",
            &["--device", &device, "bench", "sd", "--steps", "3"],
        );
        let text = String::from_utf8_lossy(&out.stdout);
        for stage in [
            "text encoding",
            "unet step 3",
            "vae decode",
            "it/s",
            "peak memory",
        ] {
            assert!(text.contains(stage), "{device}: no `{stage}` in\n{text}");
        }
        assert_eq!(r["step_ms"].as_array().unwrap().len(), 3);
        for key in ["text_encoding_ms", "vae_decode_ms", "its_per_second"] {
            assert!(r[key].as_f64().unwrap() > 0.0, "{device}: {key} in {r}");
        }
        // The bundled model's weights alone are several MiB.
        assert!(
            r["peak_memory_bytes"].as_u64().unwrap() > 1 << 20,
            "{device}: {r}"
        );
        let overhead = &r["overhead"];
        if device == "cpu" {
            assert!(
                overhead.is_null(),
                "the CPU backend records no commands: {r}"
            );
            continue;
        }
        assert!(text.contains("per-step host overhead"), "{text}");
        let steps = overhead["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 3);
        for s in steps {
            assert!(s["dispatches"].as_u64().unwrap() > 10, "{s}");
            assert!(s["submissions"].as_u64().unwrap() >= 1, "{s}");
            assert!(s["host_ms"].as_f64().unwrap() > 0.0, "{s}");
            if overhead["gpu_timing"] == true {
                assert!(s["gpu_ms"].as_f64().unwrap() > 0.0, "{s}");
            }
        }
        // Steps 2 and 3 repeat step 1's launches on the same pooled buffers: one submission each, and
        // every bind group comes from the cache.
        for s in &steps[1..] {
            assert_eq!(s["submissions"], 1, "{s}");
            assert_eq!(s["bind_groups_created"], 0, "{s}");
        }
    }
}

#[test]
fn quick_model_benchmark_runs_a_unet_a_controlnet_a_vae_decode_and_an_upscaler_on_cpu_and_gpu() {
    for device in devices_under_test() {
        let (_, report) = bench_json(
            &device,
            "models",
            &[
                "--device", &device, "bench", "models", "--quick", "--iters", "1", "--warmup", "0",
                "--dtype", "f32",
            ],
        );
        let results = report["results"].as_array().unwrap();
        let ops: Vec<&str> = results.iter().map(|r| r["op"].as_str().unwrap()).collect();
        assert_eq!(
            ops,
            ["unet", "controlnet", "vae_decode", "upscale_rrdbnet"],
            "{device}"
        );
        let upscaler = &results[3];
        assert!(upscaler["s_per_mpix"].as_f64().unwrap() > 0.0, "{upscaler}");
        assert_eq!(upscaler["params"]["config"]["num_feat"], 64, "{upscaler}");
        for r in &results[..3] {
            assert!(r["mean_ms"].as_f64().unwrap() > 0.0, "{device}: {r}");
            // The config travels with the case, so the PyTorch side builds the same model.
            let blocks = &r["params"]["config"]["block_out_channels"];
            assert_eq!(blocks.as_array().map(Vec::len), Some(4), "{device}: {r}");
        }
    }
}

/// tools/gpu-bench.sh --quick end to end on the CPU backend, kiln side only (tests never need
/// Python; the PyTorch side is exercised by hand and on the GPU machine).
#[test]
fn gpu_bench_script_runs_quick_without_torch() {
    let out_dir = std::env::temp_dir().join(format!("kiln-gpu-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out_dir);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("bash")
        .arg(root.join("tools/gpu-bench.sh"))
        .args(["--quick", "--no-torch", "--device", "cpu", "--kiln"])
        .arg(env!("CARGO_BIN_EXE_kiln"))
        .arg("--out")
        .arg(&out_dir)
        .env_remove("KILN_DEVICE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for file in [
        "env.txt",
        "devices.json",
        "kernels-kiln.json",
        "models-kiln.json",
        "sd.json",
        "summary.md",
    ] {
        let path = out_dir.join(file);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(!text.is_empty(), "{} missing or empty", path.display());
    }
    let sd: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("sd.json")).unwrap()).unwrap();
    assert_eq!(sd["steps"], 2);
    let summary = std::fs::read_to_string(out_dir.join("summary.md")).unwrap();
    assert!(summary.contains("commit:") && summary.contains("txt2img stages"));
}
