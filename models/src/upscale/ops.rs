//! The small tensor ops the upscalers need beyond convolutions, composed from existing kernels:
//! `pixel_shuffle` / `pixel_unshuffle` are a reshape and one permute copy (PyTorch defines them
//! that way), PReLU is four elementwise passes (the compact model's activations are small next to
//! its convolutions).

use kiln_kernels::elementwise::{add, leaky_relu, mul, sub};
use kiln_kernels::layout::permute;
use kiln_runtime::{Error, Result, Tensor};

fn nchw(op: &str, x: &Tensor) -> Result<[usize; 4]> {
    match *x.shape() {
        [n, c, h, w] => Ok([n, c, h, w]),
        _ => Err(Error::shape(
            op,
            format!("expected an [N, C, H, W] tensor, got {:?}", x.shape()),
        )),
    }
}

/// [N, C * r * r, H, W] -> [N, C, H * r, W * r] (`nn.PixelShuffle(r)`).
pub fn pixel_shuffle(x: &Tensor, r: usize) -> Result<Tensor> {
    let [n, c, h, w] = nchw("pixel_shuffle", x)?;
    if r == 0 || !c.is_multiple_of(r * r) {
        return Err(Error::shape(
            "pixel_shuffle",
            format!(
                "{c} channels are not a multiple of {r}^2 (input {:?})",
                x.shape()
            ),
        ));
    }
    let c = c / (r * r);
    let y = permute(&x.reshape(&[n, c, r, r, h, w])?, &[0, 1, 4, 2, 5, 3])?;
    y.reshape(&[n, c, h * r, w * r])
}

/// [N, C, H * r, W * r] -> [N, C * r * r, H, W] (BasicSR's `pixel_unshuffle`).
pub fn pixel_unshuffle(x: &Tensor, r: usize) -> Result<Tensor> {
    let [n, c, hh, ww] = nchw("pixel_unshuffle", x)?;
    if r == 0 || !hh.is_multiple_of(r) || !ww.is_multiple_of(r) {
        return Err(Error::shape(
            "pixel_unshuffle",
            format!(
                "height and width of {:?} are not multiples of {r}",
                x.shape()
            ),
        ));
    }
    let (h, w) = (hh / r, ww / r);
    let y = permute(&x.reshape(&[n, c, h, r, w, r])?, &[0, 1, 3, 5, 2, 4])?;
    y.reshape(&[n, c * r * r, h, w])
}

/// `nn.PReLU(C)`: `x` where positive, else `slope[c] * x`; `slope` is [1, C, 1, 1].
pub fn prelu(x: &Tensor, slope: &Tensor) -> Result<Tensor> {
    let pos = leaky_relu(x, 0.0)?;
    let neg = sub(x, &pos)?;
    add(&pos, &mul(&neg, slope)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_runtime::{DType, Device};

    fn t(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_f32(&Device::Cpu, shape, DType::F32, v).unwrap()
    }

    #[test]
    fn shuffle_matches_pytorch_layout_and_unshuffle_inverts_it() {
        // torch.arange(8.).view(1, 8, 1, 1) through PixelShuffle(2) with 2 channels out:
        // channel 0 takes inputs 0..4 as [[0, 1], [2, 3]], channel 1 takes 4..8.
        let x = t(&[1, 8, 1, 1], &[0., 1., 2., 3., 4., 5., 6., 7.]);
        let y = pixel_shuffle(&x, 2).unwrap();
        assert_eq!(y.shape(), [1, 2, 2, 2]);
        assert_eq!(y.to_vec_f32().unwrap(), [0., 1., 2., 3., 4., 5., 6., 7.]);
        // A 2x3 grid of 2x2 blocks: unshuffle gathers each block's (i, j) pixel into channel 2i+j.
        let v: Vec<f32> = (0..24).map(|i| i as f32).collect();
        let x = t(&[1, 1, 4, 6], &v);
        let u = pixel_unshuffle(&x, 2).unwrap();
        assert_eq!(u.shape(), [1, 4, 2, 3]);
        assert_eq!(&u.to_vec_f32().unwrap()[..6], [0., 2., 4., 12., 14., 16.]);
        assert_eq!(pixel_shuffle(&u, 2).unwrap().to_vec_f32().unwrap(), v);
        let err = pixel_unshuffle(&t(&[1, 1, 3, 4], &[0.; 12]), 2).unwrap_err();
        assert!(err.to_string().contains("[1, 1, 3, 4]"), "{err}");
    }

    #[test]
    fn prelu_scales_negatives_per_channel() {
        let x = t(&[1, 2, 1, 2], &[-1., 2., -3., 4.]);
        let s = t(&[1, 2, 1, 1], &[0.5, 0.25]);
        assert_eq!(
            prelu(&x, &s).unwrap().to_vec_f32().unwrap(),
            [-0.5, 2., -0.75, 4.]
        );
    }
}
