//! Segmentation terms: BCE (mmseg `CrossEntropyLoss(use_sigmoid=True)`) and V-Net Dice (the
//! reference's modified `DiceLoss`, `naive_dice=False`, eps 1e-3), both on the low-res mask
//! logits resized to the label size.
//!
//! Label 255 marks padding (only non-square images have it). The two terms treat it differently,
//! and this port keeps the reference's behaviour:
//! - BCE gives those pixels weight 0 but still divides by *all* pixels (`avg_non_ignore=False`);
//! - Dice uses 255 as a target value (the reference's ignore handling only drops whole channels),
//!   so padded pixels add 255·p to the intersection and 255² to the denominator.

use crate::nn::interpolate::bilinear;
use burn::tensor::activation::{log_sigmoid, sigmoid};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// Label value that BCE ignores.
pub const IGNORE_INDEX: f32 = 255.0;
/// Dice smoothing, added once to each of the two denominator sums.
pub const DICE_EPS: f64 = 1e-3;

/// Bilinear (`align_corners=False`) resize of the mask logits to the label size.
///
/// # Shapes
/// `[b, 1, m, m] → [b, 1, S, S]`
pub fn upsample_logits<B: Backend>(logits: Tensor<B, 4>, size: [usize; 2]) -> Tensor<B, 4> {
    bilinear(logits, size, false)
}

/// Mean over all pixels of `BCEWithLogits(z, y)`, weight 0 where `y = 255`.
///
/// Uses PyTorch's stable form `(1 − y)·z − log σ(z)`; `log_sigmoid` never overflows.
///
/// # Shapes
/// z, y: `[b, 1, S, S]` → `[1]`
pub fn bce_with_logits<B: Backend>(z: Tensor<B, 4>, y: Tensor<B, 4>) -> Tensor<B, 1> {
    assert_eq!(z.dims(), y.dims(), "bce_with_logits: logits and labels differ in shape");
    let valid = y.clone().not_equal_elem(IGNORE_INDEX).float();
    let per_pixel = y.neg().add_scalar(1.0) * z.clone() - log_sigmoid(z);
    (per_pixel * valid).mean()
}

/// `mean_b [1 − 2Σ(p·y) / (Σp² + eps + Σy² + eps)]` with `p = σ(z)`, sums per sample.
///
/// # Shapes
/// z, y: `[b, 1, S, S]` → `[1]`
pub fn dice<B: Backend>(z: Tensor<B, 4>, y: Tensor<B, 4>) -> Tensor<B, 1> {
    assert_eq!(z.dims(), y.dims(), "dice: logits and labels differ in shape");
    let b = z.dims()[0];
    let p = sigmoid(z).reshape([b as i32, -1]);
    let y = y.reshape([b as i32, -1]);
    let intersection = (p.clone() * y.clone()).sum_dim(1).mul_scalar(2.0);
    let denominator =
        p.powi_scalar(2).sum_dim(1).add_scalar(DICE_EPS) + y.powi_scalar(2).sum_dim(1).add_scalar(DICE_EPS);
    let per_sample = (intersection / denominator).neg().add_scalar(1.0);
    per_sample.mean()
}
