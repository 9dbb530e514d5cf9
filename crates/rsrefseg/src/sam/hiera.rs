//! Hiera trunk of the SAM 2.1 image encoder (`sam2/modeling/backbones/hieradet.py`).
//!
//! A strided patch embedding, a position embedding (bicubic-resized background + tiled window
//! pattern) and a stack of [`MultiScaleBlock`]s grouped in stages. Each stage after the first
//! starts with a block that halves the resolution by max-pooling its queries ("q-pool") and
//! doubles the width and head count. The trunk returns the output of the last block of each
//! stage, channels first, from the shallowest (stride 4) to the deepest (stride 32).
//!
//! Activations stay channels-last `(B, H, W, C)` inside the trunk, as in the reference, so the
//! window bookkeeping reads the same.

use crate::nn::interpolate::bicubic_host;
use crate::nn::{Activation, LoraLinear, Mlp, MlpConfig};
use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::backend::Backend;
use burn::tensor::module::max_pool2d;
use burn::tensor::{Tensor, TensorData};

use crate::nn::attention::sdpa_on;
use crate::nn::{contiguous, reshape_view};

#[derive(Config, Debug)]
pub struct HieraConfig {
    /// Width of the patch embedding and of stage 1 (doubled at each stage transition).
    #[config(default = 96)]
    pub embed_dim: usize,
    /// Attention heads of stage 1 (doubled at each stage transition).
    #[config(default = 1)]
    pub num_heads: usize,
    /// Blocks per stage.
    #[config(default = "vec![1, 2, 7, 2]")]
    pub stages: Vec<usize>,
    /// Window size per stage (0 = global attention); the first block of a stage still uses the
    /// previous stage's window (the window "lags by a block").
    #[config(default = "vec![8, 4, 14, 7]")]
    pub window_spec: Vec<usize>,
    /// Block indices (over the whole trunk) that use global attention.
    #[config(default = "vec![5, 7, 9]")]
    pub global_att_blocks: Vec<usize>,
    /// Size `(h, w)` of the learned background position embedding before it is resized.
    #[config(default = "[7, 7]")]
    pub window_pos_embed_bkg_spatial_size: [usize; 2],
    /// Number of stage transitions that pool their queries (the first `q_pool` of them).
    #[config(default = 3)]
    pub q_pool: usize,
    /// Pooling kernel = stride of the query pooling.
    #[config(default = "[2, 2]")]
    pub q_stride: [usize; 2],
    /// Width multiplier at a stage transition.
    #[config(default = 2.0)]
    pub dim_mul: f64,
    /// Head-count multiplier at a stage transition.
    #[config(default = 2.0)]
    pub head_mul: f64,
    /// MLP hidden width as a multiple of the block width.
    #[config(default = 4.0)]
    pub mlp_ratio: f64,
    /// LayerNorm epsilon of every block.
    #[config(default = 1e-6)]
    pub layer_norm_eps: f64,
    /// Patch embedding convolution: kernel, stride, padding, input channels.
    #[config(default = 7)]
    pub patch_kernel_size: usize,
    #[config(default = 4)]
    pub patch_stride: usize,
    #[config(default = 3)]
    pub patch_padding: usize,
    #[config(default = 3)]
    pub in_chans: usize,
}

impl HieraConfig {
    /// `sam2.1_hiera_t.yaml`: 12 blocks, widths 96/192/384/768.
    pub fn tiny() -> Self {
        Self::new()
    }

    /// `sam2.1_hiera_s.yaml`: 16 blocks, widths 96/192/384/768.
    pub fn small() -> Self {
        Self::new().with_stages(vec![1, 2, 11, 2]).with_global_att_blocks(vec![7, 10, 13])
    }

    /// `sam2.1_hiera_b+.yaml`: 24 blocks, widths 112/224/448/896, 14×14 background PE.
    pub fn base_plus() -> Self {
        Self::new()
            .with_embed_dim(112)
            .with_num_heads(2)
            .with_stages(vec![2, 3, 16, 3])
            .with_global_att_blocks(vec![12, 16, 20])
            .with_window_pos_embed_bkg_spatial_size([14, 14])
    }

    /// `sam2.1_hiera_l.yaml`: 48 blocks, widths 144/288/576/1152, windows 8/4/16/8.
    pub fn large() -> Self {
        Self::new()
            .with_embed_dim(144)
            .with_num_heads(2)
            .with_stages(vec![2, 6, 36, 4])
            .with_global_att_blocks(vec![23, 33, 43])
            .with_window_spec(vec![8, 4, 16, 8])
    }

    /// Index of the last block of each stage.
    pub fn stage_ends(&self) -> Vec<usize> {
        self.stages
            .iter()
            .scan(0, |acc, &n| {
                *acc += n;
                Some(*acc - 1)
            })
            .collect()
    }

    /// Output widths of the stages, deepest first (the order of the FPN's `convs`).
    pub fn channel_list(&self) -> Vec<usize> {
        self.block_plan().iter().rev().filter(|b| b.stage_end).map(|b| b.dim_out).collect()
    }

    /// Every value the trunk divides by, indexes with or iterates over, checked before anything
    /// is built (the builders below assume a configuration that passed).
    pub fn check(&self) -> Result<(), String> {
        let e = |m: String| Err(format!("Hiera: {m}"));
        if self.embed_dim == 0 || self.num_heads == 0 {
            return e(format!("embed_dim {} and num_heads {} must be at least 1", self.embed_dim, self.num_heads));
        }
        if self.stages.is_empty() || self.stages.contains(&0) {
            return e(format!("stages {:?} must be a non-empty list of block counts ≥ 1", self.stages));
        }
        if self.window_spec.len() != self.stages.len() || self.window_spec.contains(&0) {
            return e(format!("window_spec {:?} needs one window ≥ 1 per stage ({} stages)", self.window_spec, self.stages.len()));
        }
        if self.q_pool >= self.stages.len() {
            return e(format!("q_pool {} must be below the number of stages {}", self.q_pool, self.stages.len()));
        }
        if self.q_stride.contains(&0) || self.patch_stride == 0 || self.patch_kernel_size == 0 {
            return e(format!(
                "q_stride {:?}, patch_stride {} and patch_kernel_size {} must be at least 1",
                self.q_stride, self.patch_stride, self.patch_kernel_size
            ));
        }
        if self.window_pos_embed_bkg_spatial_size.contains(&0) {
            return e(format!("window_pos_embed_bkg_spatial_size {:?} must be at least 1", self.window_pos_embed_bkg_spatial_size));
        }
        for (name, v) in [("dim_mul", self.dim_mul), ("head_mul", self.head_mul), ("mlp_ratio", self.mlp_ratio), ("layer_norm_eps", self.layer_norm_eps)] {
            if !(v.is_finite() && v > 0.0) {
                return e(format!("{name} must be a finite number > 0, not {v}"));
            }
        }
        let depth: usize = self.stages.iter().sum();
        if depth > 1024 {
            return e(format!("{depth} blocks is beyond any released model (at most 1024)"));
        }
        if let Some(b) = self.global_att_blocks.iter().find(|&&b| b >= depth) {
            return e(format!("global_att_blocks holds block {b}, but there are only {depth} blocks"));
        }
        for (i, b) in self.block_plan().iter().enumerate() {
            if b.heads == 0 || b.dim_out == 0 || b.dim_out % b.heads != 0 {
                return e(format!("block {i} has width {} and {} heads (the width must be a non-zero multiple of the heads)", b.dim_out, b.heads));
            }
            if b.dim_out > 65536 {
                return e(format!("block {i} has width {}, beyond any released model", b.dim_out));
            }
        }
        Ok(())
    }

    /// The per-block settings the reference computes in `Hiera.__init__`.
    fn block_plan(&self) -> Vec<BlockPlan> {
        assert_eq!(
            self.stages.len(),
            self.window_spec.len(),
            "Hiera: one window size per stage is required"
        );
        let stage_ends = self.stage_ends();
        assert!(self.q_pool < self.stages.len(), "Hiera: q_pool exceeds the number of stage transitions");
        let q_pool_blocks: Vec<usize> = stage_ends[..stage_ends.len() - 1]
            .iter()
            .map(|e| e + 1)
            .take(self.q_pool)
            .collect();
        let depth: usize = self.stages.iter().sum();
        let mut dim = self.embed_dim;
        let mut heads = self.num_heads;
        let mut stage = 0;
        let mut plan = Vec::with_capacity(depth);
        for i in 0..depth {
            // The window is read before the stage counter moves: the first block of a stage
            // partitions with the previous stage's window.
            let window = if self.global_att_blocks.contains(&i) { 0 } else { self.window_spec[stage] };
            let mut dim_out = dim;
            if i > 0 && stage_ends.contains(&(i - 1)) {
                dim_out = (dim as f64 * self.dim_mul) as usize;
                heads = (heads as f64 * self.head_mul) as usize;
                stage += 1;
            }
            plan.push(BlockPlan {
                dim,
                dim_out,
                heads,
                window,
                q_pool: q_pool_blocks.contains(&i),
                stage_end: stage_ends.contains(&i),
            });
            dim = dim_out;
        }
        plan
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> Hiera<B> {
        let [bh, bw] = self.window_pos_embed_bkg_spatial_size;
        let w0 = self.window_spec[0];
        let blocks = self
            .block_plan()
            .iter()
            .map(|p| {
                MultiScaleBlockConfig {
                    dim: p.dim,
                    dim_out: p.dim_out,
                    num_heads: p.heads,
                    mlp_ratio: self.mlp_ratio,
                    window_size: p.window,
                    q_stride: if p.q_pool { Some(self.q_stride) } else { None },
                    layer_norm_eps: self.layer_norm_eps,
                }
                .init(device)
            })
            .collect();
        let k = self.patch_kernel_size;
        let p = self.patch_padding;
        Hiera {
            patch_embed: PatchEmbed {
                proj: Conv2dConfig::new([self.in_chans, self.embed_dim], [k, k])
                    .with_stride([self.patch_stride, self.patch_stride])
                    .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
                    .init(device),
            },
            pos_embed: Param::from_tensor(Tensor::zeros([1, self.embed_dim, bh, bw], device)),
            pos_embed_window: Param::from_tensor(Tensor::zeros([1, self.embed_dim, w0, w0], device)),
            blocks,
            stage_ends: self.stage_ends(),
        }
    }
}

/// Settings of one block, derived from the stage layout.
#[derive(Clone, Copy, Debug)]
struct BlockPlan {
    dim: usize,
    dim_out: usize,
    heads: usize,
    window: usize,
    q_pool: bool,
    stage_end: bool,
}

/// `Conv2d(in_chans → embed_dim, k7, s4, p3)`; named like the reference (`patch_embed.proj`).
#[derive(Module, Debug)]
pub struct PatchEmbed<B: Backend> {
    pub proj: Conv2d<B>,
}

#[derive(Module, Debug)]
pub struct Hiera<B: Backend> {
    pub patch_embed: PatchEmbed<B>,
    /// Background position embedding `(1, C0, bh, bw)`, resized bicubically to the token grid.
    pub pos_embed: Param<Tensor<B, 4>>,
    /// Window position embedding `(1, C0, w0, w0)`, tiled over the token grid.
    pub pos_embed_window: Param<Tensor<B, 4>>,
    pub blocks: Vec<MultiScaleBlock<B>>,
    #[module(skip)]
    pub stage_ends: Vec<usize>,
}

impl<B: Backend> Hiera<B> {
    /// # Shapes
    /// - pixels: `[b, 3, H, W]` (normalised)
    /// - output: one `[b, C_s, H/(4·2^s), W/(4·2^s)]` map per stage `s`, shallowest first
    pub fn forward(&self, pixels: Tensor<B, 4>) -> Vec<Tensor<B, 4>> {
        // (B, C, H, W) -> (B, H, W, C)
        let x = crate::nn::conv::conv2d(&self.patch_embed.proj, pixels).permute([0, 2, 3, 1]);
        let [_, h, w, _] = x.dims();
        let mut x = x + self.pos_embed([h, w]);
        let mut outputs = Vec::with_capacity(self.stage_ends.len());
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward(x);
            if self.stage_ends.contains(&i) {
                // (B, H, W, C) -> (B, C, H, W)
                outputs.push(x.clone().permute([0, 3, 1, 2]));
            }
        }
        outputs
    }

    /// Position embedding of an `h × w` token grid, channels last: `[1, h, w, C0]`.
    ///
    /// The bicubic resize of `pos_embed` is a fixed linear map of its rows and of its columns,
    /// so it runs as two matmuls with weight matrices computed on the host from the sizes alone:
    /// the backend never runs a bicubic kernel and the parameter keeps its gradient.
    pub fn pos_embed(&self, [h, w]: [usize; 2]) -> Tensor<B, 4> {
        let [_, c, bh, bw] = self.pos_embed.dims();
        let [_, _, wh, ww] = self.pos_embed_window.dims();
        assert!(
            h % wh == 0 && w % ww == 0,
            "Hiera: token grid {h}x{w} is not a multiple of the window position embedding {wh}x{ww}"
        );
        let device = self.pos_embed.device();
        // rows: [1, h, bh] @ [c, bh, bw] -> [c, h, bw]; columns: [c, h, bw] @ [1, bw, w] -> [c, h, w]
        let rows = bicubic_matrix::<B>(bh, h, &device).transpose().unsqueeze_dim::<3>(0);
        let cols = bicubic_matrix::<B>(bw, w, &device).unsqueeze_dim::<3>(0);
        let background = rows
            .expand([c, h, bh])
            .matmul(self.pos_embed.val().reshape([c, bh, bw]))
            .matmul(cols.expand([c, bw, w]))
            .reshape([1, c, h, w]);
        let window = self.pos_embed_window.val().repeat_dim(2, h / wh).repeat_dim(3, w / ww);
        // (1, C, h, w) -> (1, h, w, C)
        (background + window).permute([0, 2, 3, 1])
    }
}

/// Weights of PyTorch's bicubic resize (`align_corners=False`, a = −0.75) of one axis as an
/// `[n_in, n_out]` matrix: column `o` holds the weight of each input sample in output `o`.
/// Built by resizing the identity on the host.
fn bicubic_matrix<B: Backend>(n_in: usize, n_out: usize, device: &B::Device) -> Tensor<B, 2> {
    let mut eye = vec![0f32; n_in * n_in];
    for i in 0..n_in {
        eye[i * n_in + i] = 1.0;
    }
    // n_in "channels", each a one-hot column of height n_in and width 1.
    let weights = bicubic_host(&eye, [n_in, n_in, 1], [n_out, 1], false);
    Tensor::from_data(TensorData::new(weights, [n_in, n_out]), device)
}

#[derive(Config, Debug)]
pub struct MultiScaleBlockConfig {
    /// Input width.
    pub dim: usize,
    /// Output width (differs from `dim` only in stage-transition blocks).
    pub dim_out: usize,
    pub num_heads: usize,
    /// MLP hidden width as a multiple of `dim_out`.
    pub mlp_ratio: f64,
    /// Attention window (0 = global attention).
    pub window_size: usize,
    /// Max-pool kernel = stride applied to the queries (stage-transition blocks).
    pub q_stride: Option<[usize; 2]>,
    pub layer_norm_eps: f64,
}

impl MultiScaleBlockConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> MultiScaleBlock<B> {
        let ln = |d| LayerNormConfig::new(d).with_epsilon(self.layer_norm_eps).init(device);
        let hidden = (self.dim_out as f64 * self.mlp_ratio) as usize;
        MultiScaleBlock {
            norm1: ln(self.dim),
            attn: MultiScaleAttention {
                qkv: LinearConfig::new(self.dim, 3 * self.dim_out).init(device).into(),
                proj: LinearConfig::new(self.dim_out, self.dim_out).init(device).into(),
                num_heads: self.num_heads,
                q_stride: self.q_stride,
            },
            norm2: ln(self.dim_out),
            mlp: MlpConfig::new(self.dim_out, hidden, self.dim_out, 2)
                .with_activation(Activation::Gelu)
                .init(device),
            proj: (self.dim != self.dim_out).then(|| LinearConfig::new(self.dim, self.dim_out).init(device)),
            window_size: self.window_size,
            q_stride: self.q_stride,
        }
    }
}

/// Pre-norm transformer block with optional windowing, query pooling and width change.
#[derive(Module, Debug)]
pub struct MultiScaleBlock<B: Backend> {
    pub norm1: LayerNorm<B>,
    pub attn: MultiScaleAttention<B>,
    pub norm2: LayerNorm<B>,
    pub mlp: Mlp<B>,
    /// Projection of the shortcut when the width changes (stage transitions only).
    pub proj: Option<Linear<B>>,
    pub window_size: usize,
    #[module(skip)]
    pub q_stride: Option<[usize; 2]>,
}

impl<B: Backend> MultiScaleBlock<B> {
    /// # Shapes
    /// - x: `[b, h, w, dim]` → `[b, h / q_stride, w / q_stride, dim_out]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let shortcut = x.clone();
        let x = self.norm1.forward(x);

        // Skip connection: projected and pooled like the queries when the block changes width.
        let shortcut = match &self.proj {
            Some(proj) => pool(proj.forward(x.clone()), self.q_stride),
            None => shortcut,
        };
        let [_, h_out, w_out, _] = shortcut.dims();

        // Window attention (+ query pooling at stage transitions)
        let x = if self.window_size > 0 {
            let (windows, [hp, wp]) = window_partition(x, self.window_size);
            let windows = self.attn.forward(windows);
            // Pooled windows shrink with the queries; the padded grid is recomputed for them.
            let ws = self.window_size / self.q_stride.map_or(1, |s| s[0]);
            let (hp, wp) = match self.q_stride {
                Some(_) => (h_out.div_ceil(ws) * ws, w_out.div_ceil(ws) * ws),
                None => (hp, wp),
            };
            window_unpartition(windows, ws, [hp, wp], [h_out, w_out])
        } else {
            self.attn.forward(x)
        };

        let x = shortcut + x;
        // MLP
        let y = self.mlp.forward(self.norm2.forward(x.clone()));
        x + y
    }
}

/// Multi-head self-attention over a (window of the) token grid whose queries may be max-pooled.
#[derive(Module, Debug)]
pub struct MultiScaleAttention<B: Backend> {
    /// LoRA targets in RSRefSeg 2, as is `proj`.
    pub qkv: LoraLinear<B>,
    pub proj: LoraLinear<B>,
    pub num_heads: usize,
    #[module(skip)]
    pub q_stride: Option<[usize; 2]>,
}

impl<B: Backend> MultiScaleAttention<B> {
    /// # Shapes
    /// - x: `[b, h, w, dim]` → `[b, h', w', dim_out]` (`h' = h / q_stride` when pooling)
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, h, w, _] = x.dims();
        let heads = self.num_heads;
        // qkv: (B, H*W, 3, heads, d)
        let qkv = self.qkv.forward(x);
        let c3 = qkv.dims()[3];
        let dim_out = c3 / 3;
        let d = dim_out / heads;
        let qkv = qkv.reshape([b, h * w, 3, heads, d]);
        // Views into qkv (no copy on the CPU backend; the attention kernel reads them in place).
        let part = |i: usize| -> Tensor<B, 4> { reshape_view(qkv.clone().narrow(2, i, 1), [b, h * w, heads, d]) };
        let (q, k, v) = (part(0), part(1), part(2));

        // Query pooling (stage transitions): pool q on its spatial grid.
        let (q, h, w) = match self.q_stride {
            Some(_) => {
                let q = pool(reshape_view(q, [b, h, w, dim_out]), self.q_stride);
                let [_, h, w, _] = q.dims();
                (q.reshape([b, h * w, heads, d]), h, w)
            }
            None => (q, h, w),
        };

        // (B, N, heads, d) -> (B, heads, N, d)
        let (q, k, v) = (q.swap_dims(1, 2), k.swap_dims(1, 2), v.swap_dims(1, 2));
        // Layers quantised for int8 inference run the attention's products in int8 too.
        let out = sdpa_on(q, k, v, None, self.qkv.int8.is_some());
        // (B, heads, N, d) -> (B, h, w, heads·d)
        let out = out.swap_dims(1, 2).reshape([b, h, w, dim_out]);
        self.proj.forward(out)
    }
}

/// Max-pool a channels-last map with kernel = stride (`do_pool`); identity without a stride.
fn pool<B: Backend>(x: Tensor<B, 4>, stride: Option<[usize; 2]>) -> Tensor<B, 4> {
    let Some(s) = stride else { return x };
    // The CPU backend pools channels-last directly.
    let x = match rsrefseg_kernels::max_pool_nhwc(x, s) {
        Ok(y) => return y,
        Err(x) => x,
    };
    // (B, H, W, C) -> (B, C, H, W) -> pool -> (B, H', W', C)
    let x = x.permute([0, 3, 1, 2]);
    max_pool2d(x, s, s, [0, 0], [1, 1], false).permute([0, 2, 3, 1])
}

/// Split `[b, h, w, c]` into `[b·n_windows, ws, ws, c]` windows, zero-padding `h` and `w` up to a
/// multiple of `ws`. Returns the windows and the padded size.
pub fn window_partition<B: Backend>(x: Tensor<B, 4>, ws: usize) -> (Tensor<B, 4>, [usize; 2]) {
    let [b, h, w, c] = x.dims();
    let (hp, wp) = (h.div_ceil(ws) * ws, w.div_ceil(ws) * ws);
    let x = if (hp, wp) != (h, w) { x.pad([(0, hp - h), (0, wp - w), (0, 0)], 0.0) } else { x };
    // (B, Hp/ws, ws, Wp/ws, ws, C) -> (B, Hp/ws, Wp/ws, ws, ws, C)
    let windows = x
        .reshape([b, hp / ws, ws, wp / ws, ws, c])
        .permute([0, 1, 3, 2, 4, 5]);
    // Copied run by run (ws·c contiguous elements) on the CPU backend, then reshaped in place.
    let windows = contiguous(windows).reshape([b * (hp / ws) * (wp / ws), ws, ws, c]);
    (windows, [hp, wp])
}

/// Inverse of [`window_partition`]: `[b·n_windows, ws, ws, c]` → `[b, h, w, c]` with the padding
/// of the `hp × wp` grid cropped.
pub fn window_unpartition<B: Backend>(
    windows: Tensor<B, 4>,
    ws: usize,
    [hp, wp]: [usize; 2],
    [h, w]: [usize; 2],
) -> Tensor<B, 4> {
    let [bn, _, _, c] = windows.dims();
    let b = bn / ((hp / ws) * (wp / ws));
    // (B, Hp/ws, Wp/ws, ws, ws, C) -> (B, Hp/ws, ws, Wp/ws, ws, C)
    let x = windows
        .reshape([b, hp / ws, wp / ws, ws, ws, c])
        .permute([0, 1, 3, 2, 4, 5]);
    let x = contiguous(x).reshape([b, hp, wp, c]);
    if (hp, wp) != (h, w) {
        x.slice([0..b, 0..h, 0..w, 0..c])
    } else {
        x
    }
}

// LoRA-capable layers (RSRefSeg 2 adapts the encoders and SAM's decoder through LoRA).
crate::nn::lora::lora_tree! {
    Hiera<B> { blocks }
    MultiScaleBlock<B> { attn, mlp }
    MultiScaleAttention<B> { qkv, proj }
}
