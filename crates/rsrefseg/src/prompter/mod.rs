//! Cascaded second-order referring prompter (the paper's contribution, reference §3).
//!
//! SigLIP features in, SAM prompts out:
//! 1. [`decomposition`]: the sentence is split into two subspaces of `n_t` text queries (t1, t2);
//! 2. [`first_order`]: image tokens attend to t1 (first-order text–visual interaction);
//! 3. [`second_order`]: the refined image tokens attend to t2, interleaved with the generation of
//!    `n_p` sparse prompts that read t2 and the image tokens;
//! 4. [`dense_prompt`]: the refined map is turned into a dense prompt by cosine similarity with
//!    t_sent at SAM's mask-input resolution.
//!
//! The authors' code is followed where it differs from the paper (post-norm blocks, prompts
//! interleaved with the second-order blocks, conv–BN–GELU–conv, SigLIP's own logit scale/bias).

pub mod decomposition;
pub mod dense_prompt;
pub mod first_order;
pub mod second_order;

use crate::nn::{Activation, Mlp, MlpConfig};
use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Distribution, Tensor};
use decomposition::SemanticDecompositionBlock;
use dense_prompt::DensePromptHead;
use first_order::FirstOrderBlock;
use second_order::SecondOrderBlock;
use serde::{Deserialize, Serialize};

/// How a set of queries starts (paper Tab. VIII varies this).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueryInit {
    Zero,
    /// A learned `(n, d)` table.
    Learnable,
    /// Adaptive average pooling of t_word over tokens into `n` bins (text queries only).
    TextPool,
}

/// Widths and ablation switches. Defaults are the released configs' values (with d1 = 1152,
/// d2 = 256); the paper's ablations change one field at a time.
#[derive(Config, Debug)]
pub struct PrompterConfig {
    /// SigLIP width d1 (text and image tokens).
    pub clip_dim: usize,
    /// SAM prompt width d2.
    pub prompt_dim: usize,
    /// SigLIP patch grid side (img_pe is `grid × grid`).
    pub grid: usize,
    /// n_t: text queries per subspace.
    #[config(default = 3)]
    pub num_text_queries: usize,
    /// n_p: sparse prompts.
    #[config(default = 9)]
    pub num_prompts: usize,
    #[config(default = 8)]
    pub num_heads: usize,
    /// Inner width of every attention (split into heads).
    #[config(default = 512)]
    pub internal_dim: usize,
    #[config(default = 512)]
    pub mlp_dim: usize,
    #[config(default = 2)]
    pub decomposition_depth: usize,
    /// First-order blocks; 0 gives the single-stage prompter of the ablation (image tokens meet
    /// only t2).
    #[config(default = 2)]
    pub first_order_depth: usize,
    #[config(default = 2)]
    pub second_order_depth: usize,
    #[config(default = "QueryInit::TextPool")]
    pub text_query_init: QueryInit,
    #[config(default = true)]
    pub text_query_pe: bool,
    #[config(default = "QueryInit::Learnable")]
    pub prompt_init: QueryInit,
    #[config(default = true)]
    pub prompt_pe: bool,
    /// Learned positional embedding of the image tokens.
    #[config(default = true)]
    pub img_pe: bool,
    /// Produce the dense prompt (otherwise SAM gets its `no_mask_embed`).
    #[config(default = true)]
    pub dense_prompt: bool,
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
}

impl PrompterConfig {
    /// Every value the prompter divides by or sizes a layer with, checked before it is built.
    pub fn check(&self) -> Result<(), String> {
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return Err(format!("prompter: layer_norm_eps must be a finite number > 0, not {}", self.layer_norm_eps));
        }
        let sizes = [
            ("clip_dim", self.clip_dim),
            ("prompt_dim", self.prompt_dim),
            ("grid", self.grid),
            ("num_text_queries", self.num_text_queries),
            ("num_prompts", self.num_prompts),
            ("num_heads", self.num_heads),
            ("internal_dim", self.internal_dim),
            ("mlp_dim", self.mlp_dim),
        ];
        if let Some((name, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            return Err(format!("prompter: {name} must be at least 1"));
        }
        if let Some((name, v)) = sizes.iter().find(|(_, v)| *v > 65536) {
            return Err(format!("prompter: {name} {v} is beyond any released model"));
        }
        if self.internal_dim % self.num_heads != 0 {
            return Err(format!("prompter: internal_dim {} is not a multiple of num_heads {}", self.internal_dim, self.num_heads));
        }
        if self.decomposition_depth > 64 || self.first_order_depth > 64 || self.second_order_depth > 64 {
            return Err("prompter: depths above 64".into());
        }
        Ok(())
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> CascadedPrompter<B> {
        let d1 = self.clip_dim;
        let d2 = self.prompt_dim;
        let normal = |shape: [usize; 2]| Param::from_tensor(Tensor::random(shape, Distribution::Normal(0.0, 1.0), device));
        let pe = |on: bool, n: usize, d: usize| on.then(|| normal([n, d]));
        let learnable = |init: QueryInit, n: usize, d: usize| (init == QueryInit::Learnable).then(|| normal([n, d]));
        CascadedPrompter {
            text_query_embedding1: learnable(self.text_query_init, self.num_text_queries, d1),
            text_query_embedding2: learnable(self.text_query_init, self.num_text_queries, d1),
            text_query_pe_embedding1: pe(self.text_query_pe, self.num_text_queries, d1),
            text_query_pe_embedding2: pe(self.text_query_pe, self.num_text_queries, d1),
            img_pe: self.img_pe.then(|| {
                Param::from_tensor(Tensor::random([1, d1, self.grid, self.grid], Distribution::Normal(0.0, 1.0), device))
            }),
            prompt_embedding: learnable(self.prompt_init, self.num_prompts, d2),
            prompt_pe_embedding: pe(self.prompt_pe, self.num_prompts, d2),
            two_queries_text_attn_layers: (0..self.decomposition_depth)
                .map(|_| SemanticDecompositionBlock::new(self, device))
                .collect(),
            queries1_to_img_attn_layers: (0..self.first_order_depth).map(|_| FirstOrderBlock::new(self, device)).collect(),
            prompt_queries2_img_attn_layers: (0..self.second_order_depth)
                .map(|_| SecondOrderBlock::new(self, device))
                .collect(),
            sparse_prompt_mlp: MlpConfig::new(d2, self.mlp_dim, d2, 2).with_activation(Activation::Gelu).init(device),
            dense_prompt_conv: self.dense_prompt.then(|| DensePromptHead::new(d1, device)),
            num_text_queries: self.num_text_queries,
            num_prompts: self.num_prompts,
            text_query_init: self.text_query_init,
            prompt_init: self.prompt_init,
        }
    }

    /// Attention over `q_dim` queries and `kv_dim` keys with the prompter's inner width.
    pub(crate) fn attn<B: Backend>(&self, q_dim: usize, kv_dim: usize, device: &B::Device) -> crate::nn::Attention<B> {
        crate::nn::AttentionConfig::new(q_dim, kv_dim, self.internal_dim, self.num_heads).init(device)
    }

    pub(crate) fn mlp<B: Backend>(&self, dim: usize, device: &B::Device) -> Mlp<B> {
        MlpConfig::new(dim, self.mlp_dim, dim, 2).with_activation(Activation::Gelu).init(device)
    }

    pub(crate) fn norm<B: Backend>(&self, dim: usize, device: &B::Device) -> burn::nn::LayerNorm<B> {
        burn::nn::LayerNormConfig::new(dim).with_epsilon(self.layer_norm_eps).init(device)
    }
}

/// Everything the prompter produces, by name (the losses read t1, t2 and the raw map).
#[derive(Debug, Clone)]
pub struct PrompterOutput<B: Backend> {
    /// Decomposition outputs `[b, n_t, d1]` (orthogonality and contrastive losses).
    pub t1: Tensor<B, 3>,
    pub t2: Tensor<B, 3>,
    /// Refined image tokens v2' as a map `[b, d1, g, g]`.
    pub refined: Tensor<B, 4>,
    /// Sparse prompts `[b, n_p, d2]`, fed to SAM's decoder as sparse prompt embeddings.
    pub sparse: Tensor<B, 3>,
    /// Dense prompt logits `[b, 1, m, m]` at SAM's mask-input size (None when switched off).
    pub dense: Option<Tensor<B, 4>>,
    /// Image tokens after the first-order stage `[b, g·g, d1]` (for inspection).
    pub first_order_tokens: Tensor<B, 3>,
    /// Initial text queries `[b, n_t, d1]` (for inspection).
    pub query_init: Tensor<B, 3>,
}

#[derive(Module, Debug)]
pub struct CascadedPrompter<B: Backend> {
    pub text_query_embedding1: Option<Param<Tensor<B, 2>>>,
    pub text_query_embedding2: Option<Param<Tensor<B, 2>>>,
    pub text_query_pe_embedding1: Option<Param<Tensor<B, 2>>>,
    pub text_query_pe_embedding2: Option<Param<Tensor<B, 2>>>,
    pub img_pe: Option<Param<Tensor<B, 4>>>,
    pub prompt_embedding: Option<Param<Tensor<B, 2>>>,
    pub prompt_pe_embedding: Option<Param<Tensor<B, 2>>>,
    pub two_queries_text_attn_layers: Vec<SemanticDecompositionBlock<B>>,
    pub queries1_to_img_attn_layers: Vec<FirstOrderBlock<B>>,
    pub prompt_queries2_img_attn_layers: Vec<SecondOrderBlock<B>>,
    pub sparse_prompt_mlp: Mlp<B>,
    pub dense_prompt_conv: Option<DensePromptHead<B>>,
    pub num_text_queries: usize,
    pub num_prompts: usize,
    #[module(skip)]
    pub text_query_init: QueryInit,
    #[module(skip)]
    pub prompt_init: QueryInit,
}

/// Adaptive average pooling over tokens, as `F.adaptive_avg_pool1d`: bin `i` spans
/// `[⌊i·L/n⌋, ⌈(i+1)·L/n⌉)`.
///
/// `[b, l, d] -> [b, n, d]`
pub fn text_pool<B: Backend>(t_word: Tensor<B, 3>, n: usize) -> Tensor<B, 3> {
    let [b, l, d] = t_word.dims();
    let bins = (0..n)
        .map(|i| {
            let start = i * l / n;
            let end = ((i + 1) * l).div_ceil(n);
            t_word.clone().slice([0..b, start..end, 0..d]).mean_dim(1)
        })
        .collect();
    Tensor::cat(bins, 1)
}

/// `x + pe` when there is a positional embedding (`pe` is `[n, d]`, broadcast over the batch).
pub(crate) fn with_pe<B: Backend>(x: Tensor<B, 3>, pe: &Option<Tensor<B, 3>>) -> Tensor<B, 3> {
    match pe {
        // On the CPU backend both operands are laid out plainly first: Flex adds a strided or
        // broadcast operand element by element through index vectors (16 % of the prompter's
        // time at the browser size).
        Some(pe) if rsrefseg_kernels::serves::<B>() => {
            let [b, n, d] = x.dims();
            crate::nn::contiguous(x) + crate::nn::contiguous(pe.clone().expand([b, n, d]))
        }
        Some(pe) => x + pe.clone(),
        None => x,
    }
}

impl<B: Backend> CascadedPrompter<B> {
    fn table(p: &Option<Param<Tensor<B, 2>>>) -> Option<Tensor<B, 3>> {
        p.as_ref().map(|p| p.val().unsqueeze::<3>())
    }

    fn initial_queries(&self, t_word: &Tensor<B, 3>, learned: &Option<Param<Tensor<B, 2>>>) -> Tensor<B, 3> {
        let [b, _, d] = t_word.dims();
        let n = self.num_text_queries;
        match self.text_query_init {
            QueryInit::TextPool => text_pool(t_word.clone(), n),
            QueryInit::Learnable => learned.as_ref().expect("learnable text queries").val().unsqueeze::<3>().expand([b, n, d]),
            QueryInit::Zero => Tensor::zeros([b, n, d], &t_word.device()),
        }
    }

    /// # Shapes
    /// - v: SigLIP `last_hidden_state` `[b, g·g, d1]` (row-major grid)
    /// - t_word: SigLIP text `last_hidden_state` `[b, l, d1]` (every position)
    /// - t_sent: pooled text `[b, d1]`
    /// - logit_scale, logit_bias: SigLIP's scalars `[1]` (dense = cos·exp(scale) + bias)
    /// - mask_size: SAM's mask-input side m (4 × the image-embedding side)
    pub fn forward(
        &self,
        v: Tensor<B, 3>,
        t_word: Tensor<B, 3>,
        t_sent: Tensor<B, 2>,
        logit_scale: Tensor<B, 1>,
        logit_bias: Tensor<B, 1>,
        mask_size: usize,
    ) -> PrompterOutput<B> {
        let [b, n_img, d1] = v.dims();
        let g = (n_img as f64).sqrt() as usize;
        assert_eq!(g * g, n_img, "prompter: {n_img} image tokens do not form a square grid");
        let p1 = Self::table(&self.text_query_pe_embedding1);
        let p2 = Self::table(&self.text_query_pe_embedding2);

        // ---- Referring semantic decomposition ----
        let query_init = self.initial_queries(&t_word, &self.text_query_embedding1);
        let mut q1 = query_init.clone();
        let mut q2 = match self.text_query_init {
            QueryInit::Learnable => self.initial_queries(&t_word, &self.text_query_embedding2),
            _ => query_init.clone(),
        };
        for block in &self.two_queries_text_attn_layers {
            (q1, q2) = block.forward(q1, q2, t_word.clone(), &p1, &p2);
        }
        let (t1, t2) = (q1, q2);

        // Image positional embedding as tokens: (1,d1,g,g) -> (1,g·g,d1).
        // Laid out plainly once: every first- and second-order layer adds it to the image tokens,
        // and a transposed view is walked element by element at each addition on the CPU backend.
        let img_pe = self.img_pe.as_ref().map(|pe| crate::nn::contiguous(pe.val().reshape([1, d1, n_img]).swap_dims(1, 2)));

        // ---- First-order interaction: image tokens attend to t1 ----
        let mut x = v;
        let mut a = t1.clone();
        for block in &self.queries1_to_img_attn_layers {
            (a, x) = block.forward(a, x, &p1, &img_pe);
        }
        let first_order_tokens = x.clone();

        // ---- Second-order interaction, interleaved with sparse-prompt generation ----
        let q = Self::table(&self.prompt_pe_embedding);
        let d2 = self.sparse_prompt_mlp.layers[0].weight.dims()[0];
        let mut p = match &self.prompt_embedding {
            Some(e) => e.val().unsqueeze::<3>().expand([b, self.num_prompts, d2]),
            // Zero initialisation (ablation): the prompts start empty and are shaped by attention.
            None => Tensor::zeros([b, self.num_prompts, d2], &x.device()),
        };
        let mut bq = t2.clone();
        for block in &self.prompt_queries2_img_attn_layers {
            (bq, x, p) = block.forward(bq, x, p, &p2, &img_pe, &q);
        }
        let sparse = self.sparse_prompt_mlp.forward(p);
        // (B,g·g,d1) -> (B,d1,g,g)
        let refined = x.swap_dims(1, 2).reshape([b, d1, g, g]);

        // ---- Dense prompt ----
        let dense = self
            .dense_prompt_conv
            .as_ref()
            .map(|head| head.forward(refined.clone(), t_sent, logit_scale, logit_bias, mask_size));

        PrompterOutput { t1, t2, refined, sparse, dense, first_order_tokens, query_init }
    }
}
