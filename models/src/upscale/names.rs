//! The tensor names an upscaler file may use, shown under one canonical set (BasicSR's): a
//! `params_ema.` / `params.` prefix (Real-ESRGAN's .pth dicts, flattened by a conversion) is
//! dropped, and the original ESRGAN repo's `model.N` layout and the "new-arch" ESRGAN names
//! (`RRDB_trunk`, `trunk_conv`, `upconv1`, `HRconv`) are renamed to RRDBNet's. The view records
//! which tensors the built model took, so a file with tensors the architecture has no place for
//! fails instead of being half used.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;

use kiln_nn::weights::TensorSource;
use kiln_runtime::loader::close_names;
use kiln_runtime::{DType, Device, Error, QTensor, QuantFormat, Result, Tensor};

const PREFIXES: [&str; 3] = ["params_ema.", "params.", "module."];

pub struct CanonicalNames {
    inner: Box<dyn TensorSource>,
    /// canonical name -> stored name
    map: BTreeMap<String, String>,
    used: Mutex<BTreeSet<String>>,
}

impl CanonicalNames {
    pub fn new(inner: Box<dyn TensorSource>) -> Result<CanonicalNames> {
        let stored = inner.names();
        let prefix = PREFIXES
            .iter()
            .find(|p| !stored.is_empty() && stored.iter().all(|n| n.starts_with(*p)))
            .copied()
            .unwrap_or("");
        let bare: Vec<(&str, String)> = stored
            .iter()
            .map(|n| (&n[prefix.len()..], n.clone()))
            .collect();
        let old = bare.iter().any(|(n, _)| n.starts_with("model.0."));
        let tail_convs = if old {
            old_tail_convs(&bare)
        } else {
            Vec::new()
        };
        let mut map = BTreeMap::new();
        for (name, full) in &bare {
            let canonical = if old {
                old_name(name, &tail_convs)
            } else {
                new_arch_name(name)
            };
            let canonical = canonical.ok_or_else(|| {
                Error::load(
                    inner.origin(),
                    format!("tensor `{full}` has no place in an ESRGAN / Real-ESRGAN upscaler"),
                )
            })?;
            if let Some(prev) = map.insert(canonical.clone(), full.clone()) {
                return Err(Error::load(
                    inner.origin(),
                    format!("tensors `{prev}` and `{full}` both name `{canonical}`"),
                ));
            }
        }
        Ok(CanonicalNames {
            inner,
            map,
            used: Mutex::new(BTreeSet::new()),
        })
    }

    fn stored(&self, name: &str) -> Result<&str> {
        match self.map.get(name) {
            Some(s) => {
                self.used
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name.to_string());
                Ok(s)
            }
            None => Err(self.missing(name)),
        }
    }

    /// Errors naming the stored tensors the model did not take.
    pub fn check_all_used(&self) -> Result<()> {
        let used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let unused: Vec<&str> = self
            .map
            .iter()
            .filter(|(k, _)| !used.contains(*k))
            .map(|(_, v)| v.as_str())
            .collect();
        if unused.is_empty() {
            return Ok(());
        }
        Err(Error::load(
            self.inner.origin(),
            format!(
                "{} tensor(s) the upscaler architecture has no use for, e.g. `{}` (a model kiln \
                 does not support, or a damaged file)",
                unused.len(),
                unused[..unused.len().min(3)].join("`, `")
            ),
        ))
    }
}

/// The numbered convolutions after `model.1` in the old layout, in order: the upsampling convs,
/// then `conv_hr`, then `conv_last` (x4: model.3, model.6, model.8, model.10).
fn old_tail_convs(bare: &[(&str, String)]) -> Vec<usize> {
    let set: BTreeSet<usize> = bare
        .iter()
        .filter_map(|(n, _)| n.strip_prefix("model.")?.split_once('.'))
        .filter_map(|(i, _)| i.parse::<usize>().ok())
        .filter(|&i| i >= 2)
        .collect();
    set.into_iter().collect()
}

fn old_name(name: &str, tail: &[usize]) -> Option<String> {
    let rest = name.strip_prefix("model.")?;
    let (index, leaf) = rest.split_once('.')?;
    let index: usize = index.parse().ok()?;
    match index {
        0 => Some(format!("conv_first.{leaf}")),
        1 => {
            // sub.N.RDBk.convj.0.weight, or sub.LAST.weight (the trunk conv)
            let sub = leaf.strip_prefix("sub.")?;
            let (block, inner) = sub.split_once('.')?;
            let block: usize = block.parse().ok()?;
            if matches!(inner, "weight" | "bias") {
                return Some(format!("conv_body.{inner}"));
            }
            let (rdb, inner) = inner.split_once('.')?;
            let k = rdb.strip_prefix("RDB")?;
            let (conv, inner) = inner.split_once('.')?;
            let wb = inner.strip_prefix("0.")?;
            Some(format!("body.{block}.rdb{k}.{conv}.{wb}"))
        }
        _ => {
            let pos = tail.iter().position(|&i| i == index)?;
            let ups = tail.len().checked_sub(2)?;
            let conv = if pos < ups {
                format!("conv_up{}", pos + 1)
            } else if pos == ups {
                "conv_hr".to_string()
            } else {
                "conv_last".to_string()
            };
            Some(format!("{conv}.{leaf}"))
        }
    }
}

/// BasicSR names stay; the "new-arch" ESRGAN names are renamed.
fn new_arch_name(name: &str) -> Option<String> {
    let renamed = if let Some(rest) = name.strip_prefix("RRDB_trunk.") {
        let (block, rest) = rest.split_once('.')?;
        let (rdb, rest) = rest.split_once('.')?;
        format!("body.{block}.rdb{}.{rest}", rdb.strip_prefix("RDB")?)
    } else if let Some(rest) = name.strip_prefix("trunk_conv.") {
        format!("conv_body.{rest}")
    } else if let Some(rest) = name.strip_prefix("HRconv.") {
        format!("conv_hr.{rest}")
    } else if let Some(rest) = name.strip_prefix("upconv") {
        format!("conv_up{rest}")
    } else {
        name.to_string()
    };
    Some(renamed)
}

impl TensorSource for CanonicalNames {
    fn origin(&self) -> PathBuf {
        self.inner.origin()
    }

    fn names(&self) -> Vec<String> {
        self.map.keys().cloned().collect()
    }

    fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        self.inner.shape_of(self.map.get(name)?)
    }

    fn load(
        &self,
        name: &str,
        expected: Option<&[usize]>,
        device: &Device,
        dtype: DType,
    ) -> Result<Tensor> {
        self.inner.load(self.stored(name)?, expected, device, dtype)
    }

    fn load_part(
        &self,
        name: &str,
        offset: usize,
        shape: &[usize],
        device: &Device,
        dtype: DType,
    ) -> Result<Tensor> {
        self.inner
            .load_part(self.stored(name)?, offset, shape, device, dtype)
    }

    fn load_packed(
        &self,
        name: &str,
        expected: &[usize],
        device: &Device,
    ) -> Result<Option<QTensor>> {
        self.inner.load_packed(self.stored(name)?, expected, device)
    }

    fn load_quantized(
        &self,
        name: &str,
        expected: &[usize],
        matrix: [usize; 2],
        format: QuantFormat,
        device: &Device,
    ) -> Result<QTensor> {
        self.inner
            .load_quantized(self.stored(name)?, expected, matrix, format, device)
    }

    fn missing(&self, name: &str) -> Error {
        let names = self.names();
        Error::MissingTensor {
            path: self.origin(),
            name: name.to_string(),
            close: close_names(name, names.iter().map(String::as_str), 5),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_esrgan_x4_names_map_to_basicsr() {
        let tail = [3, 6, 8, 10];
        let cases = [
            ("model.0.weight", "conv_first.weight"),
            (
                "model.1.sub.0.RDB1.conv1.0.weight",
                "body.0.rdb1.conv1.weight",
            ),
            (
                "model.1.sub.22.RDB3.conv5.0.bias",
                "body.22.rdb3.conv5.bias",
            ),
            ("model.1.sub.23.weight", "conv_body.weight"),
            ("model.3.bias", "conv_up1.bias"),
            ("model.6.weight", "conv_up2.weight"),
            ("model.8.weight", "conv_hr.weight"),
            ("model.10.bias", "conv_last.bias"),
        ];
        for (old, new) in cases {
            assert_eq!(old_name(old, &tail).as_deref(), Some(new), "{old}");
        }
        // x2: one upsampler, so model.5 is conv_hr and model.7 conv_last.
        assert_eq!(
            old_name("model.5.weight", &[3, 5, 7]).unwrap(),
            "conv_hr.weight"
        );
        assert_eq!(
            old_name("model.7.weight", &[3, 5, 7]).unwrap(),
            "conv_last.weight"
        );
        assert_eq!(old_name("model.2.weight", &[3, 6, 8, 10]), None);
    }

    #[test]
    fn new_arch_names_map_to_basicsr() {
        assert_eq!(
            new_arch_name("RRDB_trunk.4.RDB2.conv3.weight").unwrap(),
            "body.4.rdb2.conv3.weight"
        );
        assert_eq!(new_arch_name("trunk_conv.bias").unwrap(), "conv_body.bias");
        assert_eq!(new_arch_name("upconv2.weight").unwrap(), "conv_up2.weight");
        assert_eq!(new_arch_name("HRconv.weight").unwrap(), "conv_hr.weight");
        assert_eq!(new_arch_name("body.3.weight").unwrap(), "body.3.weight");
    }
}
