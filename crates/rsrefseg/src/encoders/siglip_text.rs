//! SigLIP text tower (HF `SiglipTextTransformer`).
//!
//! token + position embedding → pre-LN encoder (non-causal) → `final_layer_norm` → t_word;
//! t_sent = `head(t_word[:, -1])`. The pooled vector is taken at the last *position*, whatever
//! token sits there: with right padding that is a `<pad>` for every sentence shorter than the
//! batch's longest (transformers issue #39269). RSRefSeg 2's released weights were trained that
//! way; for single-sentence inference there is no padding and the last position is the last token.

use super::siglip::{EncoderDims, SiglipEncoder, SiglipTextOutput};
use super::siglip_config::SiglipTextConfig;
use burn::module::Module;
use crate::nn::LoraLinear;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, LinearConfig};
use burn::tensor::{backend::Backend, Int, Tensor};

#[derive(Module, Debug)]
pub struct SiglipTextEmbeddings<B: Backend> {
    pub token_embedding: Embedding<B>,
    pub position_embedding: Embedding<B>,
}

#[derive(Module, Debug)]
pub struct SiglipTextTower<B: Backend> {
    pub embeddings: SiglipTextEmbeddings<B>,
    pub encoder: SiglipEncoder<B>,
    pub final_layer_norm: LayerNorm<B>,
    /// Pooled-output projection (a LoRA target in RSRefSeg 2).
    pub head: LoraLinear<B>,
    pub max_positions: usize,
}

impl<B: Backend> SiglipTextTower<B> {
    pub fn new(c: &SiglipTextConfig, device: &B::Device) -> Result<Self, String> {
        let dims = EncoderDims {
            hidden: c.hidden_size,
            intermediate: c.intermediate_size,
            layers: c.num_hidden_layers,
            heads: c.num_attention_heads,
            eps: c.layer_norm_eps,
            activation: c.activation()?,
        };
        Ok(Self {
            embeddings: SiglipTextEmbeddings {
                token_embedding: EmbeddingConfig::new(c.vocab_size, c.hidden_size).init(device),
                position_embedding: EmbeddingConfig::new(c.max_position_embeddings, c.hidden_size).init(device),
            },
            encoder: SiglipEncoder::new(dims, device),
            final_layer_norm: LayerNormConfig::new(c.hidden_size).with_epsilon(c.layer_norm_eps).init(device),
            head: LinearConfig::new(c.hidden_size, c.head_dim()).init(device).into(),
            max_positions: c.max_position_embeddings,
        })
    }

    /// # Shapes
    /// - input_ids: `[b, l]` with `l ≤ max_position_embeddings`
    /// - attention_mask: optional `[b, l]`, 1 = token, 0 = padding (padded keys get an additive
    ///   `-inf`-like bias as in transformers; padded positions still produce outputs)
    /// - output: t_word `[b, l, d]`, t_sent `[b, d_head]`
    pub fn forward(&self, input_ids: Tensor<B, 2, Int>, attention_mask: Option<Tensor<B, 2, Int>>) -> SiglipTextOutput<B> {
        let [b, l] = input_ids.dims();
        assert!(
            l <= self.max_positions,
            "text has {l} tokens but the SigLIP text tower has only {} positions",
            self.max_positions
        );
        let device = input_ids.device();
        let tokens = self.embeddings.token_embedding.forward(input_ids);
        let positions = Tensor::<B, 1, Int>::arange(0..l as i64, &device).reshape([1, l]);
        let x = tokens + self.embeddings.position_embedding.forward(positions);
        let key_bias = attention_mask.map(|m| {
            // 0 where attended, float min where padded (transformers `_prepare_4d_attention_mask`).
            let m = m.float().reshape([b, 1, 1, l]);
            (m.neg() + 1.0) * f32::MIN
        });
        let x = self.encoder.forward(x, key_bias);
        let t_word = self.final_layer_norm.forward(x);
        let [_, _, d] = t_word.dims();
        let last = t_word.clone().slice([0..b, l - 1..l, 0..d]).reshape([b, d]);
        let t_sent = self.head.forward(last);
        SiglipTextOutput { t_word, t_sent }
    }
}

// LoRA-capable layers (RSRefSeg 2 adapts the encoders and SAM's decoder through LoRA).
crate::nn::lora::lora_tree! {
    SiglipTextTower<B> { encoder, head }
}
