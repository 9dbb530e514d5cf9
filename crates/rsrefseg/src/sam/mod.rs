//! SAM 2.1, the image path RSRefSeg 2 uses: image encoder (Hiera + FPN), prompt encoder and mask
//! decoder, plus `no_mem_embed`. The video memory modules are not part of this port.
//!
//! Field names follow the original `sam2` state dict (`image_encoder.trunk.blocks.N.attn.qkv`,
//! `sam_mask_decoder.transformer.layers.N.cross_attn_token_to_image.q_proj`, `no_mem_embed`),
//! except where upstream uses `nn.Sequential` slots, which get names here (HF's where it has
//! them); the key tables in [`crate::checkpoint::keys`] translate.

pub mod hiera;
pub mod image_encoder;
pub mod mask_decoder;
pub mod neck;
pub mod position_encoding;
pub mod prompt_encoder;
pub mod two_way_transformer;

use crate::checkpoint::keys::{sam2_hf, sam2_original, KeyTable};
use crate::checkpoint::{load_module_owned, read_tensors, LoadError, LoadOptions, LoadReport, TensorMap};
use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use hiera::HieraConfig;
use image_encoder::{ImageEncoder, ImageEncoderOutput};
use mask_decoder::{HighResFeatures, MaskDecoder, MaskDecoderConfig, MaskDecoderInput, MaskDecoderOutput};
use neck::{FpnInterp, FpnNeckConfig};
use prompt_encoder::{PromptEncoder, PromptEncoderConfig};
use two_way_transformer::TwoWayTransformerConfig;

#[derive(Config, Debug)]
pub struct Sam2Config {
    /// Trunk (the part that differs between the released sizes).
    pub hiera: HieraConfig,
    /// Width of the FPN levels, prompt tokens and mask decoder.
    #[config(default = 256)]
    pub d_model: usize,
    /// Square model input size S.
    #[config(default = 1024)]
    pub image_size: usize,
    /// Stride of the image embedding (S / 16 = 64 for S = 1024).
    #[config(default = 16)]
    pub backbone_stride: usize,
    /// FPN levels with top-down fusion (0 = stride 4).
    #[config(default = "vec![2, 3]")]
    pub fpn_top_down_levels: Vec<usize>,
    #[config(default = "FpnInterp::Nearest")]
    pub fpn_interp: FpnInterp,
    /// Deepest FPN levels dropped after the neck.
    #[config(default = 1)]
    pub scalp: usize,
    /// Hidden width of the prompt encoder's `mask_downscaling`.
    #[config(default = 16)]
    pub mask_in_chans: usize,
    /// Two-way transformer: depth, heads, MLP width, cross-attention downsampling (fixed in
    /// `SAM2Base`, not in the yaml files).
    #[config(default = 2)]
    pub transformer_depth: usize,
    #[config(default = 8)]
    pub transformer_num_heads: usize,
    #[config(default = 2048)]
    pub transformer_mlp_dim: usize,
    #[config(default = 2)]
    pub attention_downsample_rate: usize,
    /// Mask decoder heads and output selection (see [`MaskDecoderConfig`]).
    #[config(default = 3)]
    pub num_multimask_outputs: usize,
    #[config(default = 3)]
    pub iou_head_depth: usize,
    #[config(default = 256)]
    pub iou_head_hidden_dim: usize,
    #[config(default = true)]
    pub use_high_res_features: bool,
    #[config(default = true)]
    pub iou_prediction_use_sigmoid: bool,
    #[config(default = true)]
    pub pred_obj_scores: bool,
    #[config(default = true)]
    pub dynamic_multimask_via_stability: bool,
    #[config(default = 0.05)]
    pub dynamic_multimask_stability_delta: f64,
    #[config(default = 0.98)]
    pub dynamic_multimask_stability_thresh: f64,
}

impl Sam2Config {
    /// Every value SAM divides by, indexes with or iterates over (the trunk's through
    /// [`HieraConfig::check`]), checked before anything is built.
    pub fn check(&self) -> Result<(), String> {
        self.hiera.check()?;
        let e = |m: String| Err(format!("SAM: {m}"));
        let levels = self.hiera.stages.len();
        if self.d_model == 0 || self.image_size == 0 || self.backbone_stride == 0 {
            return e(format!(
                "d_model {}, image_size {} and backbone_stride {} must be at least 1",
                self.d_model, self.image_size, self.backbone_stride
            ));
        }
        if self.image_size > 16384 {
            return e(format!("image_size {} is above 16384", self.image_size));
        }
        if self.image_size % self.backbone_stride != 0 {
            return e(format!("image_size {} is not a multiple of backbone_stride {}", self.image_size, self.backbone_stride));
        }
        let kept = levels.checked_sub(self.scalp).filter(|&k| k >= 1);
        let Some(kept) = kept else {
            return e(format!("scalp {} drops all {levels} feature levels", self.scalp));
        };
        if self.use_high_res_features && kept < 3 {
            return e(format!("use_high_res_features needs 3 feature levels after scalp {}, the trunk has {levels}", self.scalp));
        }
        if let Some(l) = self.fpn_top_down_levels.iter().find(|&&l| l >= levels) {
            return e(format!("fpn_top_down_levels holds level {l}, but the trunk has {levels} levels"));
        }
        // The image embedding is the last kept level: its stride must be backbone_stride.
        let [qh, qw] = self.hiera.q_stride;
        let pools = (kept - 1).min(self.hiera.q_pool) as u32;
        let (sh, sw) = (self.hiera.patch_stride * qh.pow(pools), self.hiera.patch_stride * qw.pow(pools));
        if sh != self.backbone_stride || sw != self.backbone_stride {
            return e(format!(
                "the image embedding comes out at stride {sh}×{sw} (patch_stride · q_stride^pools), not backbone_stride {}",
                self.backbone_stride
            ));
        }
        if self.mask_in_chans < 4 || self.mask_in_chans % 4 != 0 {
            return e(format!(
                "mask_in_chans {} must be a multiple of 4 (its first LayerNorm runs over mask_in_chans / 4 channels)",
                self.mask_in_chans
            ));
        }
        if self.transformer_num_heads == 0 || self.attention_downsample_rate == 0 {
            return e("transformer_num_heads and attention_downsample_rate must be at least 1".into());
        }
        for width in [self.d_model, self.d_model / self.attention_downsample_rate] {
            if width == 0 || width % self.transformer_num_heads != 0 {
                return e(format!("attention width {width} is not a non-zero multiple of transformer_num_heads {}", self.transformer_num_heads));
            }
        }
        if self.d_model % 8 != 0 {
            return e(format!("d_model {} must be a multiple of 8 (output upscaling to d_model / 8 channels)", self.d_model));
        }
        if self.transformer_mlp_dim == 0 || self.iou_head_depth == 0 || self.iou_head_hidden_dim == 0 {
            return e("transformer_mlp_dim, iou_head_depth and iou_head_hidden_dim must be at least 1".into());
        }
        for (name, v) in [("dynamic_multimask_stability_delta", self.dynamic_multimask_stability_delta), ("dynamic_multimask_stability_thresh", self.dynamic_multimask_stability_thresh)] {
            if !v.is_finite() {
                return e(format!("{name} must be finite, not {v}"));
            }
        }
        Ok(())
    }

    /// `sam2.1_hiera_tiny`.
    pub fn tiny() -> Self {
        Self::new(HieraConfig::tiny())
    }

    /// `sam2.1_hiera_small`.
    pub fn small() -> Self {
        Self::new(HieraConfig::small())
    }

    /// `sam2.1_hiera_base_plus`.
    pub fn base_plus() -> Self {
        Self::new(HieraConfig::base_plus())
    }

    /// `sam2.1_hiera_large`.
    pub fn large() -> Self {
        Self::new(HieraConfig::large())
    }

    /// The tiny random SAM 2.1 of the reference fixture set `dev`
    /// (`shared/fixtures/reference`): S = 128, Hiera widths 8/16/32/64 with stages [1, 2, 3, 1],
    /// windows [8, 4, 6, 3], global block 4, 4×4 background PE; d_model 32 → image embedding
    /// 128 / 16 = 8×8, mask input 32×32. Decoder sizes as in SAM 2.1.
    pub fn reference_dev() -> Self {
        let hiera = HieraConfig::new()
            .with_embed_dim(8)
            .with_num_heads(1)
            .with_stages(vec![1, 2, 3, 1])
            .with_window_spec(vec![8, 4, 6, 3])
            .with_global_att_blocks(vec![4])
            .with_window_pos_embed_bkg_spatial_size([4, 4]);
        Self::new(hiera).with_image_size(128).with_d_model(32)
    }

    /// Side of the image embedding grid (S / backbone stride).
    pub fn image_embedding_size(&self) -> usize {
        self.image_size / self.backbone_stride
    }

    fn prompt_encoder_config(&self) -> PromptEncoderConfig {
        let e = self.image_embedding_size();
        PromptEncoderConfig::new(self.d_model, [e, e], [self.image_size, self.image_size])
            .with_mask_in_chans(self.mask_in_chans)
    }

    fn mask_decoder_config(&self) -> MaskDecoderConfig {
        let transformer = TwoWayTransformerConfig::new(self.d_model)
            .with_depth(self.transformer_depth)
            .with_num_heads(self.transformer_num_heads)
            .with_mlp_dim(self.transformer_mlp_dim)
            .with_attention_downsample_rate(self.attention_downsample_rate);
        MaskDecoderConfig::new(self.d_model, transformer)
            .with_num_multimask_outputs(self.num_multimask_outputs)
            .with_iou_head_depth(self.iou_head_depth)
            .with_iou_head_hidden_dim(self.iou_head_hidden_dim)
            .with_use_high_res_features(self.use_high_res_features)
            .with_iou_prediction_use_sigmoid(self.iou_prediction_use_sigmoid)
            .with_pred_obj_scores(self.pred_obj_scores)
            .with_dynamic_multimask_via_stability(self.dynamic_multimask_via_stability)
            .with_dynamic_multimask_stability_delta(self.dynamic_multimask_stability_delta)
            .with_dynamic_multimask_stability_thresh(self.dynamic_multimask_stability_thresh)
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> Sam2<B> {
        let neck = FpnNeckConfig::new(self.d_model, self.hiera.channel_list())
            .with_fpn_top_down_levels(self.fpn_top_down_levels.clone())
            .with_fpn_interp(self.fpn_interp);
        Sam2 {
            image_encoder: ImageEncoder {
                trunk: self.hiera.init(device),
                neck: neck.init(device),
                scalp: self.scalp,
            },
            sam_prompt_encoder: self.prompt_encoder_config().init(device),
            sam_mask_decoder: self.mask_decoder_config().init(device),
            no_mem_embed: Param::from_tensor(Tensor::zeros([1, 1, self.d_model], device)),
        }
    }
}

#[derive(Module, Debug)]
pub struct Sam2<B: Backend> {
    pub image_encoder: ImageEncoder<B>,
    pub sam_prompt_encoder: PromptEncoder<B>,
    pub sam_mask_decoder: MaskDecoder<B>,
    /// Added to the image embedding when there is no memory (single images: always).
    pub no_mem_embed: Param<Tensor<B, 3>>,
}

/// What the mask decoder needs from an image, plus intermediates for inspection.
#[derive(Clone, Debug)]
pub struct Sam2ImageFeatures<B: Backend> {
    /// `[b, d, S/16, S/16]`: the stride-16 FPN level + `no_mem_embed`.
    pub image_embed: Tensor<B, 4>,
    /// `conv_s0` / `conv_s1` of the stride-4 / stride-8 FPN levels (when the decoder uses them).
    pub high_res: Option<HighResFeatures<B>>,
    /// Trunk and FPN outputs (see [`ImageEncoderOutput`]).
    pub backbone: ImageEncoderOutput<B>,
    /// `[1, d, S/16, S/16]`: the positional encoding of the embedding grid ([`Sam2::image_pe`]),
    /// computed once with the image so that every prompt decoded on it reuses it.
    pub image_pe: Tensor<B, 4>,
}

impl<B: Backend> Sam2<B> {
    /// The image encoder's `Linear` layers (Hiera) quantised for the CPU's int8 products
    /// (`--precision int8`); the prompt encoder and the mask decoder stay f32.
    pub fn quantize_encoder_int8(self) -> Self {
        use crate::nn::lora::LoraModule;
        Self { image_encoder: self.image_encoder.quantize_int8(), ..self }
    }

    /// Image encoder + high-resolution projections + `no_mem_embed` (`forward_image` and
    /// `_prepare_backbone_features` of `SAM2Base`).
    ///
    /// # Shapes
    /// - pixels: `[b, 3, S, S]`, ImageNet-normalised
    pub fn encode_image(&self, pixels: Tensor<B, 4>) -> Sam2ImageFeatures<B> {
        let backbone = self.image_encoder.forward(pixels);
        let decoder = &self.sam_mask_decoder;
        let high_res = match (&decoder.conv_s0, &decoder.conv_s1) {
            (Some(s0), Some(s1)) => Some(HighResFeatures {
                feat_s0: crate::nn::conv::conv2d(s0, backbone.fpn[0].clone()),
                feat_s1: crate::nn::conv::conv2d(s1, backbone.fpn[1].clone()),
            }),
            _ => None,
        };
        let last = backbone.fpn.last().expect("at least one FPN level").clone();
        let d = last.dims()[1];
        let image_embed = last + self.no_mem_embed.val().reshape([1, d, 1, 1]);
        Sam2ImageFeatures { image_embed, high_res, backbone, image_pe: self.image_pe() }
    }

    /// Positional encoding of the image embedding grid: `[1, d, S/16, S/16]`.
    pub fn image_pe(&self) -> Tensor<B, 4> {
        self.sam_prompt_encoder.dense_pe()
    }

    /// Decode masks from prompt embeddings given directly (RSRefSeg's prompter output, or the
    /// output of [`PromptEncoder::forward`]).
    ///
    /// # Shapes
    /// - sparse: `[b, n, d]`; dense: `[b, d, S/16, S/16]`
    pub fn decode(
        &self,
        features: &Sam2ImageFeatures<B>,
        sparse: Tensor<B, 3>,
        dense: Tensor<B, 4>,
        multimask_output: bool,
        training: bool,
    ) -> MaskDecoderOutput<B> {
        let input = MaskDecoderInput {
            image_embeddings: features.image_embed.clone(),
            image_pe: features.image_pe.clone(),
            sparse_prompt_embeddings: sparse,
            dense_prompt_embeddings: dense,
            high_res_features: features.high_res.clone(),
            repeat_image: false,
        };
        self.sam_mask_decoder.forward(input, multimask_output, training)
    }
}

/// The key table of a SAM 2 checkpoint, recognised by its keys: the original facebookresearch
/// layout (`image_encoder.trunk…`, optionally under `model.`) or HF `Sam2Model` /
/// `Sam2VideoModel` (`vision_encoder.backbone…`).
pub fn detect_sam2_format(tensors: &TensorMap) -> Option<&'static KeyTable> {
    let has = |p: &str| tensors.keys().any(|k| k.starts_with(p));
    if has("vision_encoder.") || has("mask_decoder.") || has("no_memory_embedding") {
        Some(&sam2_hf::TABLE)
    } else if has("image_encoder.") || has("sam_mask_decoder.") || has("model.image_encoder.") {
        Some(&sam2_original::TABLE)
    } else {
        None
    }
}

/// Build a [`Sam2`] from tensors in either checkpoint layout. Strict unless `options` allow
/// partial loading: every parameter must be filled and every tensor used or ignored by the table.
pub fn load_sam2_tensors<B: Backend>(
    tensors: TensorMap,
    config: &Sam2Config,
    device: &B::Device,
    options: LoadOptions,
) -> Result<(Sam2<B>, LoadReport), LoadError> {
    let table = detect_sam2_format(&tensors).ok_or_else(|| {
        LoadError::Config("not a SAM 2 checkpoint: neither original nor HF SAM 2 keys found".into())
    })?;
    let (canonical, _ignored) = table.apply(tensors)?;
    load_module_owned(config.init(device), canonical, device, options, table.format)
}

/// [`load_sam2_tensors`] from a file (safetensors or a torch `.pt` archive).
pub fn load_sam2<B: Backend>(
    path: &std::path::Path,
    config: &Sam2Config,
    device: &B::Device,
    options: LoadOptions,
) -> Result<Sam2<B>, LoadError> {
    load_sam2_tensors(read_tensors(path)?, config, device, options).map(|(m, _)| m)
}

// LoRA-capable layers (RSRefSeg 2 adapts the encoders and SAM's decoder through LoRA).
crate::nn::lora::lora_tree! {
    Sam2<B> { image_encoder, sam_mask_decoder }
}
