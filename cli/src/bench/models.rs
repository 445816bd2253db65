//! `kiln bench models`: a whole SD 1.5-architecture UNet evaluation (batch 2, 256 and 512 pixels) and
//! VAE decode and an ESRGAN x4 RRDBNet (seconds per output megapixel), random weights of the real
//! shapes; the same JSON as `kiln bench kernels`.

use anyhow::Result;
use kiln_benches::model_cases;
use kiln_runtime::Device;

use super::table::{self, TableArgs};

pub fn run(args: &TableArgs, device: &Device) -> Result<()> {
    let size = table::size(args);
    table::run(args, device, (1, 3), |dtype| model_cases(size, dtype))
}
