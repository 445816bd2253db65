//! Images in a prompt: templates write one `[IMG]` per image; each is expanded here into the
//! image's layout (`[IMG]` x cols then `[IMG_BREAK]` per row, the last `[IMG_END]`), and the
//! span is remembered so prefill can put the image's rows at its `[IMG]` positions.

use std::sync::Arc;

use kiln_runtime::{Error, Result};

use super::layout::{image_token_layout, ImageTokenIds};
use super::preprocess::PreparedImage;

/// One image's span of prompt positions.
#[derive(Clone, Debug)]
pub struct PromptImage {
    /// Position of the layout's first token.
    pub start: usize,
    /// Tokens of the layout (`rows * (cols + 1)`).
    pub len: usize,
    pub image: Arc<PreparedImage>,
}

impl PromptImage {
    /// Prompt positions of this image's `[IMG]` tokens, in the order of the encoder's rows.
    pub fn image_positions(&self) -> Vec<usize> {
        let cols = self.image.cols;
        (0..self.image.rows)
            .flat_map(|r| (0..cols).map(move |c| self.start + r * (cols + 1) + c))
            .collect()
    }
}

/// Prompt ids with the images they carry.
#[derive(Clone, Debug, Default)]
pub struct Prompt {
    pub ids: Vec<u32>,
    pub images: Vec<PromptImage>,
}

impl Prompt {
    pub fn text(ids: Vec<u32>) -> Prompt {
        Prompt {
            ids,
            images: Vec::new(),
        }
    }
}

/// Replaces the `n`-th `[IMG]` of `ids` by `images[n]`'s layout. Every placeholder needs an
/// image and every image a placeholder (a template that drops or repeats image parts is an
/// error, not a silent mismatch).
pub fn expand_image_placeholders(
    ids: &[u32],
    images: Vec<Arc<PreparedImage>>,
    tokens: ImageTokenIds,
) -> Result<Prompt> {
    let placeholders = ids.iter().filter(|&&id| id == tokens.img).count();
    if placeholders != images.len() {
        return Err(Error::shape(
            "image prompt",
            format!(
                "the chat template wrote {placeholders} image placeholders for {} images",
                images.len()
            ),
        ));
    }
    let mut out =
        Vec::with_capacity(ids.len() + images.iter().map(|i| i.rows * (i.cols + 1)).sum::<usize>());
    let mut spans = Vec::with_capacity(images.len());
    let mut next = images.into_iter();
    for &id in ids {
        if id != tokens.img {
            out.push(id);
            continue;
        }
        let image = next.next().expect("placeholders counted");
        let layout = image_token_layout(image.rows, image.cols, tokens);
        spans.push(PromptImage {
            start: out.len(),
            len: layout.len(),
            image,
        });
        out.extend(layout);
    }
    Ok(Prompt {
        ids: out,
        images: spans,
    })
}
