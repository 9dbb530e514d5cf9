//! Sample-level contrast (`loss_perbatch_refined_img_feat_map_perbatch`): within a batch, the GT
//! region of each image (pooled from the *raw* SigLIP map v) should match its own sentence (mean
//! of t2) and no other, a CLIP-style symmetric cross-entropy over the `b × b` similarity logits.
//!
//! Notes kept from the reference:
//! - the text side is `mean_n t2`, not the sentence feature the paper names;
//! - the region vector is `Σ(v ⊙ mask) / g²` (not divided by the mask area; the scale vanishes in
//!   the L2 normalisation); an empty mask gives a zero vector and a logit equal to β;
//! - the GT is resized with `align_corners=True` then thresholded at 0.5, so a padding label 255
//!   counts as foreground;
//! - duplicated images or sentences in a batch are still negatives; single device, no all-gather.

use super::{l2_normalize, mean_tokens};
use crate::nn::interpolate::bilinear;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// The float GT resized to the SigLIP grid (before the `> 0.5` threshold).
///
/// # Shapes
/// `[b, 1, S, S] → [b, 1, g, g]`
pub fn downsample_gt<B: Backend>(gt: Tensor<B, 4>, grid: usize) -> Tensor<B, 4> {
    bilinear(gt, [grid, grid], true)
}

/// `logits_per_image = exp(τ)·R·Sᵀ + β`; `logits_per_text` is its transpose.
///
/// # Shapes
/// - v: `[b, d1, g, g]`; gt: `[b, 1, S, S]`; t2: `[b, n_t, d1]`; tau, bias: `[1]`
/// - returns `[b, b]`, rows = images (GT regions), columns = sentences
pub fn logits<B: Backend>(
    v: Tensor<B, 4>,
    gt: Tensor<B, 4>,
    t2: Tensor<B, 3>,
    tau: Tensor<B, 1>,
    bias: Tensor<B, 1>,
) -> Tensor<B, 2> {
    let [b, d1, g, g_w] = v.dims();
    assert_eq!(g, g_w, "contrastive: the SigLIP map must be square");
    assert_eq!(gt.dims()[0], b, "contrastive: v and GT batch differ");

    // GT region of the raw SigLIP map, pooled over all g² positions.
    let mask = downsample_gt(gt, g).greater_elem(0.5).float(); // [b, 1, g, g]
    let region = (v * mask).reshape([b, d1, g * g]).mean_dim(2).reshape([b, d1]);
    let r = l2_normalize(region, 1);

    // Sentence side: mean of the second-subspace queries.
    let s = l2_normalize(mean_tokens(t2), 1);

    let scale = tau.exp().reshape([1, 1]);
    r.matmul(s.transpose()) * scale + bias.reshape([1, 1])
}

/// `½[CE(logits, arange) + CE(logitsᵀ, arange)]`.
///
/// # Shapes
/// `[b, b] → [1]`
pub fn symmetric_cross_entropy<B: Backend>(logits: Tensor<B, 2>) -> Tensor<B, 1> {
    let [b, b2] = logits.dims();
    assert_eq!(b, b2, "symmetric_cross_entropy: logits must be square");
    let diagonal = Tensor::<B, 2>::eye(b, &logits.device());
    // CE with targets arange(b) = −mean of the diagonal of log_softmax over each row.
    let ce = |l: Tensor<B, 2>| (log_softmax(l, 1) * diagonal.clone()).sum().div_scalar(-(b as f64));
    (ce(logits.clone()) + ce(logits.transpose())).div_scalar(2.0)
}

/// The sample contrastive loss, see the module notes.
///
/// # Shapes
/// v: `[b, d1, g, g]`; gt: `[b, 1, S, S]`; t2: `[b, n_t, d1]`; tau, bias: `[1]` → `[1]`
pub fn sample_contrastive<B: Backend>(
    v: Tensor<B, 4>,
    gt: Tensor<B, 4>,
    t2: Tensor<B, 3>,
    tau: Tensor<B, 1>,
    bias: Tensor<B, 1>,
) -> Tensor<B, 1> {
    symmetric_cross_entropy(logits(v, gt, t2, tau, bias))
}
