//! The n-layer MLP of SAM (`sam2_utils.MLP`), also used by Hiera blocks and the prompter.
//! Keys are `layers.{i}` as in the reference; the activation follows every layer but the last.
//! The layers are [`LoraLinear`]s (no adapter unless one is attached), so the int8 inference
//! path and the LoRA walk reach Hiera's MLPs like every other `Linear`.

use super::Activation;
use burn::config::Config;
use burn::module::Module;
use super::lora::LoraLinear;
use burn::nn::LinearConfig;
use burn::tensor::{activation::sigmoid, backend::Backend, Tensor};

#[derive(Config, Debug)]
pub struct MlpConfig {
    pub input_dim: usize,
    pub hidden_dim: usize,
    pub output_dim: usize,
    pub num_layers: usize,
    #[config(default = "Activation::Relu")]
    pub activation: Activation,
    /// Apply a sigmoid to the output (SAM 2's IoU head).
    #[config(default = false)]
    pub sigmoid_output: bool,
}

impl MlpConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> Mlp<B> {
        let layers = (0..self.num_layers)
            .map(|i| {
                let d_in = if i == 0 { self.input_dim } else { self.hidden_dim };
                let d_out = if i + 1 == self.num_layers { self.output_dim } else { self.hidden_dim };
                LinearConfig::new(d_in, d_out).init(device).into()
            })
            .collect();
        Mlp { layers, activation: self.activation, sigmoid_output: self.sigmoid_output }
    }
}

#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub layers: Vec<LoraLinear<B>>,
    #[module(skip)]
    pub activation: Activation,
    pub sigmoid_output: bool,
}

impl<B: Backend> Mlp<B> {
    /// `[..., input_dim] -> [..., output_dim]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let n = self.layers.len();
        let mut x = x;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x);
            if i + 1 < n {
                x = self.activation.forward(x);
            }
        }
        if self.sigmoid_output {
            sigmoid(x)
        } else {
            x
        }
    }
}

super::lora::lora_tree! {
    Mlp<B> { layers }
}
