//! Activation functions by the names the reference implementations use.
//!
//! The flavours matter for parity: SigLIP uses the tanh approximation of GELU, Hiera, SAM's
//! upscaling and the prompter use the exact erf GELU, SAM's two-way MLPs and heads use ReLU.

use burn::tensor::{activation, backend::Backend, Tensor};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `x·Φ(x)` with the exact erf (PyTorch `nn.GELU()`).
    #[default]
    Gelu,
    /// tanh approximation (`gelu_pytorch_tanh` in HF configs).
    GeluTanh,
    Relu,
}

impl Activation {
    pub fn forward<B: Backend, const D: usize>(self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Activation::Gelu => activation::gelu(x),
            Activation::GeluTanh => activation::gelu_approximate(x),
            Activation::Relu => activation::relu(x),
        }
    }

    /// Parses the `hidden_act` strings found in Hugging Face `config.json` files.
    pub fn from_hf(name: &str) -> Option<Self> {
        match name {
            "gelu" => Some(Activation::Gelu),
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Some(Activation::GeluTanh),
            "relu" => Some(Activation::Relu),
            _ => None,
        }
    }
}
