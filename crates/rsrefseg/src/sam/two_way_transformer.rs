//! Two-way transformer of the SAM mask decoder (`sam2/modeling/sam/transformer.py`).
//!
//! Prompt tokens and image tokens update each other: tokens self-attend, attend to the image,
//! go through an MLP, and the image attends back to the tokens. A final token-to-image attention
//! closes the stack. The initial tokens serve as the tokens' positional encoding throughout.

use crate::nn::{contiguous, Activation, Attention, AttentionConfig, Mlp, MlpConfig};
use burn::config::Config;
use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

#[derive(Config, Debug)]
pub struct TwoWayTransformerConfig {
    /// Number of [`TwoWayAttentionBlock`]s.
    #[config(default = 2)]
    pub depth: usize,
    /// Token and image width.
    pub embedding_dim: usize,
    #[config(default = 8)]
    pub num_heads: usize,
    /// Hidden width of the token MLP.
    #[config(default = 2048)]
    pub mlp_dim: usize,
    /// Cross attentions project to `embedding_dim / attention_downsample_rate`.
    #[config(default = 2)]
    pub attention_downsample_rate: usize,
    /// Activation of the token MLP.
    #[config(default = "Activation::Relu")]
    pub activation: Activation,
    /// Epsilon of the `nn.LayerNorm`s (PyTorch default).
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
}

impl TwoWayTransformerConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> TwoWayTransformer<B> {
        let d = self.embedding_dim;
        let cross = AttentionConfig::self_attn(d, d / self.attention_downsample_rate, self.num_heads);
        let ln = || LayerNormConfig::new(d).with_epsilon(self.layer_norm_eps).init(device);
        let layers = (0..self.depth)
            .map(|i| TwoWayAttentionBlock {
                self_attn: AttentionConfig::self_attn(d, d, self.num_heads).init(device),
                norm1: ln(),
                cross_attn_token_to_image: cross.init(device),
                norm2: ln(),
                mlp: MlpConfig::new(d, self.mlp_dim, d, 2).with_activation(self.activation).init(device),
                norm3: ln(),
                norm4: ln(),
                cross_attn_image_to_token: cross.init(device),
                // The first block has no residual around its self-attention and adds no PE.
                skip_first_layer_pe: i == 0,
            })
            .collect();
        TwoWayTransformer { layers, final_attn_token_to_image: cross.init(device), norm_final_attn: ln() }
    }
}

#[derive(Module, Debug)]
pub struct TwoWayTransformer<B: Backend> {
    pub layers: Vec<TwoWayAttentionBlock<B>>,
    pub final_attn_token_to_image: Attention<B>,
    pub norm_final_attn: LayerNorm<B>,
}

impl<B: Backend> TwoWayTransformer<B> {
    /// # Shapes
    /// - image_embedding, image_pe: `[b, c, h, w]`
    /// - point_embedding (tokens): `[b, n, c]`
    /// - output: (tokens `[b, n, c]`, image tokens `[b, h·w, c]`)
    pub fn forward(
        &self,
        image_embedding: Tensor<B, 4>,
        image_pe: Tensor<B, 4>,
        point_embedding: Tensor<B, 3>,
    ) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let [b, c, h, w] = image_embedding.dims();
        // (B, C, H, W) -> (B, H·W, C), laid out contiguously once: every layer reads both.
        let keys = contiguous(image_embedding.reshape([b, c, h * w]).swap_dims(1, 2));
        let key_pe = contiguous(image_pe.reshape([b, c, h * w]).swap_dims(1, 2));

        let mut queries = point_embedding.clone();
        let mut keys = keys;
        for layer in &self.layers {
            (queries, keys) = layer.forward(queries, keys, point_embedding.clone(), key_pe.clone());
        }

        // Final attention from the tokens to the image
        let q = queries.clone() + point_embedding;
        let k = keys.clone() + key_pe;
        let attn_out = self.final_attn_token_to_image.forward(q, k, keys.clone(), None);
        let queries = self.norm_final_attn.forward(queries + attn_out);
        (queries, keys)
    }
}

#[derive(Module, Debug)]
pub struct TwoWayAttentionBlock<B: Backend> {
    pub self_attn: Attention<B>,
    pub norm1: LayerNorm<B>,
    pub cross_attn_token_to_image: Attention<B>,
    pub norm2: LayerNorm<B>,
    pub mlp: Mlp<B>,
    pub norm3: LayerNorm<B>,
    pub norm4: LayerNorm<B>,
    pub cross_attn_image_to_token: Attention<B>,
    pub skip_first_layer_pe: bool,
}

impl<B: Backend> TwoWayAttentionBlock<B> {
    /// # Shapes
    /// - queries, query_pe: `[b, n, c]`; keys, key_pe: `[b, h·w, c]` → (queries, keys)
    pub fn forward(
        &self,
        queries: Tensor<B, 3>,
        keys: Tensor<B, 3>,
        query_pe: Tensor<B, 3>,
        key_pe: Tensor<B, 3>,
    ) -> (Tensor<B, 3>, Tensor<B, 3>) {
        // Self attention block
        let queries = if self.skip_first_layer_pe {
            self.self_attn.forward(queries.clone(), queries.clone(), queries, None)
        } else {
            let q = queries.clone() + query_pe.clone();
            let attn_out = self.self_attn.forward(q.clone(), q, queries.clone(), None);
            queries + attn_out
        };
        let queries = self.norm1.forward(queries);

        // Cross attention block, tokens attending to image embedding
        let q = queries.clone() + query_pe.clone();
        let k = keys.clone() + key_pe.clone();
        let attn_out = self.cross_attn_token_to_image.forward(q, k, keys.clone(), None);
        let queries = self.norm2.forward(queries + attn_out);

        // MLP block
        let mlp_out = self.mlp.forward(queries.clone());
        let queries = self.norm3.forward(queries + mlp_out);

        // Cross attention block, image embedding attending to tokens
        let q = queries.clone() + query_pe;
        let k = keys.clone() + key_pe;
        let attn_out = self.cross_attn_image_to_token.forward(k, q, queries.clone(), None);
        let keys = self.norm4.forward(keys + attn_out);

        (queries, keys)
    }
}

// LoRA-capable layers (RSRefSeg 2 adapts the encoders and SAM's decoder through LoRA).
crate::nn::lora::lora_tree! {
    TwoWayTransformer<B> { layers, final_attn_token_to_image }
    TwoWayAttentionBlock<B> { self_attn, cross_attn_token_to_image, cross_attn_image_to_token }
}
