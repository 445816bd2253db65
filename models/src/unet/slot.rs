//! A UNet layer (resnet, transformer, resampling conv) that is either resident (built once, weights
//! on the device for the model's life) or streamed (rebuilt from host-held weights just before it
//! runs and dropped right after, so only one streamed layer's weights are on the device at a time:
//! `--max-vram` below the weight size).

use kiln_runtime::Result;

use kiln_nn::weights::Weights;

type Build<T> = Box<dyn Fn(&Weights) -> Result<T> + Send + Sync>;

pub enum Slot<T> {
    Resident(T),
    Streamed { weights: Weights, build: Build<T> },
}

impl<T> Slot<T> {
    /// Resident when `w` is not a streamed view. A streamed block is still built once here, so a
    /// checkpoint that does not fit fails at load, and its host copies are made now, not mid-run.
    pub fn new(
        w: Weights,
        build: impl Fn(&Weights) -> Result<T> + Send + Sync + 'static,
    ) -> Result<Slot<T>> {
        let block = build(&w)?;
        if !w.is_streamed() {
            return Ok(Slot::Resident(block));
        }
        drop(block);
        Ok(Slot::Streamed {
            weights: w,
            build: Box::new(build),
        })
    }

    /// Runs `f` on the block, uploading a streamed block's weights first and freeing them after.
    pub fn with<R>(&self, f: impl FnOnce(&T) -> Result<R>) -> Result<R> {
        match self {
            Slot::Resident(block) => f(block),
            Slot::Streamed { weights, build } => {
                let block = build(weights)?;
                f(&block)
            }
        }
    }
}
