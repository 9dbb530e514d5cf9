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
/// element by element with its strides each time. Multiplying by one is exact and writes a new,
/// contiguous tensor.
pub fn contiguous<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    x.mul_scalar(1.0)
}
