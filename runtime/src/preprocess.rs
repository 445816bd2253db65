//! The one piece of templating kiln's WGSL gets: an element-type prelude, numeric constants, and
//! `#if NAME` / `#else` / `#endif` lines. Kernels stay readable WGSL files; variants (f16 storage, vec4
//! loads, fused epilogues) are chosen by name rather than assembled by string building.

use crate::{DType, Error, Result};

/// A kernel's source file, embedded in the binary.
#[derive(Clone, Copy, Debug)]
pub struct KernelSource {
    /// File name, used in error messages and as the pipeline cache key ("matmul.wgsl").
    pub file: &'static str,
    pub source: &'static str,
}

/// One compiled variant of a kernel: the storage element type `T` and named constants.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Variant {
    pub dtype: DType,
    /// Each becomes `const NAME: u32 = value;` and can be tested with `#if NAME` (true when non-zero).
    pub defines: Vec<(&'static str, u32)>,
}

impl Variant {
    pub fn new(dtype: DType) -> Self {
        Variant {
            dtype,
            defines: Vec::new(),
        }
    }

    pub fn define(mut self, name: &'static str, value: u32) -> Self {
        self.defines.push((name, value));
        self
    }

    fn value(&self, name: &str) -> Option<u32> {
        self.defines
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }
}

/// Produces the WGSL text of one variant. Errors name the file and line of a malformed directive.
pub fn preprocess(kernel: &KernelSource, variant: &Variant) -> Result<String> {
    let err = |line: usize, msg: &str| Error::Shader {
        kernel: kernel.file.to_string(),
        msg: format!("line {}: {msg}", line + 1),
    };
    let mut out = String::with_capacity(kernel.source.len() + 256);
    match variant.dtype {
        DType::F16 => out.push_str("enable f16;\nalias T = f16;\n"),
        DType::F32 => out.push_str("alias T = f32;\n"),
        DType::U32 => out.push_str("alias T = u32;\n"),
    }
    for (name, value) in &variant.defines {
        out.push_str(&format!("const {name}: u32 = {value}u;\n"));
    }
    // Each stack entry: (this branch is active, some branch of this #if was already taken).
    let mut stack: Vec<(bool, bool)> = Vec::new();
    let active = |stack: &[(bool, bool)]| stack.iter().all(|(on, _)| *on);
    for (i, line) in kernel.source.lines().enumerate() {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix("#if ") {
            let name = name.trim();
            let (negate, name) = match name.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, name),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(err(i, &format!("bad #if condition `{name}`")));
            }
            let on = variant.value(name).unwrap_or(0) != 0;
            let on = on != negate;
            stack.push((on, on));
            out.push('\n');
        } else if trimmed == "#else" {
            let top = stack
                .last_mut()
                .ok_or_else(|| err(i, "#else without #if"))?;
            *top = (!top.1, true);
            out.push('\n');
        } else if trimmed == "#endif" {
            stack.pop().ok_or_else(|| err(i, "#endif without #if"))?;
            out.push('\n');
        } else if trimmed.starts_with('#') {
            return Err(err(i, &format!("unknown directive `{trimmed}`")));
        } else {
            // Blank lines keep line numbers in compiler messages equal to the file's (plus the prelude).
            if active(&stack) {
                out.push_str(line);
            }
            out.push('\n');
        }
    }
    if !stack.is_empty() {
        return Err(err(kernel.source.lines().count(), "#if without #endif"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: KernelSource = KernelSource {
        file: "test.wgsl",
        source: "a\n#if BIAS\nb\n#if !VEC\nc\n#else\nd\n#endif\n#else\ne\n#endif\nf",
    };

    fn body(v: &Variant) -> Vec<String> {
        preprocess(&SRC, v)
            .unwrap()
            .lines()
            .filter(|l| l.len() == 1)
            .map(String::from)
            .collect()
    }

    #[test]
    fn branches_follow_defines() {
        assert_eq!(body(&Variant::new(DType::F32)), ["a", "e", "f"]);
        assert_eq!(
            body(&Variant::new(DType::F32).define("BIAS", 1)),
            ["a", "b", "c", "f"]
        );
        let both = Variant::new(DType::F32).define("BIAS", 1).define("VEC", 1);
        assert_eq!(body(&both), ["a", "b", "d", "f"]);
    }

    #[test]
    fn prelude_sets_element_type_and_constants() {
        let text = preprocess(&SRC, &Variant::new(DType::F16).define("TILE", 64)).unwrap();
        assert!(text.starts_with("enable f16;\nalias T = f16;\nconst TILE: u32 = 64u;\n"));
    }

    #[test]
    fn malformed_directives_name_the_file_and_line() {
        let bad = KernelSource {
            file: "bad.wgsl",
            source: "x\n#if A\ny",
        };
        let msg = preprocess(&bad, &Variant::new(DType::F32))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("bad.wgsl") && msg.contains("#endif"), "{msg}");
        let bad = KernelSource {
            file: "bad.wgsl",
            source: "#endif",
        };
        let msg = preprocess(&bad, &Variant::new(DType::F32))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("line 1"), "{msg}");
    }
}
