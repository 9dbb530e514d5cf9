//! Training losses of RSRefSeg 2 (`PseudoSegHead.loss_by_feat` and the mmseg losses it calls).
//!
//! `total = w_bce·BCE + w_dice·Dice + w_ortho·L_ortho + w_contrastive·L_samp`, one term per file:
//!
//! - [`bce_dice`]: the segmentation terms on the mask logits upsampled to the label size;
//! - [`orthogonal`]: the two text subspaces t1/t2 should be orthogonal;
//! - [`contrastive`]: sample-level contrast between the GT region of the raw SigLIP map and t2.
//!
//! The nano model's pretraining stages have their own objectives: [`sigmoid`] (SigLIP's pairwise
//! sigmoid loss, vision–language stage) and [`promptable`] (SAM's focal + Dice + IoU loss).
//!
//! The released configs weight the segmentation terms ×5 ([`LossWeights::code`]); the paper states
//! 1 ([`LossWeights::paper`]). Every term keeps its graph, so [`LossTerms::total`] backpropagates
//! on an autodiff backend (the logits' upsampling goes through [`crate::nn::interpolate::bilinear`],
//! which is differentiable on every backend).

pub mod bce_dice;
pub mod contrastive;
pub mod orthogonal;
pub mod promptable;
pub mod sigmoid;

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// Weights of the four configured terms (dense-prompt and spatial terms are off in every released
/// config and not implemented).
#[derive(Config, Debug, PartialEq)]
pub struct LossWeights {
    /// Binary cross-entropy on the upsampled mask logits (`loss_ce`).
    #[config(default = 5.0)]
    pub bce: f64,
    /// V-Net Dice on the same logits (`loss_dice`).
    #[config(default = 5.0)]
    pub dice: f64,
    /// Orthogonality of the text subspaces (`loss_text_queries1_queries2`).
    #[config(default = 0.5)]
    pub ortho: f64,
    /// Sample contrastive loss (`loss_perbatch_refined_img_feat_map_perbatch`).
    #[config(default = 0.5)]
    pub contrastive: f64,
}

impl LossWeights {
    /// The released training configs (`loss_decode` of the RSRefSeg 2 configs): 5, 5, 0.5, 0.5.
    pub fn code() -> Self {
        Self::new()
    }

    /// The paper's λ: Dice 1 (BCE 1), λ_ortho = λ_samp = 0.5.
    pub fn paper() -> Self {
        Self::new().with_bce(1.0).with_dice(1.0)
    }
}

/// The decode head's learnable scalars. Only `logit_scale2`/`logit_bias2` (τ, β of the sample
/// contrastive term) are used by the configured losses; `*1` belong to the disabled spatial term
/// but are trained and saved (`decode_head.logit_scale1`, …), so they are kept to load and save
/// checkpoints unchanged. The checkpoint stores them as 0-d tensors; here they are `[1]`
/// (see `checkpoint::keys::Transform::ScalarToVector`).
#[derive(Module, Debug)]
pub struct DecodeHead<B: Backend> {
    pub logit_scale1: Param<Tensor<B, 1>>,
    pub logit_bias1: Param<Tensor<B, 1>>,
    /// τ: the contrastive logits are scaled by `exp(τ)`.
    pub logit_scale2: Param<Tensor<B, 1>>,
    /// β: added to every contrastive logit (cancels in softmax; kept because it is a parameter).
    pub logit_bias2: Param<Tensor<B, 1>>,
}

#[derive(Config, Debug)]
pub struct DecodeHeadConfig {
    /// Initial τ: ln(1/0.07) = 2.659 (CLIP's temperature 0.07).
    #[config(default = "(1.0f64 / 0.07).ln()")]
    pub logit_scale_init: f64,
    /// Initial β: ln(0.5).
    #[config(default = "-core::f64::consts::LN_2")]
    pub logit_bias_init: f64,
}

impl DecodeHeadConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> DecodeHead<B> {
        let scalar = |v: f64| Param::from_tensor(Tensor::from_floats([v as f32], device));
        DecodeHead {
            logit_scale1: scalar(self.logit_scale_init),
            logit_bias1: scalar(self.logit_bias_init),
            logit_scale2: scalar(self.logit_scale_init),
            logit_bias2: scalar(self.logit_bias_init),
        }
    }
}

/// What the loss head reads, by name.
///
/// # Shapes
/// - mask_logits: `[b, 1, m, m]` low-res logits of mask token 0 (m = S/4)
/// - gt: `[b, 1, S, S]` float labels in {0, 1, 255} (255 = padding, see [`bce_dice`] for how each
///   term treats it)
/// - t1, t2: `[b, n_t, d1]` text queries of the two subspaces
/// - v: `[b, d1, g, g]` raw SigLIP patch map (after LoRA, before the prompter)
#[derive(Clone, Debug)]
pub struct LossInputs<B: Backend> {
    pub mask_logits: Tensor<B, 4>,
    pub gt: Tensor<B, 4>,
    pub t1: Tensor<B, 3>,
    pub t2: Tensor<B, 3>,
    pub v: Tensor<B, 4>,
}

/// Every term, already multiplied by its weight (as the reference logs them: `decode.loss_ce`
/// = 5·BCE, …), and their sum. All `[1]`.
#[derive(Clone, Debug)]
pub struct LossTerms<B: Backend> {
    pub bce: Tensor<B, 1>,
    pub dice: Tensor<B, 1>,
    pub ortho: Tensor<B, 1>,
    pub contrastive: Tensor<B, 1>,
    pub total: Tensor<B, 1>,
}

/// The loss head: weights plus the forward over [`LossInputs`].
#[derive(Clone, Debug)]
pub struct RefSegLoss {
    pub weights: LossWeights,
}

impl RefSegLoss {
    pub fn new(weights: LossWeights) -> Self {
        Self { weights }
    }

    /// All terms and the weighted total; τ/β come from `head`.
    pub fn forward<B: Backend>(&self, inputs: LossInputs<B>, head: &DecodeHead<B>) -> LossTerms<B> {
        let LossInputs { mask_logits, gt, t1, t2, v } = inputs;
        let [b, _, s_h, s_w] = gt.dims();
        assert_eq!(mask_logits.dims()[0], b, "RefSegLoss: mask logits and GT batch differ");
        let w = &self.weights;

        // Segmentation: logits at the label size, then BCE and Dice on the same map.
        let logits_up = bce_dice::upsample_logits(mask_logits, [s_h, s_w]);
        let bce = bce_dice::bce_with_logits(logits_up.clone(), gt.clone()).mul_scalar(w.bce);
        let dice = bce_dice::dice(logits_up, gt.clone()).mul_scalar(w.dice);

        // Auxiliary terms.
        let ortho = orthogonal::orthogonality(t1, t2.clone()).mul_scalar(w.ortho);
        let contrastive = contrastive::sample_contrastive(
            v,
            gt,
            t2,
            head.logit_scale2.val(),
            head.logit_bias2.val(),
        )
        .mul_scalar(w.contrastive);

        let total = bce.clone() + dice.clone() + ortho.clone() + contrastive.clone();
        LossTerms { bce, dice, ortho, contrastive, total }
    }
}

/// `F.normalize(x, dim)`: `x / max(‖x‖, 1e-12)`. The squared norm is clamped at 1e-24 before the
/// square root so that a zero vector (an empty GT region) has a finite gradient instead of
/// `0 · ∞ = NaN`; values are the same as PyTorch's for every norm ≥ 1e-12.
pub(crate) fn l2_normalize<B: Backend, const D: usize>(x: Tensor<B, D>, dim: usize) -> Tensor<B, D> {
    let norm = x.clone().powi_scalar(2).sum_dim(dim).clamp_min(1e-24).sqrt().clamp_min(1e-12);
    x / norm
}

/// `[b, n, d] → [b, d]` mean over tokens.
pub(crate) fn mean_tokens<B: Backend>(t: Tensor<B, 3>) -> Tensor<B, 2> {
    let [b, _, d] = t.dims();
    t.mean_dim(1).reshape([b, d])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets() {
        assert_eq!(LossWeights::code(), LossWeights { bce: 5.0, dice: 5.0, ortho: 0.5, contrastive: 0.5 });
        assert_eq!(LossWeights::paper(), LossWeights { bce: 1.0, dice: 1.0, ortho: 0.5, contrastive: 0.5 });
        let head = DecodeHeadConfig::new();
        // τ = ln(1/0.07), β = ln(0.5).
        assert!((head.logit_scale_init - 2.659_26).abs() < 1e-5);
        assert_eq!(head.logit_bias_init, 0.5f64.ln());
    }
}
