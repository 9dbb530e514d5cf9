//! SAM's promptable-segmentation loss (Kirillov et al., 2023), the objective of the nano model's
//! SAM pretraining (stage 2 of [`crate::train::stages`]): focal and Dice on the mask (20 : 1)
//! and the mean squared error between the IoU head's prediction and the IoU the predicted mask
//! actually reaches.

use super::bce_dice::{dice, upsample_logits};
use burn::tensor::activation::{log_sigmoid, sigmoid};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// Focal-loss weight relative to Dice (SAM: 20 : 1).
pub const FOCAL_WEIGHT: f64 = 20.0;
/// Focal loss α and γ (RetinaNet's, as SAM).
pub const FOCAL_ALPHA: f64 = 0.25;
pub const FOCAL_GAMMA: i32 = 2;

/// Mean over pixels of `α_t (1 − p_t)^γ · BCE`.
///
/// # Shapes
/// z, y: `[b, 1, S, S]` (y in {0, 1}) → `[1]`
pub fn focal<B: Backend>(z: Tensor<B, 4>, y: Tensor<B, 4>) -> Tensor<B, 1> {
    assert_eq!(z.dims(), y.dims(), "focal: logits and labels differ in shape");
    let p = sigmoid(z.clone());
    let ce = y.clone().neg().add_scalar(1.0) * z.clone() - log_sigmoid(z);
    // p_t = p for positives, 1 − p for negatives.
    let p_t = p.clone() * y.clone() + (p.neg().add_scalar(1.0)) * (y.clone().neg().add_scalar(1.0));
    let alpha_t = y.clone().mul_scalar(FOCAL_ALPHA) + y.neg().add_scalar(1.0).mul_scalar(1.0 - FOCAL_ALPHA);
    (alpha_t * p_t.neg().add_scalar(1.0).powi_scalar(FOCAL_GAMMA) * ce).mean()
}

/// IoU of the thresholded prediction (`z > 0`) with `y`, per sample, as a constant (no gradient).
///
/// # Shapes
/// z, y: `[b, 1, S, S]` → `[b]`
pub fn mask_iou<B: Backend>(z: Tensor<B, 4>, y: Tensor<B, 4>) -> Tensor<B, 1> {
    let b = z.dims()[0];
    let p = z.greater_elem(0.0).float().reshape([b as i32, -1]);
    let y = y.reshape([b as i32, -1]);
    let inter = (p.clone() * y.clone()).sum_dim(1);
    let union = (p + y).sum_dim(1) - inter.clone();
    // An empty prediction of an empty target counts as a perfect match.
    let iou = (inter + 1e-6) / (union + 1e-6);
    iou.reshape([b]).detach()
}

/// Terms of [`promptable_loss`] (weighted) and their sum, all `[1]`.
#[derive(Clone, Debug)]
pub struct PromptableLossTerms<B: Backend> {
    pub focal: Tensor<B, 1>,
    pub dice: Tensor<B, 1>,
    pub iou: Tensor<B, 1>,
    pub total: Tensor<B, 1>,
}

/// `20·focal + Dice + MSE(iou_pred, IoU)` on the low-resolution logits upsampled to the label.
///
/// # Shapes
/// - mask_logits: `[b, 1, m, m]`; iou_pred: `[b, 1]`; gt: `[b, 1, S, S]` in {0, 1}
pub fn promptable_loss<B: Backend>(mask_logits: Tensor<B, 4>, iou_pred: Tensor<B, 2>, gt: Tensor<B, 4>) -> PromptableLossTerms<B> {
    let [b, _, h, w] = gt.dims();
    let z = upsample_logits(mask_logits, [h, w]);
    let focal = focal(z.clone(), gt.clone()).mul_scalar(FOCAL_WEIGHT);
    let dice = dice(z.clone(), gt.clone());
    let actual = mask_iou(z, gt);
    let iou = (iou_pred.reshape([b]) - actual).powi_scalar(2).mean();
    let total = focal.clone() + dice.clone() + iou.clone();
    PromptableLossTerms { focal, dice, iou, total }
}

#[cfg(test)]
mod tests {
    use super::*;
    type B = burn::backend::NdArray<f32>;

    #[test]
    fn focal_matches_the_formula_and_iou_counts_pixels() {
        let device = Default::default();
        let z = Tensor::<B, 4>::from_floats([[[[2.0f32, -1.0], [0.5, -3.0]]]], &device);
        let y = Tensor::<B, 4>::from_floats([[[[1.0f32, 0.0], [0.0, 1.0]]]], &device);
        let got = focal(z.clone(), y.clone()).into_scalar();
        let mut want = 0.0f32;
        for (zz, yy) in [(2.0f32, 1.0f32), (-1.0, 0.0), (0.5, 0.0), (-3.0, 1.0)] {
            let p = 1.0 / (1.0 + (-zz).exp());
            let pt = if yy == 1.0 { p } else { 1.0 - p };
            let a = if yy == 1.0 { 0.25 } else { 0.75 };
            want += -a * (1.0 - pt).powi(2) * pt.ln();
        }
        want /= 4.0;
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        // prediction {(0,0), (1,0)}, target {(0,0), (1,1)}: IoU 1/3
        let iou = mask_iou(z, y).into_scalar();
        assert!((iou - 1.0 / 3.0).abs() < 1e-5, "{iou}");
    }
}
