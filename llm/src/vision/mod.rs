//! Image input for Mistral3 models (Mistral Small 3.1): decoding (`decode.rs`), preprocessing as
//! mistral-common does it (`preprocess.rs`), the `[IMG]` token layout, the Pixtral encoder and the
//! Mistral3 projector that turn an image into rows of the text model's embeddings.

mod decode;

pub use decode::{decode_image, DecodedImage, MAX_DECODED_PIXELS};
