//! Time of one batched decode step (`decode_batch`) against the batch size, on a model folder:
//! what `kiln serve --parallel N` pays per step. Prints milliseconds per step and tokens/s.
//!
//! ```text
//! cargo run --release -p kiln-llm --example batch_decode -- MODEL_DIR [q4_0|q8_0|f16|f32]
//! ```

use std::path::PathBuf;
use std::time::Instant;

use kiln_llm::{decode_batch, Mistral, Session};
use kiln_runtime::{DType, Device};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .ok_or("usage: batch_decode MODEL_DIR [weight type]")?,
    );
    let weight_type = args.next().unwrap_or_else(|| "q4_0".into()).parse()?;
    let device = Device::Cpu;
    let model = Mistral::load(&dir, &device, weight_type)?;
    for batch in [1usize, 2, 4, 8, 16, 32] {
        let mut sessions: Vec<Session> = (0..batch)
            .map(|b| {
                let mut s = Session::new(&model, 256, DType::F16)?;
                let prompt: Vec<u32> = (0..16)
                    .map(|i| (1 + i * 7 + b as u32 * 13) % 1000)
                    .collect();
                s.prefill(&model, &prompt)?;
                Ok(s)
            })
            .collect::<kiln_runtime::Result<_>>()?;
        let ids: Vec<u32> = (0..batch as u32).map(|b| 100 + b).collect();
        let mut refs: Vec<&mut Session> = sessions.iter_mut().collect();
        decode_batch(&model, &mut refs, &ids)?.to_vec_f32()?;
        let steps = 8;
        let start = Instant::now();
        for _ in 0..steps {
            decode_batch(&model, &mut refs, &ids)?.to_vec_f32()?;
        }
        let per_step = start.elapsed().as_secs_f64() / steps as f64;
        println!(
            "batch {batch:2}: {:7.1} ms/step, {:6.1} tok/s aggregate",
            per_step * 1e3,
            batch as f64 / per_step
        );
    }
    Ok(())
}
