//! Multi-head attention with separate q/k/v/out projections.
//!
//! One module serves SigLIP (`internal_dim = dim`), SAM's two-way transformer (cross attention with
//! `downsample_rate = 2`) and the prompter (`internal_dim = 512` with different q and kv widths).
//! Field names follow the checkpoints (`q_proj`, `k_proj`, `v_proj`, `out_proj`). The projections
//! may carry LoRA adapters ([`crate::nn::lora`]); SigLIP's are LoRA targets in RSRefSeg 2.

use burn::config::Config;
use burn::module::Module;
use super::lora::LoraLinear;
use burn::nn::LinearConfig;
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::Tensor;

#[derive(Config, Debug)]
pub struct AttentionConfig {
    /// Width of the queries (and of the output).
    pub q_dim: usize,
    /// Width of keys and values.
    pub kv_dim: usize,
    /// Width of the projected q/k/v, split into `num_heads` heads.
    pub internal_dim: usize,
    pub num_heads: usize,
}

impl AttentionConfig {
    /// Self-attention (q, k and v of the same width).
    pub fn self_attn(dim: usize, internal_dim: usize, num_heads: usize) -> Self {
        Self::new(dim, dim, internal_dim, num_heads)
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> Attention<B> {
        assert!(
            self.internal_dim % self.num_heads == 0,
            "attention internal_dim {} is not divisible by num_heads {}",
            self.internal_dim,
            self.num_heads
        );
        Attention {
            q_proj: LinearConfig::new(self.q_dim, self.internal_dim).init(device).into(),
            k_proj: LinearConfig::new(self.kv_dim, self.internal_dim).init(device).into(),
            v_proj: LinearConfig::new(self.kv_dim, self.internal_dim).init(device).into(),
            out_proj: LinearConfig::new(self.internal_dim, self.q_dim).init(device).into(),
            num_heads: self.num_heads,
        }
    }
}

#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    pub q_proj: LoraLinear<B>,
    pub k_proj: LoraLinear<B>,
    pub v_proj: LoraLinear<B>,
    pub out_proj: LoraLinear<B>,
    pub num_heads: usize,
}

impl<B: Backend> Attention<B> {
    /// # Shapes
    /// - q: `[b, n_q, q_dim]`, k, v: `[b, n_k, kv_dim]`
    /// - key_bias: optional additive bias broadcast to `[b, heads, n_q, n_k]` (e.g. `-inf` on
    ///   padded keys)
    /// - output: `[b, n_q, q_dim]`
    pub fn forward(
        &self,
        q: Tensor<B, 3>,
        k: Tensor<B, 3>,
        v: Tensor<B, 3>,
        key_bias: Option<Tensor<B, 4>>,
    ) -> Tensor<B, 3> {
        let q = self.separate_heads(self.q_proj.forward(q));
        let k = self.separate_heads(self.k_proj.forward(k));
        let v = self.separate_heads(self.v_proj.forward(v));
        // Layers quantised for int8 inference run the attention's products in int8 too.
        let out = sdpa_on(q, k, v, key_bias, self.q_proj.int8.is_some());
        self.out_proj.forward(recombine_heads(out))
    }

    /// `[b, n, h·d] -> [b, h, n, d]`
    fn separate_heads(&self, x: Tensor<B, 3>) -> Tensor<B, 4> {
        let [b, n, c] = x.dims();
        x.reshape([b, n, self.num_heads, c / self.num_heads])
            .swap_dims(1, 2)
    }
}

/// `[b, h, n, d] -> [b, n, h·d]`
pub fn recombine_heads<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 3> {
    let [b, h, n, d] = x.dims();
    x.swap_dims(1, 2).reshape([b, n, h * d])
}

/// Largest attention-score matrix (all heads, f32) computed at once. Longer sequences are
/// processed in blocks of query rows (each row's softmax is independent, so the result is the
/// same): Hiera's global blocks at 1024² attend over 4096 tokens, whose 4 × 4096² scores and the
/// softmax temporaries would otherwise add ~0.5 GB to the peak memory of an image encode.
pub const MAX_SCORE_BYTES: usize = 64 << 20;

/// Scaled dot-product attention, `softmax(q kᵀ / √d + bias) v`.
///
/// On the CPU backend this is the project's kernel (parallel over heads and query blocks, reads
/// the head views in place, output laid out so that [`recombine_heads`] is free); elsewhere
/// burn's attention op.
///
/// # Shapes
/// - q: `[b, h, n_q, d]`, k, v: `[b, h, n_k, d]` → `[b, h, n_q, d]`
pub fn sdpa<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    bias: Option<Tensor<B, 4>>,
) -> Tensor<B, 4> {
    sdpa_on(q, k, v, bias, false)
}

/// [`sdpa`], with int8 products on the CPU backend when `int8` is set (`--precision int8`: keys,
/// values, queries and attention weights quantised, see `rsrefseg_kernels::attention_int8`; the
/// f32 kernel for sequences too short to pay); burn's attention elsewhere.
pub fn sdpa_on<B: Backend>(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>, bias: Option<Tensor<B, 4>>, int8: bool) -> Tensor<B, 4> {
    if rsrefseg_kernels::serves::<B>() {
        let [b, h, nq, _] = q.dims();
        let [_, _, nk, _] = k.dims();
        let bias = bias.clone().map(|t| t.expand([b, h, nq, nk]));
        let out = match int8 {
            true => rsrefseg_kernels::attention_int8(&q, &k, &v, bias.as_ref()),
            false => None,
        };
        if let Some(out) = out.or_else(|| rsrefseg_kernels::attention(&q, &k, &v, bias.as_ref())) {
            return out;
        }
    }
    sdpa_blocked(q, k, v, bias, MAX_SCORE_BYTES)
}

fn sdpa_blocked<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    bias: Option<Tensor<B, 4>>,
    max_score_bytes: usize,
) -> Tensor<B, 4> {
    let [b, h, nq, _] = q.dims();
    let [_, _, nk, _] = k.dims();
    let bias = bias.map(|bias| bias.expand([b, h, nq, nk]));
    let rows = (max_score_bytes / (4 * b * h * nk).max(1)).max(1);
    if rows >= nq {
        return attention(q, k, v, None, bias, AttentionModuleOptions::default());
    }
    let blocks: Vec<Tensor<B, 4>> = (0..nq)
        .step_by(rows)
        .map(|start| {
            let end = (start + rows).min(nq);
            let qb = q.clone().slice([0..b, 0..h, start..end]);
            let bb = bias.clone().map(|t| t.slice([0..b, 0..h, start..end]));
            attention(qb, k.clone(), v.clone(), None, bb, AttentionModuleOptions::default())
        })
        .collect();
    Tensor::cat(blocks, 2)
}


// LoRA-capable layers (RSRefSeg 2 adapts the encoders and SAM's decoder through LoRA).
crate::nn::lora::lora_tree! {
    Attention<B> { q_proj, k_proj, v_proj, out_proj }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    #[test]
    fn query_blocks_give_the_same_attention() {
        type B = burn::backend::NdArray<f32>;
        let dev = Default::default();
        let r = |s: [usize; 4]| Tensor::<B, 4>::random(s, Distribution::Normal(0.0, 1.0), &dev);
        let (q, k, v) = (r([2, 3, 37, 8]), r([2, 3, 29, 8]), r([2, 3, 29, 8]));
        let bias = r([2, 1, 37, 29]);
        let whole = sdpa_blocked(q.clone(), k.clone(), v.clone(), Some(bias.clone()), usize::MAX);
        // 5 query rows per block (the last one shorter).
        let blocked = sdpa_blocked(q, k, v, Some(bias), 4 * 2 * 3 * 29 * 5);
        assert_eq!(blocked.dims(), [2, 3, 37, 8]);
        let d: f32 = (whole - blocked).abs().max().into_scalar();
        assert!(d < 1e-6, "{d}");
    }
}
