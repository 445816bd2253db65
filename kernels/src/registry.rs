//! Every kernel variant kiln can compile, so one test can validate them all offline with naga.

use kiln_runtime::preprocess::{KernelSource, Variant};

pub fn all_variants() -> Vec<(&'static KernelSource, &'static str, Variant)> {
    let mut v = Vec::new();
    v.extend(crate::argmax::variants());
    v.extend(crate::attention::variants());
    v.extend(crate::conv::variants());
    v.extend(crate::elementwise::variants());
    v.extend(crate::embedding::variants());
    v.extend(crate::kv_cache::variants());
    v.extend(crate::layout::variants());
    v.extend(crate::matmul::variants());
    v.extend(crate::norm::variants());
    v.extend(crate::quant::variants());
    v.extend(crate::rope::variants());
    v.extend(crate::scatter::variants());
    v.extend(crate::softmax::variants());
    v.extend(crate::timestep::variants());
    v.extend(crate::upsample::variants());
    v
}

#[cfg(test)]
mod tests {
    use kiln_runtime::preprocess::preprocess;

    #[test]
    fn every_kernel_variant_parses_and_validates_with_naga() {
        let variants = super::all_variants();
        assert!(!variants.is_empty());
        for (kernel, entry, variant) in variants {
            let text = preprocess(kernel, &variant).unwrap();
            let module = naga::front::wgsl::parse_str(&text).unwrap_or_else(|e| {
                panic!("{} {variant:?}: {}", kernel.file, e.emit_to_string(&text))
            });
            assert!(
                module.entry_points.iter().any(|e| e.name == entry),
                "{}: no entry point `{entry}`",
                kernel.file
            );
            let caps = naga::valid::Capabilities::SHADER_FLOAT16;
            naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
                .validate(&module)
                .unwrap_or_else(|e| {
                    panic!("{} {variant:?}: {}", kernel.file, e.emit_to_string(&text))
                });
        }
    }
}
