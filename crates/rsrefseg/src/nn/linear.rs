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
use std::sync::OnceLock;

/// Rows per block of a split product.
pub const ROW_BLOCK: usize = 256;

fn row_block() -> usize {
    static BLOCK: OnceLock<usize> = OnceLock::new();
    *BLOCK.get_or_init(|| std::env::var("RSREFSEG_ROW_BLOCK").ok().and_then(|v| v.parse().ok()).unwrap_or(ROW_BLOCK))
}

/// `x · w + b` over the last dimension.
///
/// # Shapes
/// - x: `[..., in]`, w: `[in, out]` (burn's `Linear` layout), b: `[out]` → `[..., out]`
pub fn linear_rows<B: Backend, const D: usize>(x: Tensor<B, D>, w: Tensor<B, 2>, b: Option<Tensor<B, 1>>) -> Tensor<B, D> {
    let dims = x.dims();
    let rows: usize = dims[..D - 1].iter().product();
    let block = row_block();
    if block == 0 || rows < 2 * block || rows % block != 0 {
        return linear(x, w, b);
    }
    let [d_in, d_out] = w.dims();
    let y = linear(x.reshape([rows / block, block, d_in]), w, b);
    let mut out = dims;
    out[D - 1] = d_out;
    y.reshape(out)
}
