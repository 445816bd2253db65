//! The names and shapes stored in a single-file checkpoint, with the queries config inference needs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use kiln_runtime::{Error, Result};

use super::stored::split_index;

pub struct Inventory {
    pub origin: PathBuf,
    pub shapes: BTreeMap<String, Vec<usize>>,
}

impl Inventory {
    /// Every name and shape of `source`.
    pub fn of(source: &dyn kiln_nn::weights::TensorSource) -> Inventory {
        let shapes = source
            .names()
            .into_iter()
            .filter_map(|n| source.shape_of(&n).map(|s| (n, s)))
            .collect();
        Inventory {
            origin: source.origin(),
            shapes,
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.shapes.contains_key(name)
    }

    pub fn get(&self, name: &str) -> Option<&[usize]> {
        self.shapes.get(name).map(Vec::as_slice)
    }

    /// The shape of `name`, required to have `rank` dimensions to infer `what`.
    pub fn shape(&self, name: &str, rank: usize, what: &str) -> Result<&[usize]> {
        match self.get(name) {
            Some(shape) if shape.len() == rank => Ok(shape),
            Some(shape) => Err(Error::load(
                &self.origin,
                format!(
                    "tensor `{name}` has shape {shape:?}; a rank-{rank} tensor was expected (inferring {what})"
                ),
            )),
            None => Err(Error::load(
                &self.origin,
                format!("no tensor named `{name}`, needed to infer {what}"),
            )),
        }
    }

    /// The names under `prefix`.
    pub fn under<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a String> + 'a {
        self.shapes
            .range(prefix.to_string()..)
            .map(|(name, _)| name)
            .take_while(move |name| name.starts_with(prefix))
    }

    pub fn any_under(&self, prefix: &str) -> bool {
        self.under(prefix).next().is_some()
    }

    /// The indices N of the names `prefix` + `N.` + anything.
    pub fn indices(&self, prefix: &str) -> BTreeSet<usize> {
        self.under(prefix)
            .filter_map(|name| split_index(&name[prefix.len()..]).map(|(i, _)| i))
            .collect()
    }

    /// The `n` largest groups of names by their first two dotted parts (`model.diffusion_model.`),
    /// with their sizes: what a file holds, for messages.
    pub fn groups(&self, n: usize) -> Vec<(String, usize)> {
        let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
        for name in self.shapes.keys() {
            let group: String = name.split_inclusive('.').take(2).collect();
            *counts.entry(group).or_default() += 1;
        }
        let mut groups: Vec<(String, usize)> = counts.into_iter().collect();
        groups.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        groups.truncate(n);
        groups
    }

    /// What the file holds, in a few words for messages: its largest groups of names.
    pub fn found(&self) -> String {
        let groups: Vec<String> = self
            .groups(6)
            .into_iter()
            .map(|(group, n)| format!("`{group}*` ({n})"))
            .collect();
        if groups.is_empty() {
            "no tensors at all".to_string()
        } else {
            format!("tensors under {}", groups.join(", "))
        }
    }

    /// How many consecutive indices from 0 `prefix` has (`prefix` + `0.`, `1.`, ...).
    pub fn count(&self, prefix: &str) -> usize {
        let indices = self.indices(prefix);
        (0..).take_while(|i| indices.contains(i)).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_prefixes() {
        let shapes = [
            "a.blocks.0.w",
            "a.blocks.1.w",
            "a.blocks.1.b",
            "a.blocks.3.w",
            "a.blocksx.9.w",
            "b.w",
        ]
        .iter()
        .map(|n| (n.to_string(), vec![1]))
        .collect();
        let inv = Inventory {
            origin: "x".into(),
            shapes,
        };
        assert_eq!(inv.count("a.blocks."), 2);
        assert_eq!(
            inv.indices("a.blocks.").into_iter().collect::<Vec<_>>(),
            [0, 1, 3]
        );
        assert_eq!(inv.under("a.").count(), 5);
        assert!(!inv.any_under("c."));
        assert_eq!(
            inv.groups(2),
            [("a.blocks.".to_string(), 4), ("a.blocksx.".to_string(), 1)]
        );
        let e = inv.shape("b.w", 2, "the thing").unwrap_err().to_string();
        assert!(
            e.contains("b.w") && e.contains("[1]") && e.contains("the thing"),
            "{e}"
        );
    }
}
