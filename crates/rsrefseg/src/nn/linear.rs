//! The one `x · W + b` of the model (every `Linear`, with or without LoRA).
//!
//! Many rows (SigLIP's 1024 patch tokens, Hiera's 65 536 stride-4 tokens) are split into
//! blocks of [`ROW_BLOCK`] rows given to the backend as a batch of matrix products: burn's CPU
//! backend spreads the matrices of a batch over its threads, while a single product runs on one
//! thread when the BLAS behind it is single-threaded (see the CLI's `blas` feature). The
//! arithmetic is the same; GPU backends batch it just as well.

use burn::tensor::backend::Backend;
use burn::tensor::module::linear;
use burn::tensor::Tensor;

/// Rows per block of a split product.
pub const ROW_BLOCK: usize = 256;

/// `x · w + b` over the last dimension.
///
/// # Shapes
/// - x: `[..., in]`, w: `[in, out]` (burn's `Linear` layout), b: `[out]` → `[..., out]`
pub fn linear_rows<B: Backend, const D: usize>(x: Tensor<B, D>, w: Tensor<B, 2>, b: Option<Tensor<B, 1>>) -> Tensor<B, D> {
    let dims = x.dims();
    let rows: usize = dims[..D - 1].iter().product();
    let block = ROW_BLOCK;
    if rows < 2 * block || !rows.is_multiple_of(block) {
        return linear(x, w, b);
    }
    let [d_in, d_out] = w.dims();
    let y = linear(x.reshape([rows / block, block, d_in]), w, b);
    let mut out = dims;
    out[D - 1] = d_out;
    y.reshape(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    #[test]
    fn row_blocks_give_the_plain_product() {
        type B = burn::backend::NdArray<f32>;
        let dev = Default::default();
        let x = Tensor::<B, 3>::random([2, 3 * ROW_BLOCK, 24], Distribution::Normal(0.0, 1.0), &dev);
        let w = Tensor::<B, 2>::random([24, 40], Distribution::Normal(0.0, 1.0), &dev);
        let b = Tensor::<B, 1>::random([40], Distribution::Normal(0.0, 1.0), &dev);
        let split = linear_rows(x.clone(), w.clone(), Some(b.clone()));
        let plain = linear(x, w, Some(b));
        assert_eq!(split.dims(), [2, 3 * ROW_BLOCK, 40]);
        let d: f32 = (split - plain).abs().max().into_scalar();
        assert!(d < 1e-4, "{d}");
    }
}
