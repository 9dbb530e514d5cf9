//! 2-D batch normalisation with PyTorch's semantics (`nn.BatchNorm2d`).
//!
//! burn's own `BatchNorm` updates its running variance with the *biased* batch variance; PyTorch
//! uses the unbiased one (`n / (n − 1)`), and the released weights' running statistics were
//! produced that way, so this module follows PyTorch. Batch statistics are used on an autodiff
//! backend (training), running statistics otherwise. Keys: `weight`, `bias`, `running_mean`,
//! `running_var`.

use burn::config::Config;
use burn::module::{Module, Param, RunningState};
use burn::tensor::{backend::Backend, Tensor};

#[derive(Config, Debug)]
pub struct BatchNorm2dConfig {
    pub num_features: usize,
    #[config(default = 1e-5)]
    pub eps: f64,
    #[config(default = 0.1)]
    pub momentum: f64,
}

impl BatchNorm2dConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> BatchNorm2d<B> {
        let c = self.num_features;
        BatchNorm2d {
            weight: Param::from_tensor(Tensor::ones([c], device)),
            bias: Param::from_tensor(Tensor::zeros([c], device)),
            running_mean: RunningState::new(Tensor::zeros([c], device)),
            running_var: RunningState::new(Tensor::ones([c], device)),
            eps: self.eps,
            momentum: self.momentum,
        }
    }
}

#[derive(Module, Debug)]
pub struct BatchNorm2d<B: Backend> {
    pub weight: Param<Tensor<B, 1>>,
    pub bias: Param<Tensor<B, 1>>,
    pub running_mean: RunningState<Tensor<B, 1>>,
    pub running_var: RunningState<Tensor<B, 1>>,
    pub eps: f64,
    pub momentum: f64,
}

impl<B: Backend> BatchNorm2d<B> {
    /// `[b, c, h, w] -> [b, c, h, w]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let device = x.device();
        let (mean, var) = if B::ad_enabled(&device) {
            let n = b * h * w;
            // (B,C,H,W) -> (C, B·H·W)
            let flat = x.clone().swap_dims(0, 1).reshape([c, n]);
            let mean = flat.clone().mean_dim(1).reshape([c]);
            let var = (flat - mean.clone().reshape([c, 1])).powi_scalar(2).mean_dim(1).reshape([c]);
            let unbiased = var.clone().detach() * (n as f64 / (n.max(2) - 1) as f64);
            let m = self.momentum;
            self.running_mean
                .update(self.running_mean.value_sync().to_device(&device) * (1.0 - m) + mean.clone().detach() * m);
            self.running_var.update(self.running_var.value_sync().to_device(&device) * (1.0 - m) + unbiased * m);
            (mean, var)
        } else {
            (self.running_mean.value().to_device(&device), self.running_var.value().to_device(&device))
        };
        let shape = [1, c, 1, 1];
        let x = (x - mean.reshape(shape)) / (var.reshape(shape) + self.eps).sqrt();
        x * self.weight.val().reshape(shape) + self.bias.val().reshape(shape)
    }
}
