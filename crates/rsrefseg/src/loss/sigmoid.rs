//! SigLIP's sigmoid loss (Zhai et al., 2023), the objective of the nano model's
//! vision–language pretraining (stage 1 of [`crate::train::stages`]).
//!
//! Every image–text pair of a batch is an independent binary problem:
//! `L = −(1/n) Σ_i Σ_j log σ(z_ij · (t · x_i·y_j + b))`, `z_ij = +1` for a matching pair and −1
//! otherwise, `x`, `y` L2-normalised, `t = exp(t')`. Here the "images" are regions (the SigLIP
//! patches an object covers, pooled) and single patches, so the towers learn words ↔ regions and
//! `t'`, `b` move to values where `cos · t + b` has both signs — exactly the dense prompt the
//! referring prompter computes ([`crate::prompter::dense_prompt`]).

use burn::tensor::activation::log_sigmoid;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// Pairwise sigmoid loss with soft labels.
///
/// `logits` are `t · cos + b`; `labels` in `[0, 1]` (1 = matching pair; fractions for a patch
/// that an object covers in part). Summed over the pairs of a row, averaged over rows, as SigLIP.
///
/// # Shapes
/// logits, labels: `[n, m]` → `[1]`
pub fn sigmoid_loss<B: Backend>(logits: Tensor<B, 2>, labels: Tensor<B, 2>) -> Tensor<B, 1> {
    assert_eq!(logits.dims(), labels.dims(), "sigmoid_loss: logits and labels differ in shape");
    let n = logits.dims()[0].max(1) as f64;
    // y·(−log σ(z)) + (1 − y)·(−log σ(−z)) = (1 − y)·z − log σ(z)
    let per_pair = labels.neg().add_scalar(1.0) * logits.clone() - log_sigmoid(logits);
    per_pair.sum().div_scalar(n)
}

/// `t · cos(x_i, y_j) + b` for every pair: `[n, d]`, `[m, d]` → `[n, m]` (`scale` is `t'`, the
/// logarithm of `t`).
pub fn pair_logits<B: Backend>(x: Tensor<B, 2>, y: Tensor<B, 2>, scale: Tensor<B, 1>, bias: Tensor<B, 1>) -> Tensor<B, 2> {
    let cos = super::l2_normalize(x, 1).matmul(super::l2_normalize(y, 1).transpose());
    cos * scale.exp().reshape([1, 1]) + bias.reshape([1, 1])
}

#[cfg(test)]
mod tests {
    use super::*;
    type B = burn::backend::NdArray<f32>;

    #[test]
    fn matches_the_formula() {
        let device = Default::default();
        let z = [[2.0f32, -1.0], [0.5, 3.0]];
        let y = [[1.0f32, 0.0], [0.25, 1.0]];
        let loss = sigmoid_loss(Tensor::<B, 2>::from_floats(z, &device), Tensor::from_floats(y, &device)).into_scalar();
        let ls = |v: f32| -(1.0 + (-v).exp()).ln();
        let mut want = 0.0;
        for i in 0..2 {
            for j in 0..2 {
                want += -(y[i][j] * ls(z[i][j]) + (1.0 - y[i][j]) * ls(-z[i][j]));
            }
        }
        want /= 2.0;
        assert!((loss - want).abs() < 1e-5, "{loss} vs {want}");
    }

    #[test]
    fn pair_logits_are_scaled_cosines() {
        let device = Default::default();
        let x = Tensor::<B, 2>::from_floats([[3.0, 0.0], [0.0, 2.0]], &device);
        let y = Tensor::<B, 2>::from_floats([[1.0, 0.0]], &device);
        let s = Tensor::<B, 1>::from_floats([(10.0f32).ln()], &device);
        let b = Tensor::<B, 1>::from_floats([-10.0f32], &device);
        let l: Vec<f32> = pair_logits(x, y, s, b).into_data().to_vec().unwrap();
        assert!((l[0] - 0.0).abs() < 1e-5 && (l[1] + 10.0).abs() < 1e-5, "{l:?}");
    }
}
