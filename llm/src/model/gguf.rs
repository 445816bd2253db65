//! llama.cpp GGUF files of Mistral / Llama decoders: the config from the metadata, and each weight
//! name kiln's builder asks for mapped to llama.cpp's (`token_embd`, `blk.N.attn_q`, ...,
//! `output_norm`, `output`; no `output`: the head is tied to `token_embd`).
//!
//! llama.cpp's converter permutes the rows of Q and K from Hugging Face's half-split RoPE layout
//! (a head's first half of rows pairs with its second half) to interleaved pairs (rows 2i, 2i+1).
//! Reading those rows back in Hugging Face's order gives the checkpoint's own Q and K, so the
//! decoder runs its half-split RoPE unchanged; the permutation moves whole rows, so packed rows
//! move without unpacking.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use kiln_nn::weights::GgufName;
use kiln_runtime::gguf::GgufFile;
use kiln_runtime::{Error, Result};

use crate::config::MistralConfig;

/// Whether `path` names a GGUF file (by its extension), rather than a model folder.
pub fn is_gguf(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// Row `r` of Hugging Face's Q (or K) with `heads` heads of `head_dim` is row `rows[r]` of
/// llama.cpp's: within a head, HF row `half * head_dim / 2 + i` is stored at row `2 i + half`.
pub fn rope_rows(heads: usize, head_dim: usize) -> Vec<usize> {
    let half = head_dim / 2;
    (0..heads * head_dim)
        .map(|r| {
            let (h, within) = (r / head_dim, r % head_dim);
            let (j, i) = (within / half, within % half);
            h * head_dim + 2 * i + j
        })
        .collect()
}

/// The names the decoder asks for, each with the GGUF tensor it reads. Every tensor of the file
/// must be one of them: anything else (biases, RoPE frequency factors, experts) is a part of a
/// model kiln's decoder does not run, refused naming the tensor.
pub fn llama_names(file: &GgufFile, config: &MistralConfig) -> Result<HashMap<String, GgufName>> {
    // Nine tensors per layer: a corrupt block count is refused before any name is made.
    let tensors = file.names().len();
    if config.num_hidden_layers > tensors / 9 {
        return Err(Error::load(
            file.path(),
            format!(
                "`{}.block_count` is {} but the file has {tensors} tensors (9 per layer)",
                config.model_type, config.num_hidden_layers
            ),
        ));
    }
    let mut names = HashMap::new();
    let mut add = |kiln: String, name: GgufName| {
        names.insert(kiln, name);
    };
    add(
        "model.embed_tokens.weight".into(),
        GgufName::new("token_embd.weight"),
    );
    add(
        "model.norm.weight".into(),
        GgufName::new("output_norm.weight"),
    );
    if file.tensor("output.weight").is_some() {
        add("lm_head.weight".into(), GgufName::new("output.weight"));
    }
    // The row orders, made only for as many rows as the file's Q has (a corrupt head count is
    // not allocated); a tensor of other rows is read as stored, so the shape check names it.
    let limit = file
        .tensor("blk.0.attn_q.weight")
        .and_then(|t| t.shape.first().copied())
        .unwrap_or(0);
    let rows = |heads: usize| {
        heads
            .checked_mul(config.head_dim)
            .filter(|&n| n <= limit)
            .map(|_| rope_rows(heads, config.head_dim))
    };
    let (q_rows, k_rows) = (
        rows(config.num_attention_heads),
        rows(config.num_key_value_heads),
    );
    let with_rows = |stored: String, rows: &Option<Vec<usize>>, file: &GgufFile| {
        let fits = file.tensor(&stored).is_some_and(|t| {
            rows.as_ref()
                .is_some_and(|r| t.shape.first() == Some(&r.len()))
        });
        match rows {
            Some(r) if fits => GgufName::with_rows(stored, r.clone()),
            _ => GgufName::new(stored),
        }
    };
    for i in 0..config.num_hidden_layers {
        let (hf, gg) = (format!("model.layers.{i}"), format!("blk.{i}"));
        for (kiln, stored) in [
            ("input_layernorm", "attn_norm"),
            ("self_attn.v_proj", "attn_v"),
            ("self_attn.o_proj", "attn_output"),
            ("post_attention_layernorm", "ffn_norm"),
            ("mlp.gate_proj", "ffn_gate"),
            ("mlp.up_proj", "ffn_up"),
            ("mlp.down_proj", "ffn_down"),
        ] {
            add(
                format!("{hf}.{kiln}.weight"),
                GgufName::new(format!("{gg}.{stored}.weight")),
            );
        }
        add(
            format!("{hf}.self_attn.q_proj.weight"),
            with_rows(format!("{gg}.attn_q.weight"), &q_rows, file),
        );
        add(
            format!("{hf}.self_attn.k_proj.weight"),
            with_rows(format!("{gg}.attn_k.weight"), &k_rows, file),
        );
    }
    let used: HashSet<&str> = names.values().map(|n| n.stored.as_str()).collect();
    if let Some(extra) = file.names().into_iter().find(|n| !used.contains(n)) {
        let why = match extra {
            "rope_freqs.weight" => {
                "RoPE frequency factors (Llama 3.1's scaled RoPE) are not supported"
            }
            n if n.contains("_exps") || n.contains("ffn_gate_inp") => {
                "mixture-of-experts layers are not supported"
            }
            n if n.ends_with(".bias") => "kiln's decoder has no biases",
            n if n.starts_with("blk.") => {
                "not part of the llama layout (or a layer past the file's block_count)"
            }
            _ => "not part of the llama layout kiln runs",
        };
        let t = file
            .tensor(extra)
            .map(|t| t.shape.clone())
            .unwrap_or_default();
        return Err(Error::load(
            file.path(),
            format!("tensor `{extra}` {t:?}: {why}"),
        ));
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_rows_undo_the_converters_permutation() {
        // llama.cpp: w.reshape(heads, 2, head_dim / 2, cols).swapaxes(1, 2).reshape(w.shape).
        let (heads, dim) = (3, 8);
        let hf: Vec<usize> = (0..heads * dim).collect();
        let mut stored = vec![0; hf.len()];
        for h in 0..heads {
            for j in 0..2 {
                for i in 0..dim / 2 {
                    stored[h * dim + i * 2 + j] = hf[h * dim + j * dim / 2 + i];
                }
            }
        }
        let rows = rope_rows(heads, dim);
        let back: Vec<usize> = rows.iter().map(|&r| stored[r]).collect();
        assert_eq!(back, hf);
    }
}
