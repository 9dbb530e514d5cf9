//! Orthogonality of the two text subspaces (`loss_text_queries1_queries2`): the mean query of t1
//! and of t2 should point in orthogonal directions, `L = mean_b cos(ū₁, ū₂)²`.

use super::{l2_normalize, mean_tokens};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// # Shapes
/// t1, t2: `[b, n_t, d1]` → `[1]`
pub fn orthogonality<B: Backend>(t1: Tensor<B, 3>, t2: Tensor<B, 3>) -> Tensor<B, 1> {
    assert_eq!(t1.dims(), t2.dims(), "orthogonality: t1 and t2 differ in shape");
    let u = l2_normalize(mean_tokens(t1), 1);
    let w = l2_normalize(mean_tokens(t2), 1);
    // cos of two unit vectors is their dot product.
    let cos = (u * w).sum_dim(1); // [b, 1]
    cos.powi_scalar(2).mean()
}
