//! Image input for Mistral3 models (Mistral Small 3.1): decoding (`decode.rs`), preprocessing as
//! mistral-common does it (`preprocess.rs`, with OpenCV's bicubic in `resize.rs`), the `[IMG]`
//! token layout (`layout.rs`) and its place in a prompt (`prompt.rs`), the Pixtral encoder
//! (`encoder.rs`) and the Mistral3 projector (`projector.rs`) that turn an image into rows of the
//! text model's embeddings (`model.rs`), from the config's `vision_config` (`config.rs`).

mod config;
mod decode;
mod encoder;
mod layout;
mod mmproj;
mod model;
mod preprocess;
mod projector;
mod prompt;
mod resize;

pub use config::{Activation, PixtralConfig, VisionConfig};
pub use decode::{decode_image, DecodedImage, MAX_DECODED_PIXELS};
pub use encoder::{rope_table, PixtralEncoder};
pub use layout::{image_token_layout, ImageTokenIds};
pub use mmproj::{load_mmproj, read_mmproj_config};
pub use model::VisionModel;
pub use preprocess::{ImageProcessor, PreparedImage, SizeRounding, CLIP_MEAN, CLIP_STD};
pub use projector::Projector;
pub use prompt::{expand_image_placeholders, Prompt, PromptImage};
pub use resize::resize_bicubic;
