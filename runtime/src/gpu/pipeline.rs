//! Compiled compute pipelines, one per (kernel file, entry point, variant), built on first use.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::lock;
use crate::preprocess::{preprocess, KernelSource, Variant};
use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PipelineKey {
    pub file: &'static str,
    pub entry: &'static str,
    pub variant: Variant,
}

#[derive(Default)]
pub(crate) struct PipelineCache {
    map: Mutex<HashMap<PipelineKey, Arc<wgpu::ComputePipeline>>>,
    /// Host time spent compiling, so per-step overhead figures can leave it out.
    compile_nanos: AtomicU64,
}

impl PipelineCache {
    pub fn get(
        &self,
        device: &wgpu::Device,
        kernel: &KernelSource,
        entry: &'static str,
        variant: &Variant,
    ) -> Result<Arc<wgpu::ComputePipeline>> {
        let key = PipelineKey {
            file: kernel.file,
            entry,
            variant: variant.clone(),
        };
        // Held while compiling so two threads never build the same pipeline twice.
        let mut map = lock(&self.map);
        if let Some(p) = map.get(&key) {
            return Ok(p.clone());
        }
        let start = Instant::now();
        let compiled = compile(device, kernel, entry, variant);
        self.compile_nanos
            .fetch_add(super::stats::nanos_since(start), Ordering::Relaxed);
        let pipeline = Arc::new(compiled?);
        map.insert(key, pipeline.clone());
        Ok(pipeline)
    }

    pub fn compile_nanos(&self) -> u64 {
        self.compile_nanos.load(Ordering::Relaxed)
    }

    pub fn len(&self) -> usize {
        lock(&self.map).len()
    }
}

fn compile(
    device: &wgpu::Device,
    kernel: &KernelSource,
    entry: &'static str,
    variant: &Variant,
) -> Result<wgpu::ComputePipeline> {
    let source = preprocess(kernel, variant)?;
    let label = format!("{}:{entry}", kernel.file);
    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(&label),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(&label),
        layout: None,
        module: &module,
        entry_point: Some(entry),
        compilation_options: wgpu::PipelineCompilationOptions::default(),
        cache: None,
    });
    match pollster::block_on(scope.pop()) {
        None => Ok(pipeline),
        Some(e) => Err(Error::Shader {
            kernel: kernel.file.to_string(),
            msg: format!(
                "entry `{entry}`, variant {:?} {:?}: {e}",
                variant.dtype, variant.defines
            ),
        }),
    }
}
