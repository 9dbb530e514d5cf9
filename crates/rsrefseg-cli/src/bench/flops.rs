//! Analytic operation counts per benchmark stage, from the configurations alone.
//!
//! Only multiply–accumulates are counted (1 MAC = 2 FLOP): the matmuls of every linear layer, the
//! convolutions (`out_pixels · c_out · c_in · k_h · k_w`, transposed ones likewise over their
//! input pixels), and the two products of every attention (`q·kᵀ` and `attn·v`, each
//! `n_q · n_k · d_inner`). Normalisations, activations, softmax, interpolation and element-wise
//! additions are left out; they are memory-bound and a few percent of the total. Work done on
//! padding (Hiera windows over a padded grid) is counted, because it is executed.
//!
//! The counts describe what rsrefseg runs: SigLIP's MAP pooling head is not run (RSRefSeg 2
//! never uses its output), so it is not counted, whereas the PyTorch anchor computes it
//! (≈1.2 GMAC at SigLIP2-base-512).

use rsrefseg::encoders::{SiglipTextConfig, SiglipVisionConfig};
use rsrefseg::prompter::PrompterConfig;
use rsrefseg::sam::hiera::HieraConfig;
use rsrefseg::sam::Sam2Config;

/// MACs of a linear layer applied to `n` rows.
fn linear(n: usize, d_in: usize, d_out: usize) -> f64 {
    (n * d_in * d_out) as f64
}

/// MACs of a 2-D convolution producing `h_out × w_out` pixels.
fn conv(h_out: usize, w_out: usize, c_in: usize, c_out: usize, k: usize) -> f64 {
    (h_out * w_out * c_in * c_out * k * k) as f64
}

/// MACs of multi-head attention with separate q/k/v/out projections (`nn::Attention`): queries of
/// width `q_dim`, keys/values of width `kv_dim`, projected to `inner`.
fn attention(n_q: usize, n_k: usize, q_dim: usize, kv_dim: usize, inner: usize) -> f64 {
    linear(n_q, q_dim, inner) + 2.0 * linear(n_k, kv_dim, inner) + sdpa(n_q, n_k, inner) + linear(n_q, inner, q_dim)
}

/// `q·kᵀ` and `attn·v` summed over heads.
fn sdpa(n_q: usize, n_k: usize, inner: usize) -> f64 {
    2.0 * (n_q * n_k * inner) as f64
}

/// Pre-LN transformer layer of SigLIP on `n` tokens.
fn siglip_layer(n: usize, d: usize, inter: usize) -> f64 {
    attention(n, n, d, d, d) + linear(n, d, inter) + linear(n, inter, d)
}

/// SigLIP vision tower at its native size: patch embedding + encoder (no MAP head).
pub fn siglip_vision(c: &SiglipVisionConfig) -> f64 {
    let g = c.grid();
    let n = g * g;
    conv(g, g, c.num_channels, c.hidden_size, c.patch_size)
        + c.num_hidden_layers as f64 * siglip_layer(n, c.hidden_size, c.intermediate_size)
}

/// SigLIP text tower on `len` tokens: encoder + pooled-text head (the token table is a lookup).
pub fn siglip_text(c: &SiglipTextConfig, len: usize) -> f64 {
    c.num_hidden_layers as f64 * siglip_layer(len, c.hidden_size, c.intermediate_size)
        + linear(1, c.hidden_size, c.head_dim())
}

/// Hiera trunk + FPN neck + SAM's `conv_s0`/`conv_s1` (everything `Sam2::encode_image` runs).
pub fn hiera_fpn(c: &Sam2Config) -> f64 {
    let h = &c.hiera;
    let s = c.image_size;
    let k = h.patch_kernel_size;
    let grid0 = (s + 2 * h.patch_padding - k) / h.patch_stride + 1;
    let mut total = conv(grid0, grid0, h.in_chans, h.embed_dim, k);

    let mut side = grid0;
    let mut level_sides = Vec::new();
    for b in block_plan(h) {
        let n_in = side * side;
        let stride = if b.q_pool { h.q_stride[0] } else { 1 };
        let side_out = side / stride;
        let n_out = side_out * side_out;
        // qkv on every input token; the shortcut projection (width change) likewise.
        total += linear(n_in, b.dim, 3 * b.dim_out);
        if b.dim != b.dim_out {
            total += linear(n_in, b.dim, b.dim_out);
        }
        // Attention: within windows of the zero-padded grid, or globally.
        total += if b.window > 0 {
            let padded = side.div_ceil(b.window) * b.window;
            let windows = (padded / b.window).pow(2);
            let keys = b.window * b.window;
            windows as f64 * sdpa(keys / (stride * stride), keys, b.dim_out)
        } else {
            sdpa(n_out, n_in, b.dim_out)
        };
        total += linear(n_out, b.dim_out, b.dim_out);
        let hidden = (b.dim_out as f64 * h.mlp_ratio) as usize;
        total += linear(n_out, b.dim_out, hidden) + linear(n_out, hidden, b.dim_out);
        side = side_out;
        if b.stage_end {
            level_sides.push((side, b.dim_out));
        }
    }
    // FPN lateral 1×1 convolutions on every level (the top-down sums are additions).
    for &(side, ch) in &level_sides {
        total += conv(side, side, ch, c.d_model, 1);
    }
    // High-resolution projections for the mask decoder (d/8 and d/4 channels at strides 4, 8).
    if c.use_high_res_features {
        let (s0, _) = level_sides[0];
        let (s1, _) = level_sides[1];
        total += conv(s0, s0, c.d_model, c.d_model / 8, 1) + conv(s1, s1, c.d_model, c.d_model / 4, 1);
    }
    total
}

/// One Hiera block's widths, window and pooling.
struct PlannedBlock {
    dim: usize,
    dim_out: usize,
    window: usize,
    q_pool: bool,
    stage_end: bool,
}

/// The per-block layout of `HieraConfig` (same rule as the trunk builds it: the width doubles at
/// the first block of a stage, whose window is still the previous stage's).
fn block_plan(h: &HieraConfig) -> Vec<PlannedBlock> {
    let stage_ends = h.stage_ends();
    let q_pool_blocks: Vec<usize> =
        stage_ends[..stage_ends.len() - 1].iter().map(|e| e + 1).take(h.q_pool).collect();
    let depth: usize = h.stages.iter().sum();
    let mut dim = h.embed_dim;
    let mut stage = 0;
    let mut plan = Vec::with_capacity(depth);
    for i in 0..depth {
        let window = if h.global_att_blocks.contains(&i) { 0 } else { h.window_spec[stage] };
        let mut dim_out = dim;
        if i > 0 && stage_ends.contains(&(i - 1)) {
            dim_out = (dim as f64 * h.dim_mul) as usize;
            stage += 1;
        }
        plan.push(PlannedBlock {
            dim,
            dim_out,
            window,
            q_pool: q_pool_blocks.contains(&i),
            stage_end: stage_ends.contains(&i),
        });
        dim = dim_out;
    }
    plan
}

/// Cascaded prompter on a `grid²` image and `len` words, with the dense prompt produced at
/// `mask_size²` by the Gram evaluation of `prompter::dense_prompt` (per-cell dot products and
/// neighbour Gram entries, then separable interpolation matmuls).
pub fn prompter(c: &PrompterConfig, len: usize, mask_size: usize) -> f64 {
    let (d1, d2, nt, np) = (c.clip_dim, c.prompt_dim, c.num_text_queries, c.num_prompts);
    let n_img = c.grid * c.grid;
    let inner = c.internal_dim;
    let mlp = |n: usize, d: usize| linear(n, d, c.mlp_dim) + linear(n, c.mlp_dim, d);
    let att = |n_q, n_k, q_dim, kv_dim| attention(n_q, n_k, q_dim, kv_dim, inner);

    // Semantic decomposition: per subspace self-attention, words, the other subspace, 2 MLPs.
    let decomposition = 2.0 * (att(nt, nt, d1, d1) + att(nt, len, d1, d1) + att(nt, nt, d1, d1) + 2.0 * mlp(nt, d1));
    // First order: t1 self-attention, image tokens attend to t1, image MLP.
    let first = att(nt, nt, d1, d1) + att(n_img, nt, d1, d1) + mlp(n_img, d1);
    // Second order: the same on t2, plus the prompts (self, t2, image tokens, 2 MLPs).
    let second = first + att(np, np, d2, d2) + att(np, nt, d2, d1) + att(np, n_img, d2, d1) + 2.0 * mlp(np, d2);
    let sparse_mlp = mlp(np, d2);

    let mut total = c.decomposition_depth as f64 * decomposition
        + c.first_order_depth as f64 * first
        + c.second_order_depth as f64 * second
        + sparse_mlp;
    if c.dense_prompt {
        let g = c.grid;
        let convs = conv(g, g, d1, d1 / 2, 3) + conv(g, g, d1 / 2, d1, 3);
        // Dot with t_sent, squared norms and 4 neighbour products per cell.
        let gram = 6.0 * (n_img * d1) as f64;
        // 12 separable interpolations `A_y · map · A_xᵀ` (m×g · g×g · g×m).
        let m = mask_size;
        let interp = 12.0 * ((m * g * g) + (m * g * m)) as f64;
        total += convs + gram + interp;
    }
    total
}

/// SAM prompt encoder (`mask_downscaling` of the dense prompt) + mask decoder with `n_sparse`
/// prompt tokens.
pub fn decoder(c: &Sam2Config, n_sparse: usize) -> f64 {
    let d = c.d_model;
    let e = c.image_embedding_size();
    let n_img = e * e;
    let m = c.mask_in_chans;
    // mask_downscaling: k2 s2 (1 → m/4), k2 s2 (m/4 → m), 1×1 (m → d).
    let downscale = conv(2 * e, 2 * e, 1, m / 4, 2) + conv(e, e, m / 4, m, 2) + conv(e, e, m, d, 1);
    // Dense PE: (h·w, 2) @ (2, d/2).
    let pe = linear(n_img, 2, d / 2);

    let n_tok = usize::from(c.pred_obj_scores) + 1 + (c.num_multimask_outputs + 1) + n_sparse;
    let cross = d / c.attention_downsample_rate;
    let block = attention(n_tok, n_tok, d, d, d)
        + attention(n_tok, n_img, d, d, cross)
        + linear(n_tok, d, c.transformer_mlp_dim)
        + linear(n_tok, c.transformer_mlp_dim, d)
        + attention(n_img, n_tok, d, d, cross);
    let transformer = c.transformer_depth as f64 * block + attention(n_tok, n_img, d, d, cross);

    // Upscaling: two k2 s2 transposed convolutions (d → d/4 → d/8).
    let upscale = conv(e, e, d, d / 4, 2) + conv(2 * e, 2 * e, d / 4, d / 8, 2);
    let masks = c.num_multimask_outputs + 1;
    // Hypernetwork MLPs (3 layers, d → d → d → d/8) and the mask dot products over 4e × 4e.
    let hyper = masks as f64 * (2.0 * linear(1, d, d) + linear(1, d, d / 8)) + (masks * (d / 8) * 16 * n_img) as f64;
    let iou = linear(1, d, c.iou_head_hidden_dim) * 2.0 + linear(1, c.iou_head_hidden_dim, masks);
    let obj = if c.pred_obj_scores { 2.0 * linear(1, d, d) + linear(1, d, 1) } else { 0.0 };
    downscale + pe + transformer + upscale + hyper + iou + obj
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsrefseg::encoders::SiglipConfig;

    /// The analytic counts agree with the PyTorch anchor's profile of the same models (which
    /// additionally counts SigLIP's MAP head, ≈1.2 GMAC).
    #[test]
    fn browser_counts_match_the_anchor_profile() {
        let s = SiglipConfig::siglip2_base_patch16_512();
        let gmac = |x: f64| x / 1e9;
        assert!((gmac(siglip_vision(&s.vision_config)) - 106.9).abs() < 0.5, "{}", gmac(siglip_vision(&s.vision_config)));
        assert!((gmac(siglip_text(&s.text_config, 64)) - 5.5).abs() < 0.1);
        assert!((gmac(siglip_text(&s.text_config, 16)) - 1.4).abs() < 0.1);
        let sam = Sam2Config::tiny();
        let h = gmac(hiera_fpn(&sam));
        assert!((h - 146.2).abs() / 146.2 < 0.05, "hiera {h}");
        let p = gmac(prompter(&PrompterConfig::new(768, 256, 32), 16, 256));
        assert!((p - 13.8).abs() / 13.8 < 0.1, "prompter {p}");
        let d = gmac(decoder(&sam, 9));
        assert!((d - 1.9).abs() / 1.9 < 0.1, "decoder {d}");
    }
}
