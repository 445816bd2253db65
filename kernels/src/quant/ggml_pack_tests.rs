//! kiln's ggml quantisers against llama.cpp's own: tests/fixtures/ggml-quants/ holds the F32 source
//! matrices (`k_source.gguf`, `legacy_source.gguf`) and what `llama-quantize --pure` made of them
//! (tools/make_ggml_quant_fixtures.py). Packing the same floats must give the same bytes, block for
//! block. The rows' scales run from 1e-5 (f16 scales below the normal range) to 30, and one row of
//! each matrix is all zero.

use std::path::PathBuf;

use half::f16;
use kiln_runtime::gguf::{GgufFile, GgufType};
use kiln_runtime::QuantFormat;

use super::ggml_pack::{quantize_ggml, GGML_PACKABLE};

fn fixture(name: &str) -> GgufFile {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/ggml-quants");
    GgufFile::open(dir.join(format!("{name}.gguf"))).unwrap()
}

fn check(format: QuantFormat, name: &str, source: &str) {
    let (src, want) = (fixture(source), fixture(name));
    let mut blocks = 0;
    let (mut zero_rows, mut subnormal_scales) = (0, 0);
    for t in ["a.weight", "b.weight", "c.weight"] {
        let s = src.tensor(t).unwrap();
        assert_eq!(s.kind, GgufType::F32, "{source} {t}");
        let values: Vec<f32> = src
            .bytes(t)
            .unwrap()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let w = want.tensor(t).unwrap();
        assert_eq!(
            (w.kind, &w.shape),
            (GgufType::Packed(format), &s.shape),
            "{name} {t}"
        );
        let got = quantize_ggml(format, &s.shape, &values).unwrap();
        let expected = want.bytes(t).unwrap();
        assert_eq!(got.len(), expected.len(), "{name} {t}");
        let bb = format.block_bytes();
        for (i, (g, e)) in got.chunks(bb).zip(expected.chunks(bb)).enumerate() {
            assert_eq!(g, e, "{name} {t}: block {i} differs from llama-quantize's");
            blocks += 1;
        }
        let k = s.shape[1];
        zero_rows += values
            .chunks(k)
            .filter(|r| r.iter().all(|&v| v == 0.0))
            .count();
        // The f16 super-block scale sits at byte 0 (q8_0/q4_0/q5_0/q4_K) or 208 (q6_K).
        let at = if format == QuantFormat::Q6K { 208 } else { 0 };
        subnormal_scales += expected
            .chunks(bb)
            .filter(|b| {
                let d = f16::from_le_bytes([b[at], b[at + 1]]);
                d != f16::ZERO && !d.is_normal()
            })
            .count();
    }
    assert!(blocks > 50, "{name}: {blocks} blocks");
    assert_eq!(zero_rows, 3, "{name}: one all-zero row per matrix");
    assert!(
        subnormal_scales > 0,
        "{name}: no block has a subnormal f16 scale"
    );
}

#[test]
fn q4_k_blocks_equal_llama_quantize() {
    check(QuantFormat::Q4K, "q4_k", "k_source");
}

#[test]
fn q6_k_blocks_equal_llama_quantize() {
    check(QuantFormat::Q6K, "q6_k", "k_source");
}

#[test]
fn q5_0_blocks_equal_llama_quantize() {
    check(QuantFormat::Q5_0, "q5_0", "legacy_source");
}

#[test]
fn q8_0_blocks_equal_llama_quantize() {
    check(QuantFormat::Q8_0, "q8_0", "legacy_source");
}

#[test]
fn q4_0_blocks_equal_llama_quantize() {
    check(QuantFormat::Q4_0, "q4_0", "legacy_source");
}

#[test]
fn unsupported_formats_and_shapes_are_refused() {
    let e = quantize_ggml(QuantFormat::Q5K, &[1, 256], &[0.0; 256])
        .unwrap_err()
        .to_string();
    assert!(e.contains("q5_k") && e.contains("q4_k"), "{e}");
    for format in GGML_PACKABLE {
        let k = format.block_len() + 16;
        let e = quantize_ggml(format, &[2, k], &vec![0.0; 2 * k])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("[2, {k}]")) && e.contains("whole"),
            "{e}"
        );
        let k = format.block_len();
        let e = quantize_ggml(format, &[2, k], &vec![0.0; k])
            .unwrap_err()
            .to_string();
        assert!(e.contains("values for shape"), "{e}");
    }
}
