//! Image input for Mistral3 models (Mistral Small 3.1): decoding (`decode.rs`), preprocessing as
//! mistral-common does it (`preprocess.rs`, with OpenCV's bicubic in `resize.rs`), the `[IMG]`
//! token layout (`layout.rs`), the Pixtral encoder and the Mistral3 projector that turn an image
//! into rows of the text model's embeddings.

mod decode;
mod layout;
mod preprocess;
mod resize;

pub use decode::{decode_image, DecodedImage, MAX_DECODED_PIXELS};
pub use layout::{image_token_layout, ImageTokenIds};
pub use preprocess::{ImageProcessor, PreparedImage, SizeRounding, CLIP_MEAN, CLIP_STD};
pub use resize::resize_bicubic;
