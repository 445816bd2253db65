//! `kiln generate --xyz "steps=10,20" --xyz "cfg=5,7"`: A1111's X/Y/Z plot from the command
//! line. The first `--xyz` is X, the second Y, the third Z. The labelled grid goes to `-o`; with
//! two or more Z values each z value's grid beside it as OUT-z1.png, OUT-z2.png, ... (what A1111
//! saves with "Include Sub Grids"; with one Z value that grid is the main one); and each cell as
//! OUT-0001.png, OUT-0002.png, ... (x fastest, then y, then z), each with its own infotext; the
//! grids carry A1111's grid infotext (`Script: X/Y/Z plot, X Type, ...`).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use kiln_models::image::infotext::PNG_KEYWORD;
use kiln_models::image::png::encode_png;
use kiln_models::pipeline::{
    add_refiner, add_vae, generate, infotext, prepare_with, short_hash, ControlUnit,
    GenerationParams, LoadOptions, Prepared, Refiner, StableDiffusion,
};
use kiln_models::xyz::{run_plot, Axis, AxisKind, CellOutput, CellRunner, CellSettings, XyzPlot};
use kiln_runtime::Device;

use crate::generate::{file_name, progress_bar, random_seed, write_all_or_nothing};

/// The `--xyz NAME=VALUES` flags as a plot (missing axes are "Nothing"); checked before the
/// model loads. `None` without any.
pub fn parse_axes(flags: &[String]) -> Result<Option<XyzPlot>> {
    if flags.is_empty() {
        return Ok(None);
    }
    if flags.len() > 3 {
        bail!("--xyz: at most three axes (X, Y, Z), got {}", flags.len());
    }
    let mut axes = Vec::new();
    for (flag, name) in flags.iter().zip(["X", "Y", "Z"]) {
        let (kind, values) = flag.split_once('=').ok_or_else(|| {
            anyhow!("--xyz {flag:?} ({name} axis): expected TYPE=VALUES, e.g. steps=10,20,30")
        })?;
        let kind = AxisKind::from_name(kind).map_err(|e| anyhow!("--xyz ({name} axis): {e}"))?;
        let axis = Axis::parse(kind, values).map_err(|e| anyhow!("--xyz ({name} axis): {e}"))?;
        axes.push(axis);
    }
    while axes.len() < 3 {
        axes.push(Axis::parse(AxisKind::Nothing, "")?);
    }
    let z = axes.pop().ok_or_else(|| anyhow!("three axes"))?;
    let y = axes.pop().ok_or_else(|| anyhow!("three axes"))?;
    let x = axes.pop().ok_or_else(|| anyhow!("three axes"))?;
    let mut plot = XyzPlot::new(x, y, z);
    // A1111 fixes -1 seeds once, before the first cell.
    plot.fix_seeds(&mut random_seed);
    Ok(Some(plot))
}

/// What loads another checkpoint the way `kiln generate` loaded the first one.
pub struct Loader<'a> {
    pub device: &'a Device,
    pub options: LoadOptions,
    pub budget: Option<u64>,
    pub may_tile: bool,
    /// Sets the `--control` units and the `--refiner` for a model (the plan's zero-weight one or
    /// a loaded checkpoint).
    pub for_model: &'a dyn Fn(&StableDiffusion, &mut GenerationParams) -> Result<()>,
}

/// A loaded model and its infotext names.
struct Loaded {
    model: StableDiffusion,
    hash: String,
    vae: Option<(String, String)>,
}

impl Loaded {
    fn new(model: StableDiffusion) -> Result<Loaded> {
        let hash = short_hash(&model.source.hash_file)?;
        let vae = match &model.source.vae {
            Some(file) => Some((file_name(file), short_hash(file)?)),
            None => None,
        };
        Ok(Loaded { model, hash, vae })
    }
}

struct Runner<'a> {
    loader: Loader<'a>,
    base: Loaded,
    /// The last other checkpoint loaded, with the VAE tiling its budget fit chose, its
    /// ControlNet units and refiner (the Checkpoint name axis runs outermost, so each loads once).
    other: Option<(String, Loaded, Other)>,
    /// The `--refiner`'s short hash for the cells' infotext (every cell runs the refiner).
    refiner_hash: Option<String>,
    done: usize,
    total: usize,
}

/// What a cell on another checkpoint runs with in place of the base's.
struct Other {
    prepared: Prepared,
    controls: Vec<ControlUnit>,
    refiner: Option<Refiner>,
}

impl Runner<'_> {
    fn model_for(
        &mut self,
        checkpoint: Option<&str>,
        params: &mut GenerationParams,
    ) -> Result<&Loaded> {
        let Some(name) = checkpoint else {
            return Ok(&self.base);
        };
        if self.other.as_ref().map(|(n, _, _)| n.as_str()) != Some(name) {
            self.other = None;
            let path = PathBuf::from(name);
            let l = &self.loader;
            let mut cell = params.clone();
            let prepared = prepare_with(
                &path,
                l.device,
                l.options.clone(),
                l.budget,
                l.may_tile,
                |zero| {
                    (l.for_model)(zero, &mut cell)?;
                    Ok::<_, anyhow::Error>(cell)
                },
            )?;
            let model = prepared.load(&path, l.device)?;
            let mut own = params.clone();
            (l.for_model)(&model, &mut own)?;
            let other = Other {
                prepared,
                controls: own.controls,
                refiner: own.refiner,
            };
            self.other = Some((name.to_string(), Loaded::new(model)?, other));
        }
        let (_, loaded, other) = self
            .other
            .as_ref()
            .ok_or_else(|| anyhow!("checkpoint {name} not loaded"))?;
        other.prepared.apply(params);
        params.controls = other.controls.clone();
        params.refiner = other.refiner.clone();
        Ok(loaded)
    }

    fn run_cell(&mut self, settings: &CellSettings) -> Result<CellOutput> {
        let mut params = settings.params.clone();
        let (done, total) = (self.done, self.total);
        let refiner_hash = self.refiner_hash.clone();
        let loaded = self.model_for(settings.checkpoint.as_deref(), &mut params)?;
        let bar = progress_bar();
        bar.set_message(format!("cell {}/{total}", done + 1));
        let images = generate(&loaded.model, &params, &mut |p| {
            bar.set_length(p.total as u64);
            bar.set_position(p.step as u64);
        });
        bar.finish_and_clear();
        let image = images?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("the generation gave no image"))?;
        let mut info = infotext(
            &params,
            image.seed,
            &loaded.model.source.name,
            Some(&loaded.hash),
        );
        if let Some((name, hash)) = &loaded.vae {
            add_vae(&mut info, name, Some(hash));
        }
        if let (Some(r), Some(hash)) = (&params.refiner, &refiner_hash) {
            add_refiner(&mut info, &r.model.source.name, hash, r.switch_at);
        }
        self.done += 1;
        Ok(CellOutput {
            image: image.to_rgb8(),
            info,
        })
    }
}

impl CellRunner for Runner<'_> {
    fn check_checkpoint(&mut self, name: &str) -> std::result::Result<(), String> {
        let path = Path::new(name);
        if path.is_file() || path.join("model_index.json").is_file() {
            Ok(())
        } else {
            Err("no such .safetensors file or diffusers folder".into())
        }
    }

    fn generate(&mut self, settings: &CellSettings) -> std::result::Result<CellOutput, String> {
        self.run_cell(settings).map_err(|e| format!("{e:#}"))
    }
}

/// Runs the plot with `model` (already loaded, `params` its base settings) and writes the grid
/// to `output` and each cell beside it, all or nothing.
pub fn run(
    plot: &XyzPlot,
    model: StableDiffusion,
    params: &GenerationParams,
    loader: Loader<'_>,
    output: &Path,
    max_pixels: usize,
) -> Result<()> {
    let mut runner = Runner {
        loader,
        base: Loaded::new(model)?,
        other: None,
        refiner_hash: params
            .refiner
            .as_ref()
            .map(|r| short_hash(&r.model.source.hash_file))
            .transpose()?,
        done: 0,
        total: plot.cell_count(),
    };
    let out = run_plot(plot, params, &mut runner, max_pixels, "--max-pixels")?;
    let mut images = vec![(output.to_path_buf(), &out.grid, &out.grid_info)];
    if out.sub_grids.len() > 1 {
        let names = (1..=out.sub_grids.len()).map(|z| format!("z{z}"));
        for (name, (grid, info)) in names.zip(&out.sub_grids) {
            images.push((beside(output, &name), grid, info));
        }
    }
    let names = (1..=out.cells.len()).map(|i| format!("{i:04}"));
    for (name, cell) in names.zip(&out.cells) {
        images.push((beside(output, &name), &cell.image, &cell.info));
    }
    let files = images
        .into_iter()
        .map(|(path, image, info)| Ok((path, encode_png(image, &[(PNG_KEYWORD, &info.format())])?)))
        .collect::<Result<Vec<_>>>()?;
    write_all_or_nothing(&files)?;
    for (path, _) in &files {
        println!("{}", path.display());
    }
    Ok(())
}

/// OUT-SUFFIX.png beside the grid's OUT.png (OUT-0001.png for a cell, OUT-z1.png for a z grid).
fn beside(output: &Path, suffix: &str) -> PathBuf {
    let stem = output
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    let ext = output
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_else(|| "png".into());
    output.with_file_name(format!("{stem}-{suffix}.{ext}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_from_flags() {
        let plot = parse_axes(&["steps=10,20,30".into(), "CFG Scale=5,7".into()])
            .unwrap()
            .unwrap();
        assert_eq!(plot.x.kind, AxisKind::Steps);
        assert_eq!(plot.y.kind, AxisKind::CfgScale);
        assert_eq!(plot.z.kind, AxisKind::Nothing);
        assert_eq!(plot.cell_count(), 6);
        let seeds = parse_axes(&["seed=-1,5".into()]).unwrap().unwrap();
        assert!(seeds.x.value_texts()[0] != "-1");
        assert!(parse_axes(&[]).unwrap().is_none());
        let e = parse_axes(&["steps".into()]).unwrap_err().to_string();
        assert!(e.contains("TYPE=VALUES"), "{e}");
        let e = parse_axes(&["cfg=5,seven".into()]).unwrap_err().to_string();
        assert!(e.contains("CFG Scale") && e.contains("seven"), "{e}");
        let four = vec!["seed=1".to_string(); 4];
        assert!(parse_axes(&four).is_err());
    }

    #[test]
    fn cells_and_z_grids_are_named_beside_the_grid() {
        let grid = Path::new("d/grid.png");
        assert_eq!(beside(grid, "0002"), PathBuf::from("d/grid-0002.png"));
        assert_eq!(beside(grid, "z1"), PathBuf::from("d/grid-z1.png"));
    }
}
