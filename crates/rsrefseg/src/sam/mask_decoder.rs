//! SAM 2.1 mask decoder (`sam2/modeling/sam/mask_decoder.py`).
//!
//! Output tokens (object score, IoU, 1 + `num_multimask_outputs` mask tokens) are prepended to
//! the sparse prompt tokens and run through the [`TwoWayTransformer`] with the image embedding
//! (plus the dense prompt embedding). The image side is upscaled ×4 with the high-resolution
//! backbone features added on the way, and each mask token becomes, through its own MLP, the
//! weights of a dot product with every upscaled pixel. [`MaskDecoder::predict_masks`] computes
//! all masks; [`MaskDecoder::forward`] selects the output as SAM 2 does.

use super::two_way_transformer::{TwoWayTransformer, TwoWayTransformerConfig};
use crate::nn::{Activation, LayerNorm2d, LayerNorm2dConfig, Mlp, MlpConfig};
use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::{Embedding, EmbeddingConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

#[derive(Config, Debug)]
pub struct MaskDecoderConfig {
    /// Token / image-embedding width.
    pub transformer_dim: usize,
    pub transformer: TwoWayTransformerConfig,
    /// Mask tokens besides the single-mask token 0.
    #[config(default = 3)]
    pub num_multimask_outputs: usize,
    /// Activation of the upscaling path (exact GELU upstream).
    #[config(default = "Activation::Gelu")]
    pub activation: Activation,
    #[config(default = 3)]
    pub iou_head_depth: usize,
    #[config(default = 256)]
    pub iou_head_hidden_dim: usize,
    /// Add the stride-4 / stride-8 backbone features (`conv_s0`, `conv_s1`) while upscaling.
    #[config(default = true)]
    pub use_high_res_features: bool,
    /// Sigmoid on the IoU head (SAM 2.1).
    #[config(default = true)]
    pub iou_prediction_use_sigmoid: bool,
    /// Object-score token and 3-layer MLP head (SAM 2.1; the linear-head variant is not used by
    /// any released checkpoint and is not supported).
    #[config(default = true)]
    pub pred_obj_scores: bool,
    /// Single-mask output in evaluation falls back to the best multimask token when token 0 is
    /// unstable (`apply_postprocessing=True` when building SAM 2).
    #[config(default = true)]
    pub dynamic_multimask_via_stability: bool,
    /// Logit offset of the stability score: #(logit > δ) / #(logit > −δ).
    #[config(default = 0.05)]
    pub dynamic_multimask_stability_delta: f64,
    /// Token 0 is kept when its stability is at least this.
    #[config(default = 0.98)]
    pub dynamic_multimask_stability_thresh: f64,
    /// Epsilon of the upscaling `LayerNorm2d`.
    #[config(default = 1e-6)]
    pub layer_norm_eps: f64,
}

impl MaskDecoderConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> MaskDecoder<B> {
        let d = self.transformer_dim;
        let num_mask_tokens = self.num_multimask_outputs + 1;
        let up = |c_in, c_out| ConvTranspose2dConfig::new([c_in, c_out], [2, 2]).with_stride([2, 2]).init(device);
        let conv1x1 = |c_out| Conv2dConfig::new([d, c_out], [1, 1]).init(device);
        let head = |out, hidden, depth| MlpConfig::new(d, hidden, out, depth).with_activation(Activation::Relu);
        MaskDecoder {
            transformer: self.transformer.init(device),
            obj_score_token: self.pred_obj_scores.then(|| EmbeddingConfig::new(1, d).init(device)),
            iou_token: EmbeddingConfig::new(1, d).init(device),
            mask_tokens: EmbeddingConfig::new(num_mask_tokens, d).init(device),
            output_upscaling: OutputUpscaling {
                conv1: up(d, d / 4),
                layer_norm: LayerNorm2dConfig::new(d / 4).with_eps(self.layer_norm_eps).init(device),
                conv2: up(d / 4, d / 8),
                activation: self.activation,
            },
            conv_s0: self.use_high_res_features.then(|| conv1x1(d / 8)),
            conv_s1: self.use_high_res_features.then(|| conv1x1(d / 4)),
            output_hypernetworks_mlps: (0..num_mask_tokens).map(|_| head(d / 8, d, 3).init(device)).collect(),
            iou_prediction_head: head(num_mask_tokens, self.iou_head_hidden_dim, self.iou_head_depth)
                .with_sigmoid_output(self.iou_prediction_use_sigmoid)
                .init(device),
            pred_obj_score_head: self.pred_obj_scores.then(|| head(1, d, 3).init(device)),
            dynamic_multimask_via_stability: self.dynamic_multimask_via_stability,
            stability_delta: self.dynamic_multimask_stability_delta,
            stability_thresh: self.dynamic_multimask_stability_thresh,
        }
    }
}

/// `output_upscaling`: ConvT(k2 s2) → LN2d → act → ConvT(k2 s2) → act, with the high-resolution
/// features added after each transposed convolution. Upstream an `nn.Sequential` (slots 0, 1, 3).
#[derive(Module, Debug)]
pub struct OutputUpscaling<B: Backend> {
    pub conv1: ConvTranspose2d<B>,
    pub layer_norm: LayerNorm2d<B>,
    pub conv2: ConvTranspose2d<B>,
    #[module(skip)]
    pub activation: Activation,
}

impl<B: Backend> OutputUpscaling<B> {
    /// # Shapes
    /// - src: `[b, d, h, w]`; feat_s1: `[b, d/4, 2h, 2w]`; feat_s0: `[b, d/8, 4h, 4w]`
    /// - output: `[b, d/8, 4h, 4w]`
    pub fn forward(&self, src: Tensor<B, 4>, high_res: Option<&HighResFeatures<B>>) -> Tensor<B, 4> {
        let x = conv_transpose_k2s2(&self.conv1, src);
        let x = match high_res {
            Some(f) => x + f.feat_s1.clone(),
            None => x,
        };
        let x = self.activation.forward(self.layer_norm.forward(x));
        let x = conv_transpose_k2s2(&self.conv2, x);
        let x = match high_res {
            Some(f) => x + f.feat_s0.clone(),
            None => x,
        };
        self.activation.forward(x)
    }
}

/// A 2×2, stride-2 transposed convolution (no padding, no groups) as one matrix product and a
/// pixel shuffle: every input pixel writes its own 2×2 output block, so
/// `y[o, 2i+di, 2j+dj] = Σ_c x[c, i, j] · w[c, o, di, dj] + bias[o]`. Same numbers as the generic
/// kernel, which on the CPU backend is a scalar loop ~100× slower; other shapes use the layer.
///
/// `[b, c_in, h, w] -> [b, c_out, 2h, 2w]`
pub fn conv_transpose_k2s2<B: Backend>(layer: &ConvTranspose2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let plain = layer.kernel_size == [2, 2]
        && layer.stride == [2, 2]
        && layer.padding == [0, 0]
        && layer.padding_out == [0, 0]
        && layer.dilation == [1, 1]
        && layer.groups == 1;
    if !plain {
        return layer.forward(x);
    }
    let [b, c, h, w] = x.dims();
    let weight = layer.weight.val(); // (c_in, c_out, 2, 2)
    let o = weight.dims()[1];
    // (B,C,H,W) -> (B,H·W,C) · (C, O·4) -> (B,H,W,O,2,2) -> (B,O,H,2,W,2) -> (B,O,2H,2W)
    let cols = x.reshape([b, c, h * w]).swap_dims(1, 2);
    let y = cols.matmul(weight.reshape([1, c, o * 4]));
    // The pixel shuffle, copied once in one pass on the CPU backend.
    let y = crate::nn::contiguous(y.reshape([b, h, w, o, 2, 2]).permute([0, 3, 1, 4, 2, 5])).reshape([b, o, 2 * h, 2 * w]);
    match &layer.bias {
        Some(bias) => crate::nn::channel_affine(y, None, Some(bias.val())),
        None => y,
    }
}

/// Backbone features at strides 4 and 8, already through `conv_s0` / `conv_s1`.
#[derive(Clone, Debug)]
pub struct HighResFeatures<B: Backend> {
    /// `[b, d/8, 4h, 4w]`
    pub feat_s0: Tensor<B, 4>,
    /// `[b, d/4, 2h, 2w]`
    pub feat_s1: Tensor<B, 4>,
}

/// Inputs of the mask decoder.
#[derive(Clone, Debug)]
pub struct MaskDecoderInput<B: Backend> {
    /// `[b_img, d, h, w]`
    pub image_embeddings: Tensor<B, 4>,
    /// `[1, d, h, w]` (the prompt encoder's dense PE)
    pub image_pe: Tensor<B, 4>,
    /// `[b, n, d]`: point/box tokens, or any tokens of width `d` (RSRefSeg's prompter output)
    pub sparse_prompt_embeddings: Tensor<B, 3>,
    /// `[b, d, h, w]`
    pub dense_prompt_embeddings: Tensor<B, 4>,
    /// Required when the decoder uses high-resolution features.
    pub high_res_features: Option<HighResFeatures<B>>,
    /// Repeat each image for every prompt set (`b = b_img · k`, prompts grouped per image).
    pub repeat_image: bool,
}

/// Every mask the decoder computes (`predict_masks`).
#[derive(Clone, Debug)]
pub struct MaskPrediction<B: Backend> {
    /// Low-resolution mask logits of all mask tokens: `[b, 1 + num_multimask, 4h, 4w]`.
    pub masks: Tensor<B, 4>,
    /// Predicted IoU per mask token: `[b, 1 + num_multimask]`.
    pub iou_pred: Tensor<B, 2>,
    /// Mask tokens after the transformer: `[b, 1 + num_multimask, d]`.
    pub mask_tokens_out: Tensor<B, 3>,
    /// Object-presence logit: `[b, 1]` (10 when the decoder has no object-score head).
    pub object_score_logits: Tensor<B, 2>,
}

/// The selected output of [`MaskDecoder::forward`].
#[derive(Clone, Debug)]
pub struct MaskDecoderOutput<B: Backend> {
    /// `[b, k, 4h, 4w]` with k = num_multimask (multimask output) or 1.
    pub masks: Tensor<B, 4>,
    /// `[b, k]`
    pub iou_pred: Tensor<B, 2>,
    /// The single-mask token (`[b, 1, d]`), SAM 2's object pointer source.
    pub sam_tokens_out: Tensor<B, 3>,
    /// `[b, 1]`
    pub object_score_logits: Tensor<B, 2>,
    /// All masks, before selection.
    pub all: MaskPrediction<B>,
}

#[derive(Module, Debug)]
pub struct MaskDecoder<B: Backend> {
    pub transformer: TwoWayTransformer<B>,
    pub obj_score_token: Option<Embedding<B>>,
    pub iou_token: Embedding<B>,
    pub mask_tokens: Embedding<B>,
    pub output_upscaling: OutputUpscaling<B>,
    pub conv_s0: Option<Conv2d<B>>,
    pub conv_s1: Option<Conv2d<B>>,
    pub output_hypernetworks_mlps: Vec<Mlp<B>>,
    pub iou_prediction_head: Mlp<B>,
    pub pred_obj_score_head: Option<Mlp<B>>,
    pub dynamic_multimask_via_stability: bool,
    pub stability_delta: f64,
    pub stability_thresh: f64,
}

impl<B: Backend> MaskDecoder<B> {
    /// Predict masks and select the output: tokens 1.. for `multimask_output`; otherwise token 0,
    /// or (outside training, with `dynamic_multimask_via_stability`) token 0 unless it is
    /// unstable, then the multimask token with the best predicted IoU.
    ///
    /// # Shapes
    /// See [`MaskDecoderInput`] and [`MaskDecoderOutput`].
    pub fn forward(&self, input: MaskDecoderInput<B>, multimask_output: bool, training: bool) -> MaskDecoderOutput<B> {
        let all = self.predict_masks(input);
        let [b, t, h, w] = all.masks.dims();
        let (masks, iou_pred) = if multimask_output {
            (all.masks.clone().slice([0..b, 1..t, 0..h, 0..w]), all.iou_pred.clone().slice([0..b, 1..t]))
        } else if self.dynamic_multimask_via_stability && !training {
            self.dynamic_multimask_via_stability(all.masks.clone(), all.iou_pred.clone())
        } else {
            (all.masks.clone().slice([0..b, 0..1, 0..h, 0..w]), all.iou_pred.clone().slice([0..b, 0..1]))
        };
        let d = all.mask_tokens_out.dims()[2];
        MaskDecoderOutput {
            masks,
            iou_pred,
            sam_tokens_out: all.mask_tokens_out.clone().slice([0..b, 0..1, 0..d]),
            object_score_logits: all.object_score_logits.clone(),
            all,
        }
    }

    /// Run the transformer and the heads for every mask token.
    pub fn predict_masks(&self, input: MaskDecoderInput<B>) -> MaskPrediction<B> {
        let MaskDecoderInput {
            image_embeddings,
            image_pe,
            sparse_prompt_embeddings: sparse,
            dense_prompt_embeddings: dense,
            high_res_features,
            repeat_image,
        } = input;
        let [b, _, d] = sparse.dims();

        // Output tokens: [obj_score,] iou, mask tokens, then the prompt tokens.
        let mut output_tokens = Vec::new();
        if let Some(t) = &self.obj_score_token {
            output_tokens.push(t.weight.val());
        }
        output_tokens.push(self.iou_token.weight.val());
        output_tokens.push(self.mask_tokens.weight.val());
        let output_tokens = Tensor::cat(output_tokens, 0);
        let n_out = output_tokens.dims()[0];
        let output_tokens = output_tokens.unsqueeze_dim::<3>(0).expand([b, n_out, d]);
        let tokens = Tensor::cat(vec![output_tokens, sparse], 1);

        // Expand per-image data in the batch direction to be per prompt set.
        let [bi, c, h, w] = image_embeddings.dims();
        let src = if repeat_image && bi != b {
            image_embeddings.unsqueeze_dim::<5>(1).expand([bi, b / bi, c, h, w]).reshape([b, c, h, w])
        } else {
            assert_eq!(bi, b, "MaskDecoder: {bi} image embeddings for {b} prompt sets");
            image_embeddings
        };
        let src = src + dense;
        let pos_src = image_pe.expand([b, c, h, w]);

        // Run the transformer
        let (hs, src) = self.transformer.forward(src, pos_src, tokens);
        let s = usize::from(self.obj_score_token.is_some());
        let num_mask_tokens = self.output_hypernetworks_mlps.len();
        let iou_token_out = hs.clone().slice([0..b, s..s + 1, 0..d]).reshape([b, d]);
        let mask_tokens_out = hs.clone().slice([0..b, s + 1..s + 1 + num_mask_tokens, 0..d]);

        // Upscale mask embeddings and predict masks using the mask tokens
        // (B, H·W, C) -> (B, C, H, W)
        let src = src.swap_dims(1, 2).reshape([b, c, h, w]);
        let upscaled = self.output_upscaling.forward(src, high_res_features.as_ref());
        let [_, cu, hu, wu] = upscaled.dims();
        let hyper_in = Tensor::stack::<3>(
            self.output_hypernetworks_mlps
                .iter()
                .enumerate()
                .map(|(i, mlp)| {
                    mlp.forward(mask_tokens_out.clone().slice([0..b, i..i + 1, 0..d]).reshape([b, d]))
                })
                .collect(),
            1,
        );
        let masks = hyper_in.matmul(upscaled.reshape([b, cu, hu * wu])).reshape([b, num_mask_tokens, hu, wu]);

        // Mask quality and object presence
        let iou_pred = self.iou_prediction_head.forward(iou_token_out);
        let object_score_logits = match &self.pred_obj_score_head {
            Some(head) => head.forward(hs.slice([0..b, 0..1, 0..d]).reshape([b, d])),
            // Assume the object is present (sigmoid(10) ≈ 1), as upstream.
            None => Tensor::ones([b, 1], &iou_pred.device()) * 10.0,
        };
        MaskPrediction { masks, iou_pred, mask_tokens_out, object_score_logits }
    }

    /// Stability of mask logits: #(logit > δ) / #(logit > −δ), 1 when nothing exceeds −δ.
    ///
    /// # Shapes
    /// - mask_logits: `[b, 1, h, w]` → `[b]`
    pub fn stability_scores(&self, mask_logits: Tensor<B, 4>) -> Tensor<B, 1> {
        let [b, k, h, w] = mask_logits.dims();
        let flat = mask_logits.reshape([b * k, h * w]);
        let delta = self.stability_delta;
        let area_i = flat.clone().greater_elem(delta).float().sum_dim(1).reshape([b * k]);
        let area_u = flat.greater_elem(-delta).float().sum_dim(1).reshape([b * k]);
        let empty = area_u.clone().equal_elem(0.0);
        // Counts are whole numbers, so clamping the denominator only changes the empty case,
        // which is then set to 1.
        (area_i / area_u.clamp_min(1.0)).mask_fill(empty, 1.0)
    }

    /// Keep token 0 where it is stable, otherwise take the multimask token with the highest
    /// predicted IoU. Computed on the device with masks (no read-back).
    ///
    /// # Shapes
    /// - all_mask_logits: `[b, 1 + m, h, w]`, all_iou_scores: `[b, 1 + m]`
    /// - output: (`[b, 1, h, w]`, `[b, 1]`)
    pub fn dynamic_multimask_via_stability(
        &self,
        all_mask_logits: Tensor<B, 4>,
        all_iou_scores: Tensor<B, 2>,
    ) -> (Tensor<B, 4>, Tensor<B, 2>) {
        let [b, t, h, w] = all_mask_logits.dims();
        // The best mask from the multimask output tokens (1..)
        let multimask_logits = all_mask_logits.clone().slice([0..b, 1..t, 0..h, 0..w]);
        let multimask_iou = all_iou_scores.clone().slice([0..b, 1..t]);
        let best: Tensor<B, 2, Int> = multimask_iou.clone().argmax(1);
        let best_logits = multimask_logits.gather(1, best.clone().reshape([b, 1, 1, 1]).expand([b, 1, h, w]));
        let best_iou = multimask_iou.gather(1, best);

        // The single-mask token 0 and its stability
        let single_logits = all_mask_logits.slice([0..b, 0..1, 0..h, 0..w]);
        let single_iou = all_iou_scores.slice([0..b, 0..1]);
        let stable = self
            .stability_scores(single_logits.clone())
            .greater_equal_elem(self.stability_thresh);

        // Fall back to the best multimask output where token 0 is unstable.
        let masks = best_logits.mask_where(stable.clone().reshape([b, 1, 1, 1]).expand([b, 1, h, w]), single_logits);
        let iou = best_iou.mask_where(stable.reshape([b, 1]), single_iou);
        (masks, iou)
    }
}

// LoRA-capable layers (RSRefSeg 2 adapts the encoders and SAM's decoder through LoRA).
crate::nn::lora::lora_tree! {
    MaskDecoder<B> { transformer }
}
