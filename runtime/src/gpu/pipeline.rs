//! Compiled compute pipelines, one per (kernel file, entry point, variant), built on first use, each
//! with an explicit bind group layout (`reflect.rs`) and an id the bind group cache keys on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{lock, reflect};
use crate::preprocess::{preprocess, KernelSource, Variant};
use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PipelineKey {
    pub file: &'static str,
    pub entry: &'static str,
    pub variant: Variant,
}

pub(crate) struct Kernel {
    /// Unique within the context, never reused.
    pub id: u64,
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
    /// `file:entry`, for profiling labels.
    pub label: String,
}

#[derive(Default)]
pub(crate) struct PipelineCache {
    map: Mutex<HashMap<PipelineKey, Arc<Kernel>>>,
    /// Host time spent compiling, so per-step overhead figures can leave it out.
    compile_nanos: AtomicU64,
}

impl PipelineCache {
    /// Takes the variant by value so a lookup builds its key without cloning (launchers make a fresh
    /// `Variant` per dispatch anyway).
    pub fn get(
        &self,
        device: &wgpu::Device,
        kernel: &KernelSource,
        entry: &'static str,
        variant: Variant,
    ) -> Result<Arc<Kernel>> {
        let key = PipelineKey {
            file: kernel.file,
            entry,
            variant,
        };
        // Held while compiling so two threads never build the same pipeline twice.
        let mut map = lock(&self.map);
        if let Some(p) = map.get(&key) {
            return Ok(p.clone());
        }
        let start = Instant::now();
        let id = map.len() as u64;
        let compiled = compile(device, kernel, entry, &key.variant, id);
        self.compile_nanos
            .fetch_add(super::stats::nanos_since(start), Ordering::Relaxed);
        let pipeline = Arc::new(compiled?);
        map.insert(key, pipeline.clone());
        Ok(pipeline)
    }

    pub fn len(&self) -> usize {
        lock(&self.map).len()
    }

    pub fn compile_nanos(&self) -> u64 {
        self.compile_nanos.load(Ordering::Relaxed)
    }
}

fn compile(
    device: &wgpu::Device,
    kernel: &KernelSource,
    entry: &'static str,
    variant: &Variant,
    id: u64,
) -> Result<Kernel> {
    let source = preprocess(kernel, variant)?;
    let label = format!("{}:{entry}", kernel.file);
    let storage = reflect::storage_bindings(kernel.file, &source, entry)?;
    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let layout = reflect::bind_group_layout(device, &label, &storage);
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(&label),
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(&label),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(&label),
        layout: Some(&pipeline_layout),
        module: &module,
        entry_point: Some(entry),
        compilation_options: wgpu::PipelineCompilationOptions::default(),
        cache: None,
    });
    match pollster::block_on(scope.pop()) {
        None => Ok(Kernel {
            id,
            pipeline,
            layout,
            label,
        }),
        Some(e) => Err(Error::Shader {
            kernel: kernel.file.to_string(),
            msg: format!(
                "entry `{entry}`, variant {:?} {:?}: {e}",
                variant.dtype, variant.defines
            ),
        }),
    }
}
