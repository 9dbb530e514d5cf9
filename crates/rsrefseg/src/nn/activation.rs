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
            Activation::Gelu => gelu_erf(x),
            Activation::GeluTanh => gelu_tanh(x),
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

/// tanh GELU, `½x(1 + tanh(√(2/π)·x·(1 + 0.044715·x²)))`: burn's `gelu_approximate` with the
/// cube as two products instead of `powf` (a scalar `powf` per element cost ~5 % of SigLIP's
/// vision tower on the CPU backend). Same function; rounding differs in the last bits. On the CPU
/// backend (also under autodiff, with its exact derivative): the project's one-pass kernel.
pub fn gelu_tanh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let x = match rsrefseg_kernels::gelu(x, rsrefseg_kernels::Gelu::Tanh) {
        Ok(y) => return y,
        Err(x) => x,
    };
    const SQRT_2_OVER_PI: f64 = core::f64::consts::FRAC_2_SQRT_PI * core::f64::consts::FRAC_1_SQRT_2;
    let inner = x.clone() * ((x.clone() * x.clone()) * 0.044715 + 1.0) * SQRT_2_OVER_PI;
    x * (inner.tanh() + 1.0) * 0.5
}

/// Exact GELU, `x · ½(1 + erf(x/√2))`, written with `erf` so that autodiff differentiates it
/// exactly (burn's fused `gelu` has an approximate backward on the CPU backend: ~1e-3 error in the
/// derivative, which shows in the gradients of everything behind a GELU). On the CPU backend
/// (also under autodiff, with the exact derivative): the project's one-pass kernel.
pub fn gelu_erf<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let x = match rsrefseg_kernels::gelu(x, rsrefseg_kernels::Gelu::Erf) {
        Ok(y) => return y,
        Err(x) => x,
    };
    x.clone() * ((x * core::f64::consts::FRAC_1_SQRT_2).erf() + 1.0) * 0.5
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    #[test]
    fn gelu_tanh_is_burns_gelu_approximate() {
        type B = burn::backend::NdArray<f64>;
        let dev = Default::default();
        let xs: Vec<f64> = (-60..60).map(|i| i as f64 * 0.13).collect();
        let t = || Tensor::<B, 1>::from_data(TensorData::new(xs.clone(), [xs.len()]), &dev);
        let a: Vec<f64> = gelu_tanh(t()).into_data().convert::<f64>().into_vec().unwrap();
        let b: Vec<f64> = activation::gelu_approximate(t()).into_data().convert::<f64>().into_vec().unwrap();
        for (i, x) in xs.iter().enumerate() {
            // f32 rounding: another test of this binary may switch the device's float type.
            assert!((a[i] - b[i]).abs() < 1e-6, "at {x}: {} vs {}", a[i], b[i]);
        }
        // And it is the tanh approximation, not the exact GELU (they differ by up to ~5e-4).
        let exact: Vec<f64> = gelu_erf(t()).into_data().convert::<f64>().into_vec().unwrap();
        assert!(a.iter().zip(&exact).any(|(p, q)| (p - q).abs() > 1e-4));
    }

    #[test]
    fn gelu_value_and_exact_derivative() {
        type B = burn::backend::Autodiff<burn::backend::NdArray<f64>>;
        let dev = Default::default();
        let xs: Vec<f64> = (-40..40).map(|i| i as f64 * 0.11).collect();
        let x = Tensor::<B, 1>::from_data(TensorData::new(xs.clone(), [xs.len()]), &dev).require_grad();
        let y = gelu_erf(x.clone());
        let g = y.clone().sum().backward();
        let gx: Vec<f64> = x.grad(&g).unwrap().into_data().convert::<f64>().into_vec().unwrap();
        let yv: Vec<f64> = y.inner().into_data().convert::<f64>().into_vec().unwrap();
        let yb: Vec<f64> = activation::gelu(Tensor::<burn::backend::NdArray<f64>, 1>::from_data(TensorData::new(xs.clone(), [xs.len()]), &dev))
            .into_data().convert::<f64>().into_vec().unwrap();
        for (i, &v) in xs.iter().enumerate() {
            assert!((yv[i] - yb[i]).abs() < 1e-7, "value at {v}");
            // d/dx = Φ(x) + x·φ(x); Φ from the forward value (y = xΦ) away from 0.
            let phi = (-v * v / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt();
            if v.abs() > 0.2 {
                let cdf = yb[i] / v;
                assert!((gx[i] - (cdf + v * phi)).abs() < 1e-6, "derivative at {v}: {}", gx[i]);
            }
        }
    }
}
