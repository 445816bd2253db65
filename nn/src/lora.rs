//! Low-rank adapters (LoRA) applied on the fly beside a layer's base weight:
//! `y = W x + scale * up(down(x))`. The base weight is never touched, so packed (quantised) weights
//! stay packed and changing adapters needs no reload.
//!
//! A model that takes adapters gives its `Weights` view a `LoraRegistry` (`Weights::with_lora`);
//! every `Linear` / `Conv2d` built from that view registers a `LoraSlot` under its module name
//! (relative to where the registry was attached). A pipeline then fills slots per generation and
//! clears them after. A layer built without a registry (the LLM) has no slot and pays nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use kiln_kernels::conv::{conv2d_padded, Padding2d};
use kiln_kernels::elementwise::add;
use kiln_kernels::matmul::linear;
use kiln_runtime::{DType, Device, Error, Result, Tensor};

/// What a slot's layer is, for checking an adapter's shapes against it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoraTarget {
    /// `[out, inp]` weight (a 1x1 convolution run as a Linear is one too).
    Linear { inp: usize, out: usize },
    /// `[cout, cin, kernel, kernel]` weight with the layer's stride.
    Conv {
        cin: usize,
        cout: usize,
        kernel: usize,
    },
}

impl LoraTarget {
    /// `[out, in]` of the layer's weight seen as a matrix.
    pub fn out_in(&self) -> (usize, usize) {
        match *self {
            LoraTarget::Linear { inp, out } => (out, inp),
            LoraTarget::Conv { cin, cout, .. } => (cout, cin),
        }
    }
}

/// One adapter's matrices on the host, f32, as stored: `down` `[r, in]` or `[r, in, k, k]`,
/// `up` `[out, r]` or `[out, r, 1, 1]`, and the factor applied to `up(down(x))`.
#[derive(Clone, Debug)]
pub struct LoraDelta {
    pub down: Vec<f32>,
    pub down_shape: Vec<usize>,
    pub up: Vec<f32>,
    pub up_shape: Vec<usize>,
    pub scale: f32,
}

/// A delta on the layer's device: `scale` is already folded into `up`.
struct LoraTerm {
    down: Tensor,
    up: Tensor,
}

/// The adapters active on one layer.
pub struct LoraSlot {
    name: String,
    target: LoraTarget,
    device: Device,
    dtype: DType,
    terms: RwLock<Vec<LoraTerm>>,
}

fn bad(op: &str, name: &str, msg: String) -> Error {
    Error::shape(op, format!("LoRA for `{name}`: {msg}"))
}

impl LoraSlot {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn target(&self) -> LoraTarget {
        self.target
    }

    /// Checks `delta`'s shapes against the layer: the shapes a delta must have, or the error.
    pub fn check(&self, delta: &LoraDelta) -> Result<(Vec<usize>, Vec<usize>)> {
        let (out, inp) = self.target.out_in();
        let (d, u) = (&delta.down_shape, &delta.up_shape);
        let rank = d.first().copied().unwrap_or(0);
        let kernel = match self.target {
            LoraTarget::Linear { .. } => 1,
            LoraTarget::Conv { kernel, .. } => kernel,
        };
        let down_ok = match d.len() {
            2 => kernel == 1 && d[1] == inp,
            4 => d[1] == inp && d[2] == kernel && d[3] == kernel,
            _ => false,
        };
        let up_ok = match u.len() {
            2 => u[0] == out && u[1] == rank,
            4 => u[0] == out && u[1] == rank && u[2] == 1 && u[3] == 1,
            _ => false,
        };
        if rank == 0 || !down_ok || !up_ok {
            return Err(bad(
                "lora",
                &self.name,
                format!(
                    "down {d:?} / up {u:?} do not fit the layer's {:?} (out {out}, in {inp}, \
                     kernel {kernel})",
                    self.target
                ),
            ));
        }
        Ok(match self.target {
            LoraTarget::Linear { .. } => (vec![rank, inp], vec![out, rank]),
            LoraTarget::Conv { .. } => (vec![rank, inp, kernel, kernel], vec![out, rank, 1, 1]),
        })
    }

    /// Adds `delta` to the layer's active adapters, uploaded in the layer's dtype.
    pub fn push(&self, delta: &LoraDelta) -> Result<()> {
        let (down_shape, up_shape) = self.check(delta)?;
        let up: Vec<f32> = delta.up.iter().map(|v| v * delta.scale).collect();
        let term = LoraTerm {
            down: Tensor::from_f32(&self.device, &down_shape, self.dtype, &delta.down)?,
            up: Tensor::from_f32(&self.device, &up_shape, self.dtype, &up)?,
        };
        self.terms
            .write()
            .map_err(|_| bad("lora", &self.name, "slot lock poisoned".into()))?
            .push(term);
        Ok(())
    }

    pub fn clear(&self) {
        if let Ok(mut t) = self.terms.write() {
            t.clear();
        }
    }

    pub fn len(&self) -> usize {
        self.terms.read().map(|t| t.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `y + sum up(down(x))` for a Linear's input `x` `[.., in]` and output `y` `[.., out]`.
    pub(crate) fn apply_linear(&self, x: &Tensor, y: Tensor) -> Result<Tensor> {
        let terms = self
            .terms
            .read()
            .map_err(|_| bad("lora", &self.name, "slot lock poisoned".into()))?;
        let mut y = y;
        for t in terms.iter() {
            let h = linear(x, &t.down, None)?;
            y = add(&y, &linear(&h, &t.up, None)?)?;
        }
        Ok(y)
    }

    /// `y + sum up(down(x))` for a convolution: `down` with the layer's stride and padding, `up` 1x1.
    pub(crate) fn apply_conv(
        &self,
        x: &Tensor,
        y: Tensor,
        stride: usize,
        padding: Padding2d,
    ) -> Result<Tensor> {
        let terms = self
            .terms
            .read()
            .map_err(|_| bad("lora", &self.name, "slot lock poisoned".into()))?;
        let mut y = y;
        for t in terms.iter() {
            let h = conv2d_padded(x, &t.down, None, [stride; 2], padding)?;
            let none = Padding2d::symmetric(0, 0);
            y = add(&y, &conv2d_padded(&h, &t.up, None, [1, 1], none)?)?;
        }
        Ok(y)
    }
}

/// The layers of one model that take adapters, by module name.
#[derive(Default)]
pub struct LoraRegistry {
    /// The `Weights` prefix where the registry was attached; names are relative to it.
    root: Mutex<Option<String>>,
    slots: Mutex<BTreeMap<String, Arc<LoraSlot>>>,
}

impl LoraRegistry {
    pub fn new() -> Arc<LoraRegistry> {
        Arc::new(LoraRegistry::default())
    }

    pub(crate) fn set_root(&self, prefix: &str) {
        if let Ok(mut r) = self.root.lock() {
            r.get_or_insert_with(|| prefix.to_string());
        }
    }

    /// The slot for the layer at the full weight prefix `prefix`: the existing one when the layer
    /// is built again (a streamed UNet block rebuilds per step).
    pub(crate) fn register(
        &self,
        prefix: &str,
        target: LoraTarget,
        device: &Device,
        dtype: DType,
    ) -> Option<Arc<LoraSlot>> {
        let root = self.root.lock().ok()?.clone().unwrap_or_default();
        let name = match prefix.strip_prefix(root.as_str()) {
            Some(rest) if root.is_empty() => rest.to_string(),
            Some(rest) => rest.strip_prefix('.').unwrap_or(rest).to_string(),
            None => prefix.to_string(),
        };
        let mut slots = self.slots.lock().ok()?;
        let slot = slots.entry(name.clone()).or_insert_with(|| {
            Arc::new(LoraSlot {
                name,
                target,
                device: device.clone(),
                dtype,
                terms: RwLock::new(Vec::new()),
            })
        });
        Some(slot.clone())
    }

    /// Every registered module name, sorted.
    pub fn names(&self) -> Vec<String> {
        self.slots
            .lock()
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub fn slot(&self, name: &str) -> Option<Arc<LoraSlot>> {
        self.slots.lock().ok()?.get(name).cloned()
    }

    /// Removes every active adapter from every layer.
    pub fn clear(&self) {
        if let Ok(slots) = self.slots.lock() {
            for s in slots.values() {
                s.clear();
            }
        }
    }

    /// How many layers have at least one adapter active.
    pub fn active_layers(&self) -> usize {
        self.slots
            .lock()
            .map(|s| s.values().filter(|s| !s.is_empty()).count())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests;
