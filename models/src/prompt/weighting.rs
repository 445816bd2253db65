//! A1111's "Original" emphasis (modules/sd_emphasis.py): scale each token's text-encoder output
//! by its weight, then rescale everything so the mean equals the unweighted mean. A1111 notes the
//! mean restore is a heuristic that prevents artifacts; it is kept for identical results.

use super::PromptError;

/// Applies `weights` (one per token) to `z`, a token-major embedding of `weights.len()` rows.
///
/// A1111 takes the mean over the whole tensor it encoded at once, which is one 77-token chunk
/// of one prompt, so call this per chunk. Means are accumulated in f64. If the weighted mean is
/// exactly zero (A1111 would divide by it and produce inf/NaN) the weighted values are left
/// unrescaled.
pub fn apply_emphasis(z: &mut [f32], weights: &[f32]) -> Result<(), PromptError> {
    if weights.is_empty() || !z.len().is_multiple_of(weights.len()) {
        return Err(PromptError::Shape {
            values: z.len(),
            tokens: weights.len(),
        });
    }
    let dim = z.len() / weights.len();
    if dim == 0 {
        return Ok(());
    }
    let mean = |z: &[f32]| z.iter().map(|&v| f64::from(v)).sum::<f64>() / z.len() as f64;
    let original = mean(z);
    for (row, &w) in z.chunks_exact_mut(dim).zip(weights) {
        row.iter_mut().for_each(|v| *v *= w);
    }
    let weighted = mean(z);
    if weighted != 0.0 {
        let k = (original / weighted) as f32;
        z.iter_mut().for_each(|v| *v *= k);
    }
    Ok(())
}
