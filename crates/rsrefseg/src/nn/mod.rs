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
