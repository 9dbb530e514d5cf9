//! FPN neck of the SAM 2.1 image encoder (`FpnNeck` in `sam2/modeling/backbones/image_encoder.py`).
//!
//! A 1×1 convolution maps every trunk level to `d_model` channels. Only the levels listed in
//! `fpn_top_down_levels` also receive the upsampled (×2) output of the next deeper level; the
//! others keep their lateral features. The sine position encoding of the reference neck only
//! feeds the video memory path and is left out.

use crate::nn::interpolate::{bilinear, nearest};
use crate::nn::LoraConv2d;
use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::Conv2dConfig;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// Upsampling of the top-down path (`fpn_interp_model`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FpnInterp {
    /// PyTorch `mode="nearest"` (every SAM 2.1 config).
    Nearest,
    /// PyTorch `mode="bilinear", align_corners=False`.
    Bilinear,
}

#[derive(Config, Debug)]
pub struct FpnNeckConfig {
    /// Output width of every level.
    pub d_model: usize,
    /// Trunk widths, deepest level first (`convs.0` maps the deepest level).
    pub backbone_channel_list: Vec<usize>,
    /// Levels (0 = shallowest) that add the upsampled deeper level to their lateral features.
    #[config(default = "vec![2, 3]")]
    pub fpn_top_down_levels: Vec<usize>,
    #[config(default = "FpnInterp::Nearest")]
    pub fpn_interp: FpnInterp,
}

impl FpnNeckConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> FpnNeck<B> {
        let convs = self
            .backbone_channel_list
            .iter()
            .map(|&c| FpnLateral { conv: Conv2dConfig::new([c, self.d_model], [1, 1]).init(device).into() })
            .collect();
        FpnNeck { convs, fpn_top_down_levels: self.fpn_top_down_levels.clone(), fpn_interp: self.fpn_interp }
    }
}

/// The lateral 1×1 convolution of one level (`convs.N.conv` in the reference, a one-entry
/// `nn.Sequential`); a LoRA target in RSRefSeg 2.
#[derive(Module, Debug)]
pub struct FpnLateral<B: Backend> {
    pub conv: LoraConv2d<B>,
}

#[derive(Module, Debug)]
pub struct FpnNeck<B: Backend> {
    /// Deepest level first.
    pub convs: Vec<FpnLateral<B>>,
    #[module(skip)]
    pub fpn_top_down_levels: Vec<usize>,
    #[module(skip)]
    pub fpn_interp: FpnInterp,
}

impl<B: Backend> FpnNeck<B> {
    /// # Shapes
    /// - xs: trunk levels, shallowest first, `[b, C_i, H_i, W_i]` with `H_i = 2·H_{i+1}`
    /// - output: the same levels, shallowest first, `[b, d_model, H_i, W_i]`
    pub fn forward(&self, xs: Vec<Tensor<B, 4>>) -> Vec<Tensor<B, 4>> {
        let n = self.convs.len();
        assert_eq!(xs.len(), n, "FpnNeck: expected {n} trunk levels, got {}", xs.len());
        let mut out: Vec<Option<Tensor<B, 4>>> = vec![None; n];
        let mut prev: Option<Tensor<B, 4>> = None;
        // Top-down order: from the deepest (lowest resolution) level to the shallowest.
        for (i, x) in xs.into_iter().enumerate().rev() {
            let lateral = self.convs[n - 1 - i].conv.forward(x);
            let features = match prev.take() {
                Some(deeper) if self.fpn_top_down_levels.contains(&i) => {
                    let [_, _, h, w] = deeper.dims();
                    let up = match self.fpn_interp {
                        FpnInterp::Nearest => nearest(deeper, [2 * h, 2 * w]),
                        FpnInterp::Bilinear => bilinear(deeper, [2 * h, 2 * w], false),
                    };
                    lateral + up
                }
                _ => lateral,
            };
            out[i] = Some(features.clone());
            prev = Some(features);
        }
        out.into_iter().map(|o| o.expect("every level computed")).collect()
    }
}

// LoRA-capable layers (RSRefSeg 2 adapts the encoders and SAM's decoder through LoRA).
crate::nn::lora::lora_tree! {
    FpnNeck<B> { convs }
    FpnLateral<B> { conv }
}
