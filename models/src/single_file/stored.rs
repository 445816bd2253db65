//! How one diffusers-named tensor is stored in an original-layout checkpoint: under which name, and
//! which part of that tensor it is.

/// The stored form of one diffusers tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// The full name in the single file (`model.diffusion_model.input_blocks.1.0.in_layers.2.weight`).
    pub name: String,
    pub part: Part,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The tensor as stored.
    Whole,
    /// A Linear weight [o, i] stored as a 1x1 convolution [o, i, 1, 1] (the VAE's mid-block attention
    /// in CompVis' code). A checkpoint that already stores [o, i] is taken as it is, as diffusers does.
    Conv1x1,
    /// Third k (q, k, v) along dim 0 of a fused projection (OpenCLIP's `attn.in_proj_weight` [3d, d]
    /// and `in_proj_bias` [3d]).
    Third(usize),
    /// A Linear weight [o, i] stored as the [i, o] matrix the input is multiplied by (OpenCLIP's
    /// `text_projection`, used as x @ P).
    Transposed,
}

impl Stored {
    pub fn whole(name: String) -> Stored {
        Stored {
            name,
            part: Part::Whole,
        }
    }
}

impl Part {
    /// The shape the diffusers tensor has when the stored one has `stored`. A stored shape that does
    /// not fit the part is passed on unchanged, so the caller's shape check reports it.
    pub fn shape(self, stored: &[usize]) -> Vec<usize> {
        match self {
            Part::Conv1x1 if stored.len() > 2 && stored[2..].iter().all(|&d| d == 1) => {
                stored[..2].to_vec()
            }
            Part::Third(_) if !stored.is_empty() && stored[0].is_multiple_of(3) => {
                let mut shape = stored.to_vec();
                shape[0] /= 3;
                shape
            }
            Part::Transposed if stored.len() == 2 => vec![stored[1], stored[0]],
            _ => stored.to_vec(),
        }
    }

    /// Where the part starts, in elements of the stored tensor, for a part of `shape`.
    pub fn offset(self, shape: &[usize]) -> usize {
        match self {
            Part::Third(k) => k * shape.iter().product::<usize>(),
            _ => 0,
        }
    }

    /// How the part is described in messages.
    pub fn describe(self) -> &'static str {
        match self {
            Part::Whole => "",
            Part::Conv1x1 => " as a Linear weight",
            Part::Third(0) => ", q third",
            Part::Third(1) => ", k third",
            Part::Third(_) => ", v third",
            Part::Transposed => ", transposed",
        }
    }

    /// Whether the diffusers tensor is the stored bytes as they are (so packed forms carry over).
    pub fn is_stored_bytes(self) -> bool {
        matches!(self, Part::Whole | Part::Conv1x1)
    }
}

/// `"N.rest"` -> (N, "rest").
pub fn split_index(s: &str) -> Option<(usize, &str)> {
    let (index, rest) = s.split_once('.')?;
    Some((index.parse().ok()?, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_present_the_diffusers_shape() {
        assert_eq!(Part::Conv1x1.shape(&[512, 512, 1, 1]), [512, 512]);
        assert_eq!(Part::Conv1x1.shape(&[512, 512, 1]), [512, 512]);
        assert_eq!(Part::Conv1x1.shape(&[512, 512]), [512, 512]);
        assert_eq!(Part::Conv1x1.shape(&[512, 512, 3, 3]), [512, 512, 3, 3]);
        assert_eq!(Part::Third(1).shape(&[3072, 1024]), [1024, 1024]);
        assert_eq!(Part::Third(2).offset(&[1024, 1024]), 2 * 1024 * 1024);
        assert_eq!(Part::Third(2).shape(&[3073]), [3073]);
        assert_eq!(Part::Whole.offset(&[4]), 0);
        assert_eq!(Part::Transposed.shape(&[1280, 640]), [640, 1280]);
        assert_eq!(Part::Transposed.shape(&[7]), [7]);
        assert!(!Part::Transposed.is_stored_bytes() && !Part::Third(0).is_stored_bytes());
    }

    #[test]
    fn indices_split_off() {
        assert_eq!(split_index("12.norm1.weight"), Some((12, "norm1.weight")));
        assert_eq!(split_index("x.norm1"), None);
        assert_eq!(split_index("3"), None);
    }
}
