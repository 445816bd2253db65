//! What each component of an SD pipeline loaded, by weight name (for `--plan`).

use std::sync::Arc;

use kiln_nn::weights::Tally;

/// The tallies of a pipeline's components (`text_encoder_2` stays empty but for SDXL).
#[derive(Debug, Default)]
pub struct ModelTally {
    pub unet: Arc<Tally>,
    pub vae: Arc<Tally>,
    pub text_encoder: Arc<Tally>,
    pub text_encoder_2: Arc<Tally>,
}
