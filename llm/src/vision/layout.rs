//! Where an image's tokens go in the prompt: mistral-common's `ImageEncoder` writes `cols` `[IMG]`
//! tokens and an `[IMG_BREAK]` per row of the merged-token grid, the last `[IMG_BREAK]` replaced by
//! `[IMG_END]`.

use crate::tokenizer::Tokenizer;

/// The ids of the image control tokens (Tekken v7: 10, 12 and 13).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageTokenIds {
    /// `[IMG]`: one per merged token; the encoder's rows replace them.
    pub img: u32,
    /// `[IMG_BREAK]`: ends every row but the last.
    pub brk: u32,
    /// `[IMG_END]`: ends the last row.
    pub end: u32,
}

impl ImageTokenIds {
    /// The ids from a tokenizer, or `None` when it lacks any of `[IMG]`, `[IMG_BREAK]`, `[IMG_END]`
    /// (a text-only model's tokenizer).
    pub fn from_tokenizer(t: &Tokenizer) -> Option<Self> {
        Some(Self {
            img: t.token_id("[IMG]")?,
            brk: t.token_id("[IMG_BREAK]")?,
            end: t.token_id("[IMG_END]")?,
        })
    }
}

/// The prompt tokens of an image with a `rows x cols` merged-token grid: per row `cols` times
/// `ids.img` then `ids.brk`, the very last token `ids.end`. `rows * (cols + 1)` tokens; empty when
/// either is 0 (no grid from [`super::ImageProcessor::grid`] is).
pub fn image_token_layout(rows: usize, cols: usize, ids: ImageTokenIds) -> Vec<u32> {
    if rows == 0 || cols == 0 {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(rows * (cols + 1));
    for _ in 0..rows {
        out.extend(std::iter::repeat_n(ids.img, cols));
        out.push(ids.brk);
    }
    if let Some(last) = out.last_mut() {
        *last = ids.end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDS: ImageTokenIds = ImageTokenIds {
        img: 10,
        brk: 12,
        end: 13,
    };

    #[test]
    fn rows_end_in_breaks_and_the_last_in_end() {
        assert_eq!(image_token_layout(1, 1, IDS), vec![10, 13]);
        assert_eq!(
            image_token_layout(2, 3, IDS),
            vec![10, 10, 10, 12, 10, 10, 10, 13]
        );
        assert_eq!(image_token_layout(3, 1, IDS), vec![10, 12, 10, 12, 10, 13]);
        assert_eq!(image_token_layout(42, 55, IDS).len(), 42 * 56);
        assert!(image_token_layout(0, 5, IDS).is_empty());
        assert!(image_token_layout(5, 0, IDS).is_empty());
    }
}
