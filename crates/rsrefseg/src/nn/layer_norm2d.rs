//! LayerNorm over the channel axis of an NCHW map (SAM's `LayerNorm2d`, eps 1e-6).

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Tensor};

#[derive(Config, Debug)]
pub struct LayerNorm2dConfig {
    pub num_channels: usize,
    #[config(default = 1e-6)]
    pub eps: f64,
}

impl LayerNorm2dConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> LayerNorm2d<B> {
        LayerNorm2d {
            weight: Param::from_tensor(Tensor::ones([self.num_channels], device)),
            bias: Param::from_tensor(Tensor::zeros([self.num_channels], device)),
            eps: self.eps,
        }
    }
}

#[derive(Module, Debug)]
pub struct LayerNorm2d<B: Backend> {
    pub weight: Param<Tensor<B, 1>>,
    pub bias: Param<Tensor<B, 1>>,
    pub eps: f64,
}

impl<B: Backend> LayerNorm2d<B> {
    /// `[b, c, h, w] -> [b, c, h, w]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        // One pass on the CPU backend (inference).
        let x = match rsrefseg_kernels::layer_norm_channels(x, &self.weight.val(), &self.bias.val(), self.eps) {
            Ok(y) => return y,
            Err(x) => x,
        };
        let u = x.clone().mean_dim(1);
        let d = x - u;
        let s = d.clone().powi_scalar(2).mean_dim(1);
        let x = d / (s + self.eps).sqrt();
        super::channel_affine(x, Some(self.weight.val()), Some(self.bias.val()))
    }
}
