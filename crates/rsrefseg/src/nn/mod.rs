//! Primitives shared by at least two parts of the model (encoders, prompter, SAM).

pub mod activation;
pub mod attention;
pub mod batch_norm;
pub mod conv;
pub mod interpolate;
pub mod layer_norm2d;
pub mod linear;
pub mod lora;
pub mod mlp;

pub use activation::Activation;
pub use attention::{Attention, AttentionConfig};
pub use layer_norm2d::{LayerNorm2d, LayerNorm2dConfig};
pub use lora::{LoraConfig, LoraConv2d, LoraLinear, LoraModule};
pub use mlp::{Mlp, MlpConfig};

use burn::tensor::{backend::Backend, Tensor};

/// `x` with its elements laid out contiguously. A permuted view (`swap_dims`) is a stride trick
/// on burn's CPU backends; a view that several later operations read (SAM's image tokens and
/// their positional encoding, added in every two-way layer) is cheaper copied once than walked
/// element by element with its strides each time. On the CPU backend the project's kernel copies
/// whole contiguous runs; elsewhere multiplying by one is exact and writes a new, contiguous
/// tensor.
pub fn contiguous<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    match rsrefseg_kernels::contiguous(x) {
        Ok(y) => y,
        Err(x) => x.mul_scalar(1.0),
    }
}

/// `x.reshape(shape)`, kept a view of the same buffer on the CPU backend when the strides allow
/// (as PyTorch's `view`): burn's CPU backends copy any non-contiguous tensor they reshape.
pub fn reshape_view<B: Backend, const D: usize, const D2: usize>(x: Tensor<B, D>, shape: [usize; D2]) -> Tensor<B, D2> {
    match rsrefseg_kernels::view_reshape(x, shape) {
        Ok(y) => y,
        Err(x) => x.reshape(shape),
    }
}

/// `x·scale[c] + shift[c]` over dimension 1 of a channels-first `x` (`[n, c, …]`): a
/// convolution's bias, LayerNorm2d's affine part. One pass per channel plane on the CPU backend
/// (with its backward under autodiff); broadcast ops elsewhere.
pub fn channel_affine<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    scale: Option<Tensor<B, 1>>,
    shift: Option<Tensor<B, 1>>,
) -> Tensor<B, D> {
    let x = match rsrefseg_kernels::channel_affine(x, scale.as_ref(), shift.as_ref()) {
        Ok(y) => return y,
        Err(x) => x,
    };
    let c = x.dims()[1];
    let per_channel = |t: Tensor<B, 1>| -> Tensor<B, D> {
        let mut shape = [1; D];
        shape[1] = c;
        t.reshape(shape)
    };
    let x = match scale {
        Some(s) => x * per_channel(s),
        None => x,
    };
    match shift {
        Some(b) => x + per_channel(b),
        None => x,
    }
}
