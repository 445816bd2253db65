//! `kiln serve --max-vram`: a budget below the weight size is met by streaming the UNet (the run
//! stays under it and gives the unbudgeted image), and a job no way of loading fits is refused
//! with the smallest budget. The bundled tiny model on the CPU backend, over real HTTP.
//!
//! A test binary of its own: the CPU backend's memory counter and budget are process-wide, so a
//! budget set here would fail the other HTTP tests' runs, and their memory would blur the peak
//! measured here. Its tests take turns.

#[allow(dead_code)]
#[path = "http/common.rs"]
mod common;

use std::sync::Mutex;

use kiln_models::pipeline::{plan, GenerationParams, LoadOptions, MemoryPlan};
use kiln_runtime::memory::format_bytes;
use kiln_runtime::Device;
use serde_json::Value;

use common::*;

static TURN: Mutex<()> = Mutex::new(());

/// The plan of `small("a red circle", 2)` as the server runs it.
fn planned() -> MemoryPlan {
    let mut p = GenerationParams::new("a red circle");
    (p.width, p.height, p.steps, p.seed, p.cfg_scale) = (64, 64, 2, 42, 5.0);
    plan(&bundled(), &Device::Cpu, &LoadOptions::default(), &p).unwrap()
}

fn txt2img(server: &kiln_server::Server) -> (u16, Value) {
    post_json(server, "/sdapi/v1/txt2img", &small("a red circle", 2))
}

#[test]
fn a_budget_below_the_weights_streams_the_unet_and_stays_under_it() {
    let _turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    let plan = planned();
    // Halfway between what streaming needs and the weights alone.
    let budget = (plan.streamed_peak() + plan.weights_total()) / 2;
    assert!(budget < plan.weights_total(), "{}", plan.report());

    let mut config = config();
    config.max_vram = Some(budget);
    let server = start(config);
    Device::Cpu.reset_peak_memory();
    let (status, body) = txt2img(&server);
    let peak = Device::Cpu.memory_stats().peak_live;
    assert_eq!(status, 200, "{body}");
    assert!(
        peak <= budget && peak <= plan.streamed_peak(),
        "peak {peak}, budget {budget}, planned streamed {}",
        plan.streamed_peak()
    );
    // The same job again: the fitted model stays loaded, still under the budget.
    let (status, again) = txt2img(&server);
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["images"][0], body["images"][0]);
    assert!(Device::Cpu.memory_stats().peak_live <= budget);
    drop(server);
    Device::Cpu.set_memory_budget(None);

    // Streaming moves weights, not arithmetic: the image of a server with no budget.
    let server = start(common::config());
    let (status, reference) = txt2img(&server);
    assert_eq!(status, 200, "{reference}");
    assert_eq!(body["images"][0], reference["images"][0]);
}

#[test]
fn a_job_no_budget_fits_is_refused_with_the_minimum() {
    let _turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    let minimum = format_bytes(planned().streamed_peak());
    let mut config = config();
    config.max_vram = Some(2 << 20);
    let server = start(config);
    let (status, body) = txt2img(&server);
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "over_memory_budget", "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("--max-vram 2.00 MiB is too small")
            && detail.contains(&format!("at least {minimum}")),
        "{detail}"
    );
    drop(server);
    Device::Cpu.set_memory_budget(None);
}
