//! Which token's hidden state is the pooled output: transformers' `CLIPTextTransformer` rule.

use kiln_runtime::{Error, Result};

use super::config::{ClipTextConfig, TokenIds};

/// The pooled position of each row of `ids` (`[batch, len]`, row-major).
///
/// transformers keeps two rules. Configs written before its PR #24773 carry the wrong
/// `eos_token_id: 2` (SD 1.x's and SD 2.x's text encoders among them); for those it takes the
/// position of the largest id, which is the first EOS because 49407 is the largest id in the CLIP
/// vocabulary. Any other `eos_token_id` pools at the first occurrence of that id, and at position 0
/// when a row has none (`argmax` of all zeros), which this reproduces.
pub fn eos_positions(cfg: &ClipTextConfig, ids: &[u32], len: usize) -> Result<Vec<usize>> {
    let eos = match &cfg.eos_token_id {
        Some(TokenIds::One(id)) => *id,
        other => {
            return Err(Error::shape(
                "clip pooled output",
                format!("needs a single `eos_token_id` in the config, found {other:?}"),
            ))
        }
    };
    Ok(ids
        .chunks(len)
        .map(|row| {
            if eos == 2 {
                first_argmax(row)
            } else {
                row.iter().position(|&t| i64::from(t) == eos).unwrap_or(0)
            }
        })
        .collect())
}

/// `torch.argmax`: the first index of the maximum.
fn first_argmax(row: &[u32]) -> usize {
    let mut best = 0;
    for (i, &t) in row.iter().enumerate() {
        if t > row[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(eos: Option<TokenIds>) -> ClipTextConfig {
        ClipTextConfig {
            eos_token_id: eos,
            ..Default::default()
        }
    }

    #[test]
    fn legacy_eos_2_takes_the_first_largest_id() {
        let ids = [5, 9, 7, 9, 1, 3, 4, 2];
        let got = eos_positions(&cfg(Some(TokenIds::One(2))), &ids, 4).unwrap();
        assert_eq!(got, [1, 2]);
    }

    #[test]
    fn other_eos_takes_the_first_eos_or_zero() {
        let ids = [5, 7, 9, 7, 1, 3, 4, 2];
        let got = eos_positions(&cfg(Some(TokenIds::One(7))), &ids, 4).unwrap();
        assert_eq!(got, [1, 0]);
    }

    #[test]
    fn list_or_missing_eos_is_an_error() {
        let ids = [1, 2];
        assert!(eos_positions(&cfg(None), &ids, 2).is_err());
        let many = Some(TokenIds::Many(vec![1, 2]));
        let err = eos_positions(&cfg(many), &ids, 2).unwrap_err();
        assert!(err.to_string().contains("eos_token_id"), "{err}");
    }
}
