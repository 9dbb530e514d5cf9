//! Mask post-processing (reference §4.5): low-res logits → `S×S` → crop the padding → original
//! size → `sigmoid > 0.5`.

use crate::nn::interpolate::bilinear;
use crate::pre::Geometry;
use burn::tensor::{activation::sigmoid, backend::Backend, Bool, Tensor};

/// Mask logits at the original image size.
///
/// # Shapes
/// - low_res: `[b, 1, m, m]` (SAM's low-resolution mask logits)
/// - output: `[b, 1, H0, W0]`
pub fn logits_at_original_size<B: Backend>(low_res: Tensor<B, 4>, g: Geometry) -> Tensor<B, 4> {
    let [b, c, _, _] = low_res.dims();
    let padded = bilinear(low_res, [g.padded, g.padded], false);
    let (h1, w1) = g.resized;
    let cropped = padded.slice([0..b, 0..c, 0..h1, 0..w1]);
    bilinear(cropped, [g.original.0, g.original.1], false)
}

/// `sigmoid(logits) > 0.5`, computed as the reference does (on the probability, so logits within
/// rounding of 0 behave identically).
pub fn binary_mask<B: Backend, const D: usize>(logits: Tensor<B, D>) -> Tensor<B, D, Bool> {
    sigmoid(logits).greater_elem(0.5)
}
