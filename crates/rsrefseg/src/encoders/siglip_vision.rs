//! SigLIP vision tower (HF `SiglipVisionTransformer`).
//!
//! patch conv (k = s = patch) + learned absolute positions → pre-LN encoder → `post_layernorm`
//! = the dense map v `[b, grid², d1]` the prompter uses (tokens row-major, y outer). The MAP head
//! is kept so checkpoints load as they are and `pooler_output` can be inspected; RSRefSeg 2 never
//! uses it.

use super::siglip::{EncoderDims, SiglipEncoder, SiglipMlp};
use super::siglip_config::SiglipVisionConfig;
use crate::nn::attention::{recombine_heads, sdpa};
use crate::nn::interpolate::bicubic_host;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{backend::Backend, Tensor};

#[derive(Module, Debug)]
pub struct SiglipVisionEmbeddings<B: Backend> {
    pub patch_embedding: Conv2d<B>,
    pub position_embedding: Embedding<B>,
}

/// `torch.nn.MultiheadAttention` with packed `in_proj_weight` (3d, d) (keys of the MAP head).
#[derive(Module, Debug)]
pub struct PackedMultiheadAttention<B: Backend> {
    pub in_proj_weight: Param<Tensor<B, 2>>,
    pub in_proj_bias: Param<Tensor<B, 1>>,
    pub out_proj: Linear<B>,
    pub num_heads: usize,
}

/// Multihead attention pooling: a learned probe attends over the tokens.
#[derive(Module, Debug)]
pub struct SiglipMapHead<B: Backend> {
    pub probe: Param<Tensor<B, 3>>,
    pub attention: PackedMultiheadAttention<B>,
    pub layernorm: LayerNorm<B>,
    pub mlp: SiglipMlp<B>,
}

#[derive(Module, Debug)]
pub struct SiglipVisionTower<B: Backend> {
    pub embeddings: SiglipVisionEmbeddings<B>,
    pub encoder: SiglipEncoder<B>,
    pub post_layernorm: LayerNorm<B>,
    pub head: Option<SiglipMapHead<B>>,
    pub patch_size: usize,
    /// Native patch grid side (√ of the position rows).
    pub grid: usize,
    /// Position table resized for a non-native input grid (see [`Self::prepare_grid`]).
    #[module(skip)]
    resized_positions: Option<(usize, usize, Tensor<B, 2>)>,
}

impl<B: Backend> SiglipVisionTower<B> {
    pub fn new(c: &SiglipVisionConfig, device: &B::Device) -> Result<Self, String> {
        if c.image_size % c.patch_size != 0 {
            return Err(format!("image_size {} is not a multiple of patch_size {}", c.image_size, c.patch_size));
        }
        let activation = c.activation()?;
        let dims = EncoderDims {
            hidden: c.hidden_size,
            intermediate: c.intermediate_size,
            layers: c.num_hidden_layers,
            heads: c.num_attention_heads,
            eps: c.layer_norm_eps,
            activation,
        };
        let d = c.hidden_size;
        let grid = c.grid();
        let ln = || LayerNormConfig::new(d).with_epsilon(c.layer_norm_eps).init(device);
        let head = c.vision_use_head.then(|| SiglipMapHead {
            probe: Param::from_tensor(Tensor::random([1, 1, d], burn::tensor::Distribution::Normal(0.0, 1.0), device)),
            attention: PackedMultiheadAttention {
                in_proj_weight: Param::from_tensor(Tensor::random(
                    [3 * d, d],
                    burn::tensor::Distribution::Normal(0.0, (1.0 / d as f64).sqrt()),
                    device,
                )),
                in_proj_bias: Param::from_tensor(Tensor::zeros([3 * d], device)),
                out_proj: LinearConfig::new(d, d).init(device),
                num_heads: c.num_attention_heads,
            },
            layernorm: ln(),
            mlp: SiglipMlp::new(d, c.intermediate_size, activation, device),
        });
        Ok(Self {
            embeddings: SiglipVisionEmbeddings {
                patch_embedding: Conv2dConfig::new([c.num_channels, d], [c.patch_size, c.patch_size])
                    .with_stride([c.patch_size, c.patch_size])
                    .init(device),
                position_embedding: EmbeddingConfig::new(grid * grid, d).init(device),
            },
            encoder: SiglipEncoder::new(dims, device),
            post_layernorm: ln(),
            head,
            patch_size: c.patch_size,
            grid,
            resized_positions: None,
        })
    }

    /// Resize the position table for inputs whose patch grid is `gh × gw` instead of the native
    /// square grid, as transformers' `interpolate_pos_encoding=True` does (bicubic,
    /// `align_corners=False`, to the target size). Runs once on the host, so the forward pass
    /// stays free of bicubic resampling and host reads (WebGPU). Native only: it reads the table.
    pub fn prepare_grid(mut self, gh: usize, gw: usize) -> Self {
        if gh == self.grid && gw == self.grid {
            self.resized_positions = None;
            return self;
        }
        let table = self.embeddings.position_embedding.weight.val();
        let [n, d] = table.dims();
        let g = self.grid;
        debug_assert_eq!(n, g * g);
        let device = table.device();
        // (g·g, d) rows → (d, g, g) channels-first, resize, back to (gh·gw, d).
        let t = crate::host::HostTensor::from_tensor(table.transpose());
        let resized = bicubic_host(&t.data, [d, g, g], [gh, gw], false);
        let out: Tensor<B, 2> = Tensor::<B, 1>::from_floats(resized.as_slice(), &device)
            .reshape([d, gh * gw])
            .transpose();
        self.resized_positions = Some((gh, gw, out));
        self
    }

    /// # Shapes
    /// - pixels: `[b, 3, h, w]`, normalised with mean = std = 0.5; `h, w` multiples of the patch
    ///   size; the native size, or a size prepared with [`Self::prepare_grid`]
    /// - output: last_hidden_state `[b, (h/p)·(w/p), d]` (post-LayerNorm), row-major tokens
    pub fn forward(&self, pixels: Tensor<B, 4>) -> Tensor<B, 3> {
        let x = crate::nn::conv::conv2d(&self.embeddings.patch_embedding, pixels);
        let [b, d, gh, gw] = x.dims();
        // (B,D,gh,gw) -> (B,gh·gw,D)
        let x = x.reshape([b, d, gh * gw]).swap_dims(1, 2);
        let positions = if gh == self.grid && gw == self.grid {
            self.embeddings.position_embedding.weight.val()
        } else {
            match &self.resized_positions {
                Some((h, w, t)) if *h == gh && *w == gw => t.clone(),
                _ => panic!(
                    "SigLIP vision input gives a {gh}×{gw} patch grid but the position table is {g}×{g}; call prepare_grid({gh}, {gw}) first",
                    g = self.grid
                ),
            }
        };
        let x = x + positions.unsqueeze::<3>();
        let x = self.encoder.forward(x, None);
        self.post_layernorm.forward(x)
    }

    /// MAP-head pooled output `[b, d]` from `last_hidden_state` (HF `pooler_output`; unused by
    /// RSRefSeg 2). `None` when the checkpoint has no head.
    pub fn pool(&self, last_hidden_state: Tensor<B, 3>) -> Option<Tensor<B, 2>> {
        let head = self.head.as_ref()?;
        let [b, n, d] = last_hidden_state.dims();
        let att = &head.attention;
        let h = att.num_heads;
        let w = att.in_proj_weight.val();
        let bias = att.in_proj_bias.val();
        let proj = |x: Tensor<B, 3>, i: usize| {
            let wi = w.clone().slice([i * d..(i + 1) * d, 0..d]);
            let bi = bias.clone().slice([i * d..(i + 1) * d]);
            let [bb, nn, _] = x.dims();
            let y = x.matmul(wi.transpose().unsqueeze::<3>()) + bi.reshape([1, 1, d]);
            y.reshape([bb, nn, h, d / h]).swap_dims(1, 2)
        };
        let probe = head.probe.val().expand([b, 1, d]);
        let q = proj(probe, 0);
        let k = proj(last_hidden_state.clone(), 1);
        let v = proj(last_hidden_state, 2);
        let _ = n;
        let x = att.out_proj.forward(recombine_heads(sdpa(q, k, v, None)));
        let shortcut = x.clone();
        let x = shortcut + head.mlp.forward(head.layernorm.forward(x));
        Some(x.reshape([b, d]))
    }
}

// LoRA-capable layers (RSRefSeg 2 adapts the encoders and SAM's decoder through LoRA).
crate::nn::lora::lora_tree! {
    // The MAP head's `attention.out_proj` stays a plain Linear (see `SIGLIP_TARGETS`).
    SiglipVisionTower<B> { encoder, head }
    SiglipMapHead<B> { mlp }
}
