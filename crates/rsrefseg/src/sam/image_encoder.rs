//! SAM 2.1 image encoder: [`Hiera`] trunk + [`FpnNeck`] (`ImageEncoder` in
//! `sam2/modeling/backbones/image_encoder.py`).

use super::hiera::Hiera;
use super::neck::FpnNeck;
use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// Outputs of [`ImageEncoder::forward`], shallowest level first.
#[derive(Clone, Debug)]
pub struct ImageEncoderOutput<B: Backend> {
    /// Trunk stage outputs `[b, C_s, H_s, W_s]` (strides 4, 8, 16, 32).
    pub trunk: Vec<Tensor<B, 4>>,
    /// FPN levels `[b, d_model, H_s, W_s]` without the `scalp` deepest ones.
    pub fpn: Vec<Tensor<B, 4>>,
}

#[derive(Module, Debug)]
pub struct ImageEncoder<B: Backend> {
    pub trunk: Hiera<B>,
    pub neck: FpnNeck<B>,
    /// Number of deepest FPN levels discarded (1 in SAM 2.1: the stride-32 level only feeds the
    /// stride-16 one).
    pub scalp: usize,
}

impl<B: Backend> ImageEncoder<B> {
    /// # Shapes
    /// - pixels: `[b, 3, S, S]` → see [`ImageEncoderOutput`]
    pub fn forward(&self, pixels: Tensor<B, 4>) -> ImageEncoderOutput<B> {
        let trunk = self.trunk.forward(pixels);
        let mut fpn = self.neck.forward(trunk.clone());
        fpn.truncate(fpn.len().saturating_sub(self.scalp));
        ImageEncoderOutput { trunk, fpn }
    }
}

// LoRA-capable layers (RSRefSeg 2 adapts the encoders and SAM's decoder through LoRA).
crate::nn::lora::lora_tree! {
    ImageEncoder<B> { trunk, neck }
}
