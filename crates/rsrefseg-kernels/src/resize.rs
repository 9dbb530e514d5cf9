//! Bilinear resize (PyTorch's `F.interpolate(mode="bilinear")`, no antialias), parallel over
//! output rows. Flex's own kernel runs one task per channel plane and recomputes every source
//! coordinate per pixel, so a one-channel mask brought to the original image size (the last
//! step of every query) ran on one thread. The weights here are Flex's, computed the same way
//! (coordinates in f64, taps blended in f32 in the same order), so the values are identical.
//! Inference only; under autodiff the caller writes the resize as matrix products.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use burn_flex::FlexTensor;

use crate::{flex_ref, for_each_chunk, from_flex};

/// One output coordinate's two source taps and the weight of the upper one.
#[derive(Clone, Copy)]
struct Taps {
    low: usize,
    high: usize,
    t: f32,
}

/// PyTorch's source-index rule along one axis (half-pixel centres clamped at 0 unless
/// `align_corners`), as Flex evaluates it.
fn axis_taps(inp: usize, out: usize, align_corners: bool) -> Vec<Taps> {
    let ratio = if align_corners {
        (inp as f64 - 1.0) / (out.max(1) - 1).max(1) as f64
    } else {
        inp as f64 / out as f64
    };
    (0..out)
        .map(|o| {
            let s = if align_corners { o as f64 * ratio } else { (o as f64 + 0.5) * ratio - 0.5 };
            let low = (s.floor().max(0.0) as usize).min(inp - 1);
            Taps { low, high: (low + 1).min(inp - 1), t: (s - low as f64).max(0.0) as f32 }
        })
        .collect()
}

/// `x: [n, c, h, w]` resized to `[n, c, size[0], size[1]]`; `Err(x)` when the kernels do not
/// serve plain `x` (autodiff included) or a side is empty.
pub fn bilinear<B: Backend>(x: Tensor<B, 4>, size: [usize; 2], align_corners: bool) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    let [n, c, h, w] = x.dims();
    let [oh, ow] = size;
    if [n, c, h, w, oh, ow].contains(&0) {
        return Err(x);
    }
    let Some(xt) = flex_ref(&x) else { return Err(x) };
    drop(x);
    let xt = xt.to_contiguous();
    let src: &[f32] = &xt.storage()[..n * c * h * w];
    let (ys, xs) = (axis_taps(h, oh, align_corners), axis_taps(w, ow, align_corners));
    let mut out = vec![0.0f32; n * c * oh * ow];
    // One chunk = whole output rows; row r is row r % oh of plane r / oh.
    let rows_per_chunk = (16384 / ow).max(1);
    for_each_chunk(&mut out, rows_per_chunk * ow, |start, dst| {
        for (i, row) in dst.chunks_exact_mut(ow).enumerate() {
            let r = start / ow + i;
            let (plane, y) = (r / oh, &ys[r % oh]);
            let base = plane * h * w;
            let (top, bottom) = (&src[base + y.low * w..][..w], &src[base + y.high * w..][..w]);
            let (wy0, wy1) = (1.0 - y.t, y.t);
            for (o, tx) in row.iter_mut().zip(&xs) {
                let (wx0, wx1) = (1.0 - tx.t, tx.t);
                *o = top[tx.low] * wx0 * wy0 + top[tx.high] * wx1 * wy0 + bottom[tx.low] * wx0 * wy1 + bottom[tx.high] * wx1 * wy1;
            }
        }
    });
    Ok(from_flex(FlexTensor::from_data(burn::tensor::TensorData::new(out, [n, c, oh, ow]))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::module::interpolate;
    use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
    use crate::testing::random;

    #[test]
    fn equals_flexs_bilinear_exactly() {
        let x = random([2, 3, 17, 23], 60);
        for (size, ac) in [([64, 40], false), ([64, 40], true), ([5, 9], false), ([5, 9], true), ([17, 1], false), ([1, 1], true)] {
            let ours = bilinear(x.clone(), size, ac).ok().expect("served");
            let flex = interpolate(x.clone(), size, InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(ac));
            assert_eq!(ours.into_data(), flex.into_data(), "size {size:?}, align_corners {ac}");
        }
        // A cropped view (the padded mask cut to the resized image) is read through its strides.
        let crop = x.slice([0..2, 0..3, 0..11, 0..19]);
        let ours = bilinear(crop.clone(), [30, 31], false).ok().expect("served");
        let flex = interpolate(crop, [30, 31], InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(false));
        assert_eq!(ours.into_data(), flex.into_data());
    }
}
