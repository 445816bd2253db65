//! The X/Y/Z plot library on real models: every cell of `run_plot` is the single generation with
//! that cell's settings, the grid is the cells plus A1111's label margins, and a Checkpoint-name
//! axis switches models through the caller's `CellRunner` (the bundled model and the tiny
//! fixture). On the CPU backend and, where one exists, a GPU adapter.

use kiln_kernels::testing::with_gpu;
use kiln_models::image::grid::Annotations;
use kiln_models::pipeline::{generate, infotext, GenerationParams, StableDiffusion};
use kiln_models::xyz::{run_plot, Axis, AxisKind, CellOutput, CellRunner, CellSettings, XyzPlot};
use kiln_runtime::{DType, Device};
use kiln_tests::params::red_circle;
use kiln_tests::root;
use std::collections::HashMap;

/// Loads models by path on first use; `None` is the bundled model.
struct Runner<'a> {
    device: &'a Device,
    models: HashMap<String, StableDiffusion>,
    calls: Vec<Option<String>>,
}

impl Runner<'_> {
    fn model(&mut self, name: &str) -> &StableDiffusion {
        let device = self.device;
        self.models.entry(name.to_string()).or_insert_with(|| {
            StableDiffusion::load(&root().join(name), device, DType::F32).unwrap()
        })
    }
}

impl CellRunner for Runner<'_> {
    fn check_checkpoint(&mut self, name: &str) -> Result<(), String> {
        if root().join(name).join("model_index.json").is_file() {
            Ok(())
        } else {
            Err("no such model folder".into())
        }
    }

    fn generate(&mut self, s: &CellSettings) -> Result<CellOutput, String> {
        self.calls.push(s.checkpoint.clone());
        let name = s.checkpoint.clone().unwrap_or("models/bundled".into());
        let model = self.model(&name);
        let image = generate(model, &s.params, &mut |_| {})
            .map_err(|e| e.to_string())?
            .remove(0);
        Ok(CellOutput {
            info: infotext(&s.params, image.seed, &model.source.name, None),
            image: image.to_rgb8(),
        })
    }
}

fn base() -> GenerationParams {
    red_circle(64, 2, 11)
}

fn axis(kind: AxisKind, values: &str) -> Axis {
    Axis::parse(kind, values).unwrap()
}

/// A plot of Steps `steps` by CFG Scale 3, 7: each cell equals its own generation.
fn cells_equal_single_generations(device: &Device, steps: &[usize]) {
    let text: Vec<String> = steps.iter().map(|s| s.to_string()).collect();
    let plot = XyzPlot::new(
        axis(AxisKind::Steps, &text.join(",")),
        axis(AxisKind::CfgScale, "3, 7"),
        axis(AxisKind::Nothing, ""),
    );
    let mut runner = Runner {
        device,
        models: HashMap::new(),
        calls: Vec::new(),
    };
    let out = run_plot(&plot, &base(), &mut runner, usize::MAX, "limit").unwrap();
    let n = steps.len();
    assert_eq!(out.cells.len(), 2 * n);
    let layout = Annotations::layout(64, 64, &plot.x.labels(), &plot.y.labels(), 0).unwrap();
    assert_eq!(
        (out.grid.width, out.grid.height),
        (48 + n * 64, layout.pad_top + 128)
    );
    let model = runner.model("models/bundled");
    let settings = [3.0, 7.0]
        .iter()
        .flat_map(|&cfg| steps.iter().map(move |&s| (s, cfg)));
    for (i, (steps, cfg)) in settings.enumerate() {
        let mut p = base();
        p.steps = steps;
        p.cfg_scale = cfg;
        let alone = generate(model, &p, &mut |_| {})
            .unwrap()
            .remove(0)
            .to_rgb8();
        assert_eq!(out.cells[i].image, alone, "cell {i}");
        assert_eq!(
            out.cells[i].info.get("Steps"),
            Some(steps.to_string().as_str())
        );
    }
    // Different settings gave different pictures (the comparison above is not vacuous).
    assert_ne!(out.cells[0].image, out.cells[2 * n - 1].image);
}

#[test]
fn xyz_cells_are_single_generations_on_the_cpu() {
    cells_equal_single_generations(&Device::Cpu, &[1, 2]);
}

#[test]
fn xyz_cells_are_single_generations_on_the_gpu() {
    // One column: llvmpipe is slow.
    with_gpu(|gpu| cells_equal_single_generations(gpu, &[1]));
}

#[test]
fn a_checkpoint_axis_switches_models_once_each() {
    let plot = XyzPlot::new(
        axis(AxisKind::Seed, "1,2"),
        axis(
            AxisKind::CheckpointName,
            "models/bundled, tests/fixtures/tiny-sd1",
        ),
        axis(AxisKind::Nothing, ""),
    );
    let mut runner = Runner {
        device: &Device::Cpu,
        models: HashMap::new(),
        calls: Vec::new(),
    };
    let out = run_plot(&plot, &base(), &mut runner, usize::MAX, "limit").unwrap();
    // The checkpoint (Y) axis runs outermost: each model's cells one after another.
    let bundled = Some("models/bundled".to_string());
    let tiny = Some("tests/fixtures/tiny-sd1".to_string());
    assert_eq!(runner.calls, [bundled.clone(), bundled, tiny.clone(), tiny]);
    assert_eq!(out.cells[3].info.get("Model"), Some("tiny-sd1"));
    assert_eq!(out.cells[0].info.get("Model"), Some("bundled"));
    let mut p = base();
    p.seed = 2;
    let tiny = runner.model("tests/fixtures/tiny-sd1");
    let alone = generate(tiny, &p, &mut |_| {}).unwrap().remove(0).to_rgb8();
    assert_eq!(out.cells[3].image, alone);
    // A name the runner cannot load is refused before any cell runs.
    let bad = XyzPlot::new(
        axis(AxisKind::CheckpointName, "models/bundled, no/such/model"),
        axis(AxisKind::Nothing, ""),
        axis(AxisKind::Nothing, ""),
    );
    runner.calls.clear();
    let e = run_plot(&bad, &base(), &mut runner, usize::MAX, "limit").unwrap_err();
    assert!(e.to_string().contains("\"no/such/model\""), "{e}");
    assert!(runner.calls.is_empty());
}
