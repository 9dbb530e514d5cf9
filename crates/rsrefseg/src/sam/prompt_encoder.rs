//! SAM 2.1 prompt encoder (`sam2/modeling/sam/prompt_encoder.py`).
//!
//! Sparse prompts (points, box corners) become one token each: their random-Fourier encoding
//! plus a learned embedding of their label. A mask prompt becomes a dense map through
//! `mask_downscaling` (two stride-2 convolutions, ×4 smaller, then a 1×1 to the model width);
//! without a mask, `no_mask_embed` is broadcast. RSRefSeg 2 uses only `mask_downscaling` and the
//! dense PE: its sparse tokens come from the prompter and go straight to the mask decoder.

use super::position_encoding::{PositionEmbeddingRandom, PositionEmbeddingRandomConfig};
use crate::nn::conv::conv2d;
use crate::nn::{Activation, LayerNorm2d, LayerNorm2dConfig};
use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Embedding, EmbeddingConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

#[derive(Config, Debug)]
pub struct PromptEncoderConfig {
    /// Width of the prompt tokens and of the dense embedding (the decoder width).
    pub embed_dim: usize,
    /// `(h, w)` of the image embedding (image size / backbone stride).
    pub image_embedding_size: [usize; 2],
    /// `(h, w)` of the padded model input, which point coordinates refer to.
    pub input_image_size: [usize; 2],
    /// Hidden width of `mask_downscaling` (its first layer has a quarter of it).
    #[config(default = 16)]
    pub mask_in_chans: usize,
    /// Learned point-label embeddings: negative, positive, box top-left, box bottom-right.
    #[config(default = 4)]
    pub num_point_embeddings: usize,
    /// Activation inside `mask_downscaling` (exact GELU upstream).
    #[config(default = "Activation::Gelu")]
    pub activation: Activation,
    /// Epsilon of the `LayerNorm2d`s of `mask_downscaling`.
    #[config(default = 1e-6)]
    pub layer_norm_eps: f64,
}

impl PromptEncoderConfig {
    /// Mask prompts are expected at 4× the image-embedding size (`mask_input_size`).
    pub fn mask_input_size(&self) -> [usize; 2] {
        let [h, w] = self.image_embedding_size;
        [4 * h, 4 * w]
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> PromptEncoder<B> {
        let d = self.embed_dim;
        let c = self.mask_in_chans;
        let token = || EmbeddingConfig::new(1, d).init(device);
        let ln = |ch| LayerNorm2dConfig::new(ch).with_eps(self.layer_norm_eps).init(device);
        PromptEncoder {
            pe_layer: PositionEmbeddingRandomConfig::new(d / 2).init(device),
            point_embeddings: (0..self.num_point_embeddings).map(|_| token()).collect(),
            not_a_point_embed: token(),
            mask_downscaling: MaskDownscaling {
                conv1: Conv2dConfig::new([1, c / 4], [2, 2]).with_stride([2, 2]).init(device),
                layer_norm1: ln(c / 4),
                conv2: Conv2dConfig::new([c / 4, c], [2, 2]).with_stride([2, 2]).init(device),
                layer_norm2: ln(c),
                conv3: Conv2dConfig::new([c, d], [1, 1]).init(device),
                activation: self.activation,
            },
            no_mask_embed: token(),
            image_embedding_size: self.image_embedding_size,
            input_image_size: self.input_image_size,
        }
    }
}

/// `mask_downscaling`: conv(k2 s2) → LN2d → act → conv(k2 s2) → LN2d → act → conv(1×1).
/// Upstream an `nn.Sequential` (slots 0, 1, 3, 4, 6); the names are those of HF's `mask_embed`.
#[derive(Module, Debug)]
pub struct MaskDownscaling<B: Backend> {
    pub conv1: Conv2d<B>,
    pub layer_norm1: LayerNorm2d<B>,
    pub conv2: Conv2d<B>,
    pub layer_norm2: LayerNorm2d<B>,
    pub conv3: Conv2d<B>,
    #[module(skip)]
    pub activation: Activation,
}

impl<B: Backend> MaskDownscaling<B> {
    /// # Shapes
    /// - masks: `[b, 1, 4h, 4w]` → `[b, embed_dim, h, w]`
    pub fn forward(&self, masks: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = self.activation.forward(self.layer_norm1.forward(conv2d(&self.conv1, masks)));
        let x = self.activation.forward(self.layer_norm2.forward(conv2d(&self.conv2, x)));
        conv2d(&self.conv3, x)
    }
}

/// Point prompts: pixel coordinates `(x, y)` `[b, n, 2]` and labels `[b, n]`
/// (−1 padding, 0 negative, 1 positive, 2/3 box corners).
#[derive(Clone, Debug)]
pub struct PointPrompts<B: Backend> {
    pub coords: Tensor<B, 3>,
    pub labels: Tensor<B, 2, Int>,
}

/// Output of [`PromptEncoder::forward`].
#[derive(Clone, Debug)]
pub struct PromptEmbeddings<B: Backend> {
    /// `[b, n_tokens, embed_dim]` (points, then box corners).
    pub sparse: Tensor<B, 3>,
    /// `[b, embed_dim, h, w]`.
    pub dense: Tensor<B, 4>,
}

#[derive(Module, Debug)]
pub struct PromptEncoder<B: Backend> {
    pub pe_layer: PositionEmbeddingRandom<B>,
    pub point_embeddings: Vec<Embedding<B>>,
    pub not_a_point_embed: Embedding<B>,
    pub mask_downscaling: MaskDownscaling<B>,
    pub no_mask_embed: Embedding<B>,
    #[module(skip)]
    pub image_embedding_size: [usize; 2],
    #[module(skip)]
    pub input_image_size: [usize; 2],
}

impl<B: Backend> PromptEncoder<B> {
    /// Positional encoding of the image embedding grid (`get_dense_pe`).
    ///
    /// # Shapes
    /// - output: `[1, embed_dim, h, w]`
    pub fn dense_pe(&self) -> Tensor<B, 4> {
        self.pe_layer.dense(self.image_embedding_size).unsqueeze_dim(0)
    }

    /// Embed any combination of prompts; `batch` is used only when none is given.
    ///
    /// # Shapes
    /// - points: coords `[b, n, 2]`, labels `[b, n]`; boxes: `[b, 4]` as `(x0, y0, x1, y1)`;
    ///   masks: `[b, 1, 4h, 4w]`
    /// - sparse: `[b, n (+1 padding point when there is no box) + 2·(box), embed_dim]`;
    ///   dense: `[b, embed_dim, h, w]`
    pub fn forward(
        &self,
        points: Option<PointPrompts<B>>,
        boxes: Option<Tensor<B, 2>>,
        masks: Option<Tensor<B, 4>>,
        batch: usize,
    ) -> PromptEmbeddings<B> {
        let b = points
            .as_ref()
            .map(|p| p.coords.dims()[0])
            .or_else(|| boxes.as_ref().map(|x| x.dims()[0]))
            .or_else(|| masks.as_ref().map(|m| m.dims()[0]))
            .unwrap_or(batch);
        let d = self.no_mask_embed.weight.dims()[1];
        let device = self.no_mask_embed.weight.device();

        let mut sparse = vec![Tensor::<B, 3>::zeros([b, 0, d], &device)];
        if let Some(p) = points {
            sparse.push(self.embed_points(p, boxes.is_none()));
        }
        if let Some(bx) = boxes {
            sparse.push(self.embed_boxes(bx));
        }
        let sparse = Tensor::cat(sparse, 1);

        let dense = match masks {
            Some(m) => self.mask_downscaling.forward(m),
            None => {
                let [h, w] = self.image_embedding_size;
                self.no_mask_embed.weight.val().reshape([1, d, 1, 1]).expand([b, d, h, w])
            }
        };
        PromptEmbeddings { sparse, dense }
    }

    /// Points: PE of the pixel centre plus the embedding of the label; padding points (label −1)
    /// get `not_a_point_embed` only. With `pad`, one padding point is appended (SAM does this
    /// when no box follows).
    fn embed_points(&self, points: PointPrompts<B>, pad: bool) -> Tensor<B, 3> {
        let PointPrompts { coords, labels } = points;
        let [b, _, _] = coords.dims();
        let device = coords.device();
        // Shift to the centre of the pixel.
        let coords = coords + 0.5;
        let (coords, labels) = if pad {
            (
                Tensor::cat(vec![coords, Tensor::zeros([b, 1, 2], &device)], 1),
                Tensor::cat(vec![labels, Tensor::<B, 2, Int>::ones([b, 1], &device).neg()], 1),
            )
        } else {
            (coords, labels)
        };
        let [_, n] = labels.dims();
        let pe = self.pe_layer.encode_pixels(coords, self.input_image_size);
        let d = pe.dims()[2];
        let is = |k: i64| labels.clone().equal_elem(k).float().reshape([b, n, 1]);
        let row = |e: &Embedding<B>| e.weight.val().reshape([1, 1, d]);

        // Padding points: the PE is zeroed and replaced by `not_a_point_embed`.
        let pad_mask = is(-1);
        let mut out = pe * (pad_mask.clone().neg() + 1.0) + pad_mask * row(&self.not_a_point_embed);
        for (k, e) in self.point_embeddings.iter().enumerate() {
            out = out + is(k as i64) * row(e);
        }
        out
    }

    /// Boxes: the two corners, encoded like points, plus the corner embeddings 2 and 3.
    fn embed_boxes(&self, boxes: Tensor<B, 2>) -> Tensor<B, 3> {
        let [b, _] = boxes.dims();
        // Shift to the centre of the pixel; (B, 4) -> (B, 2 corners, 2)
        let corners = (boxes + 0.5).reshape([b, 2, 2]);
        let pe = self.pe_layer.encode_pixels(corners, self.input_image_size);
        let d = pe.dims()[2];
        let corner_embed = Tensor::cat(
            vec![self.point_embeddings[2].weight.val(), self.point_embeddings[3].weight.val()],
            0,
        );
        pe + corner_embed.reshape([1, 2, d])
    }
}
