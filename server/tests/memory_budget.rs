//! `kiln serve --max-vram`: a budget below the weight size is met by streaming the UNet (the run
//! stays under it and gives the unbudgeted image), and a job no way of loading fits is refused
//! with the smallest budget; the fit counts a job's ControlNet units and its refiner (both UNets
//! streamed). The bundled tiny model (tiny-sd1 with tests/fixtures/controlnet for ControlNets,
//! tiny-sdxl with tests/fixtures/tiny-sdxl-refiner) on the CPU backend, over real HTTP.
//!
//! A test binary of its own: the CPU backend's memory counter and budget are process-wide, so a
//! budget set here would fail the other HTTP tests' runs, and their memory would blur the peak
//! measured here. Its tests take turns.

#[allow(dead_code)]
#[path = "http/common.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_models::image::read_image;
use kiln_models::pipeline::{
    open_controlnet, open_refiner, plan, plan_with, ControlMode, ControlUnit, GenerationParams,
    LoadOptions, MemoryPlan, PipelineError, Refiner, StableDiffusion,
};
use kiln_models::preprocess::ResizeMode;
use kiln_runtime::memory::format_bytes;
use kiln_runtime::Device;
use serde_json::{json, Value};

use common::*;

static TURN: Mutex<()> = Mutex::new(());

/// Stops `server` and waits (a minute at most) until its worker thread has freed its models, so
/// the next server's budget sees none of them: the worker is not joined on drop, and the CPU
/// backend's counter and budget are the process's. `baseline`: the bytes live before it started.
fn stop(server: kiln_server::Server, baseline: u64) {
    drop(server);
    let since = Instant::now();
    while Device::Cpu.memory_stats().live > baseline && since.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    Device::Cpu.set_memory_budget(None);
}

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
    let baseline = Device::Cpu.memory_stats().live;
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
    stop(server, baseline);

    // Streaming moves weights, not arithmetic: the image of a server with no budget.
    let server = start(common::config());
    let (status, reference) = txt2img(&server);
    assert_eq!(status, 200, "{reference}");
    assert_eq!(body["images"][0], reference["images"][0]);
    stop(server, baseline);
}

#[test]
fn a_job_no_budget_fits_is_refused_with_the_minimum() {
    let _turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    let baseline = Device::Cpu.memory_stats().live;
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
    stop(server, baseline);
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// The job the requests below make (the worker's defaults for the fields they leave out).
fn params(model: &StableDiffusion, control: bool) -> Result<GenerationParams, PipelineError> {
    let mut p = GenerationParams::new("a red circle");
    (p.width, p.height, p.steps, p.seed) = (32, 32, 2, 42);
    if control {
        let dir = fixtures().join("controlnet");
        p.controls = vec![ControlUnit {
            model: Arc::new(open_controlnet(&dir.join("sd1-a"), "sd1-a", model, None)?),
            name: "sd1-a".into(),
            hash: None,
            module: "none".into(),
            settings: kiln_models::preprocess::PreprocessorSettings::defaults("none").unwrap(),
            image: read_image(&dir.join("control.png")).unwrap(),
            resize: ResizeMode::default(),
            scale: 1.0,
            guidance_start: 0.0,
            guidance_end: 1.0,
            mode: ControlMode::Balanced,
        }];
    }
    Ok(p)
}

fn planned_with(model: &Path, control: bool) -> MemoryPlan {
    plan_with(model, &Device::Cpu, &LoadOptions::default(), |m| {
        params(m, control)
    })
    .unwrap()
}

/// The budget fit counts a unit's ControlNet (its weights and activations): a budget a plain job
/// fits but the same job with a ControlNet does not is refused with a 400, and the plan's own
/// figure for the controlled job runs.
#[test]
fn the_budget_fit_counts_a_controlnet_unit() {
    let _turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    let baseline = Device::Cpu.memory_stats().live;
    let model = fixtures().join("tiny-sd1");
    let (plain, controlled) = (planned_with(&model, false), planned_with(&model, true));
    assert!(controlled.streamed_peak() > plain.streamed_peak());
    let between = (plain.streamed_peak() + controlled.streamed_peak()) / 2;

    let server = |budget: u64| {
        let mut c = kiln_server::ServerConfig::new(kiln_server::ModelSet::Single(model.clone()));
        c.device = kiln_runtime::DeviceChoice::Cpu;
        c.listen = "127.0.0.1:0".parse().unwrap();
        c.controlnet_dir = Some(fixtures().join("controlnet"));
        c.max_vram = Some(budget);
        start(c)
    };
    let request = |server: &kiln_server::Server, unit: Option<Value>| {
        let mut body = json!({"prompt": "a red circle", "width": 32, "height": 32, "steps": 2,
                              "seed": 42});
        if let Some(u) = unit {
            body["alwayson_scripts"] = json!({"controlnet": {"args": [u]}});
        }
        post_json(server, "/sdapi/v1/txt2img", &body)
    };
    let image = b64encode(&std::fs::read(fixtures().join("controlnet/control.png")).unwrap());
    let unit = |server: &kiln_server::Server| {
        let (_, list) = get_json(server, "/controlnet/model_list");
        let name = list["model_list"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .find(|n| n.starts_with("sd1-a ["))
            .unwrap()
            .to_string();
        json!({"image": image, "module": "none", "model": name, "weight": 1.0})
    };

    let tight = server(between);
    let (status, body) = request(&tight, None);
    assert_eq!(status, 200, "the plain job fits: {body}");
    let (status, body) = request(&tight, Some(unit(&tight)));
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("over_memory_budget"), "{body}");
    // Its model's memory is the process's: gone before the next server loads.
    stop(tight, baseline);

    let enough = server(controlled.streamed_peak());
    let (status, body) = request(&enough, Some(unit(&enough)));
    assert_eq!(status, 200, "{body}");
    stop(enough, baseline);
}

/// A server of tiny-sdxl and its refiner under `budget`.
fn sdxl_config(budget: Option<u64>) -> kiln_server::ServerConfig {
    let mut config = config();
    config.models = kiln_server::ModelSet::List(vec![
        fixtures().join("tiny-sdxl"),
        fixtures().join("tiny-sdxl-refiner"),
    ]);
    config.max_vram = budget;
    config
}

/// A 32x32 tiny-sdxl job refined from half way.
fn refined(server: &kiln_server::Server) -> (u16, Value) {
    let body = json!({"prompt": "a red circle", "width": 32, "height": 32, "steps": 4,
        "seed": 42, "cfg_scale": 5, "refiner_checkpoint": "tiny-sdxl-refiner",
        "refiner_switch_at": 0.5});
    post_json(server, "/sdapi/v1/txt2img", &body)
}

/// The plan of `refined` as the server runs it.
fn planned_refined() -> MemoryPlan {
    let mut p = GenerationParams::new("a red circle");
    (p.width, p.height, p.steps, p.seed, p.cfg_scale) = (32, 32, 4, 42, 5.0);
    let options = LoadOptions::default();
    plan_with(
        &fixtures().join("tiny-sdxl"),
        &Device::Cpu,
        &options,
        |zero| {
            let r = open_refiner(
                &fixtures().join("tiny-sdxl-refiner"),
                zero,
                &Device::Cpu,
                &options,
            )?;
            p.refiner = Some(Refiner {
                model: Arc::new(r),
                switch_at: 0.5,
            });
            Ok::<_, PipelineError>(p)
        },
    )
    .unwrap()
}

#[test]
fn a_refiner_job_streams_both_unets_under_a_budget_or_is_refused_with_the_minimum() {
    let _turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    let baseline = Device::Cpu.memory_stats().live;
    let plan = planned_refined();
    // Between what streaming needs and what the resident run needs: only streaming both UNets
    // (the refiner's weights counted) keeps the run under it.
    let budget = (plan.streamed_peak() + plan.peak()) / 2;
    assert!(budget < plan.peak(), "{}", plan.report());
    let server = start(sdxl_config(Some(budget)));
    Device::Cpu.reset_peak_memory();
    let (status, body) = refined(&server);
    let peak = Device::Cpu.memory_stats().peak_live;
    assert_eq!(status, 200, "{body}");
    assert!(peak <= budget, "peak {peak}, budget {budget}");
    stop(server, baseline);

    // Streaming moves weights, not arithmetic: the image of a server with no budget.
    let server = start(sdxl_config(None));
    let (status, reference) = refined(&server);
    assert_eq!(status, 200, "{reference}");
    assert_eq!(body["images"][0], reference["images"][0]);
    stop(server, baseline);

    // Too small even streamed: refused naming the minimum, which counts the refiner.
    let server = start(sdxl_config(Some(plan.streamed_peak() / 2)));
    let (status, body) = refined(&server);
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "over_memory_budget", "{body}");
    let detail = body["detail"].as_str().unwrap();
    let minimum = format_bytes(plan.streamed_peak());
    assert!(detail.contains(&format!("at least {minimum}")), "{detail}");
    stop(server, baseline);
}
