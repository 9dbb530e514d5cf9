//! The SigLIP model: both towers, the transformer encoder they share, and the CLIP-level scalars.

use super::siglip_config::SiglipConfig;
use super::siglip_text::SiglipTextTower;
use super::siglip_vision::SiglipVisionTower;
use crate::nn::{Activation, Attention, AttentionConfig, LoraLinear};
use burn::module::{Module, Param};
use burn::nn::{LayerNorm, LayerNormConfig, LinearConfig};
use burn::tensor::{backend::Backend, Tensor};

/// `fc1 → activation → fc2` (HF `SiglipMLP`; keys `mlp.fc1`, `mlp.fc2`). LoRA-capable because the
/// reference adapts the vision MAP head's MLP; the encoder layers' MLPs are never targeted.
#[derive(Module, Debug)]
pub struct SiglipMlp<B: Backend> {
    pub fc1: LoraLinear<B>,
    pub fc2: LoraLinear<B>,
    #[module(skip)]
    pub activation: Activation,
}

impl<B: Backend> SiglipMlp<B> {
    pub fn new(dim: usize, hidden: usize, activation: Activation, device: &B::Device) -> Self {
        Self {
            fc1: LinearConfig::new(dim, hidden).init(device).into(),
            fc2: LinearConfig::new(hidden, dim).init(device).into(),
            activation,
        }
    }
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        self.fc2.forward(self.activation.forward(self.fc1.forward(x)))
    }
}

/// Pre-LN transformer layer: `x += attn(LN1 x); x += mlp(LN2 x)`.
#[derive(Module, Debug)]
pub struct SiglipEncoderLayer<B: Backend> {
    pub layer_norm1: LayerNorm<B>,
    pub self_attn: Attention<B>,
    pub layer_norm2: LayerNorm<B>,
    pub mlp: SiglipMlp<B>,
}

/// Hyper-parameters both towers share.
#[derive(Clone, Copy, Debug)]
pub struct EncoderDims {
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub eps: f64,
    pub activation: Activation,
}

impl<B: Backend> SiglipEncoderLayer<B> {
    pub fn new(d: EncoderDims, device: &B::Device) -> Self {
        let ln = || LayerNormConfig::new(d.hidden).with_epsilon(d.eps).init(device);
        Self {
            layer_norm1: ln(),
            self_attn: AttentionConfig::self_attn(d.hidden, d.hidden, d.heads).init(device),
            layer_norm2: ln(),
            mlp: SiglipMlp::new(d.hidden, d.intermediate, d.activation, device),
        }
    }

    /// `[b, n, d] -> [b, n, d]`; `key_bias` is `[b, 1, 1, n]` (additive, on padded keys).
    pub fn forward(&self, x: Tensor<B, 3>, key_bias: Option<Tensor<B, 4>>) -> Tensor<B, 3> {
        let shortcut = x.clone();
        let y = self.layer_norm1.forward(x);
        let x = shortcut + self.self_attn.forward(y.clone(), y.clone(), y, key_bias);
        let shortcut = x.clone();
        shortcut + self.mlp.forward(self.layer_norm2.forward(x))
    }
}

/// The stack of encoder layers (key prefix `encoder.layers.{i}`).
#[derive(Module, Debug)]
pub struct SiglipEncoder<B: Backend> {
    pub layers: Vec<SiglipEncoderLayer<B>>,
}

impl<B: Backend> SiglipEncoder<B> {
    pub fn new(d: EncoderDims, device: &B::Device) -> Self {
        Self { layers: (0..d.layers).map(|_| SiglipEncoderLayer::new(d, device)).collect() }
    }

    pub fn forward(&self, x: Tensor<B, 3>, key_bias: Option<Tensor<B, 4>>) -> Tensor<B, 3> {
        self.layers.iter().fold(x, |x, layer| layer.forward(x, key_bias.clone()))
    }
}

/// Text-tower outputs used by RSRefSeg 2.
#[derive(Debug, Clone)]
pub struct SiglipTextOutput<B: Backend> {
    /// `last_hidden_state` after the final LayerNorm, every position: t_word `[b, l, d1]`.
    pub t_word: Tensor<B, 3>,
    /// `head(last_hidden_state[:, -1])` (HF `pooler_output`): t_sent `[b, d1]`.
    pub t_sent: Tensor<B, 2>,
}

/// HF `SiglipModel` without the contrastive loss: `text_model`, `vision_model`, `logit_scale`,
/// `logit_bias` (SigLIP similarity = `exp(logit_scale)·cos + logit_bias`; RSRefSeg 2 reuses both
/// scalars for its dense prompt).
#[derive(Module, Debug)]
pub struct Siglip<B: Backend> {
    pub text_model: SiglipTextTower<B>,
    pub vision_model: SiglipVisionTower<B>,
    pub logit_scale: Param<Tensor<B, 1>>,
    pub logit_bias: Param<Tensor<B, 1>>,
}

impl<B: Backend> Siglip<B> {
    pub fn new(config: &SiglipConfig, device: &B::Device) -> Result<Self, String> {
        Ok(Self {
            text_model: SiglipTextTower::new(&config.text_config, device)?,
            vision_model: SiglipVisionTower::new(&config.vision_config, device)?,
            // transformers' initial values: log(1/0.07)… are overwritten by any checkpoint.
            logit_scale: Param::from_tensor(Tensor::from_floats([(1.0f32 / 0.07).ln()], device)),
            logit_bias: Param::from_tensor(Tensor::from_floats([-10.0f32], device)),
        })
    }
}

// LoRA-capable layers (RSRefSeg 2 adapts the encoders and SAM's decoder through LoRA).
crate::nn::lora::lora_tree! {
    Siglip<B> { text_model, vision_model }
    SiglipEncoder<B> { layers }
    SiglipEncoderLayer<B> { self_attn, mlp }
    SiglipMlp<B> { fc1, fc2 }
}
