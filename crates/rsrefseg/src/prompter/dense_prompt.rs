//! Dense prompt: the refined SigLIP map scored against the sentence at SAM's mask-input size.
//!
//! `F = conv3×3(d1→d1/2) → BN → GELU → conv3×3(d1/2→d1)` on the refined map, bilinear
//! pre-upsampling (`align_corners=True`) to `m×m`, then per pixel
//! `cos(F, t_sent) · exp(logit_scale) + logit_bias` with SigLIP's (fine-tuned) scalars.
//!
//! The upsampled `d1×m×m` volume (302 MB at d1 = 1152, m = 256) is never built: bilinear
//! upsampling is linear, so `<up(F), t> = up(<F, t>)`, and `‖up(F)‖² = Σ_kl w_k w_l <F_k, F_l>`
//! over the four neighbours of each output pixel. Both need only per-cell dot products and the
//! neighbour Gram entries at `g×g`; the result is the same number up to rounding.

use crate::nn::conv::conv2d;
use crate::nn::interpolate::bilinear;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use crate::nn::batch_norm::{BatchNorm2d, BatchNorm2dConfig};
use burn::nn::PaddingConfig2d;
use crate::nn::activation::gelu_erf as gelu;
use burn::tensor::{backend::Backend, Tensor, TensorData};

/// F.normalize's epsilon.
const NORM_EPS: f32 = 1e-12;

#[derive(Module, Debug)]
pub struct DensePromptHead<B: Backend> {
    pub conv1: Conv2d<B>,
    pub bn: BatchNorm2d<B>,
    pub conv2: Conv2d<B>,
}

impl<B: Backend> DensePromptHead<B> {
    pub fn new(d1: usize, device: &B::Device) -> Self {
        let conv = |i, o| Conv2dConfig::new([i, o], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init(device);
        Self { conv1: conv(d1, d1 / 2), bn: BatchNorm2dConfig::new(d1 / 2).init(device), conv2: conv(d1 / 2, d1) }
    }

    /// conv–BN–GELU–conv. `[b, d1, g, g] -> [b, d1, g, g]`. BatchNorm uses batch statistics
    /// on an autodiff backend (training) and running statistics otherwise.
    pub fn features(&self, refined: Tensor<B, 4>) -> Tensor<B, 4> {
        conv2d(&self.conv2, gelu(self.bn.forward(conv2d(&self.conv1, refined))))
    }

    /// # Shapes
    /// - refined: `[b, d1, g, g]`; t_sent: `[b, d1]`; logit_scale, logit_bias: `[1]`
    /// - output: dense prompt logits `[b, 1, m, m]`
    pub fn forward(
        &self,
        refined: Tensor<B, 4>,
        t_sent: Tensor<B, 2>,
        logit_scale: Tensor<B, 1>,
        logit_bias: Tensor<B, 1>,
        mask_size: usize,
    ) -> Tensor<B, 4> {
        let f = self.features(refined);
        let cos = cosine_upsampled(f, t_sent, mask_size);
        let scale = logit_scale.exp().reshape([1, 1, 1, 1]);
        cos * scale + logit_bias.reshape([1, 1, 1, 1])
    }
}

/// `cos(bilinear_ac(F)(p), t)` for every output pixel p, without materialising `bilinear_ac(F)`.
///
/// `[b, c, g, g]`, `[b, c]` → `[b, 1, m, m]`
pub fn cosine_upsampled<B: Backend>(f: Tensor<B, 4>, t: Tensor<B, 2>, m: usize) -> Tensor<B, 4> {
    let [b, c, gh, gw] = f.dims();
    let device = f.device();
    let n = gh * gw;
    let t = t.clone() / t.powi_scalar(2).sum_dim(1).sqrt().clamp_min(NORM_EPS);
    // Cells as rows, channels last: `[b, g·g, c]`. Every neighbour product below is then a
    // product of two row ranges of one buffer (row r with row r + s), which the CPU backends add
    // up along contiguous memory instead of walking channel planes with strides.
    let rows = crate::nn::contiguous(f.reshape([b, c, n]).swap_dims(1, 2));
    // One image (inference) as 2-D rows: burn's CPU backends count the stride of a size-1 batch
    // dimension, so only there is a row range a contiguous slice.
    let rows2 = (b == 1).then(|| rows.clone().reshape([n, c]));
    // `pair(s)[y, x] = <F_r, F_{r+s}>` for the cell r = y·gw + x (0 where r + s is past the end;
    // callers keep only the entries whose partner is the intended neighbour). `[b, gh, gw]`
    let pair = |s: usize| -> Tensor<B, 3> {
        let p = match &rows2 {
            Some(r) => (r.clone().slice([0..n - s, 0..c]) * r.clone().slice([s..n, 0..c])).sum_dim(1).unsqueeze::<3>(),
            None => (rows.clone().slice([0..b, 0..n - s, 0..c]) * rows.clone().slice([0..b, s..n, 0..c])).sum_dim(2),
        };
        let p = if s > 0 { Tensor::cat(vec![p, Tensor::zeros([b, s, 1], &device)], 1) } else { p };
        p.reshape([b, gh, gw])
    };
    // Per-cell dot products with t: numerator at g×g, upsampled linearly.
    let dot = (rows.clone() * t.reshape([b, 1, c])).sum_dim(2).reshape([b, 1, gh, gw]);
    let num = bilinear(dot, [m, m], true);

    // Squared norm of the interpolated feature: for output pixel with row weights (1-ty, ty) over
    // rows (y0, y1) and column weights (1-tx, tx) over (x0, x1):
    // ‖Σ w_k F_k‖² = Σ_k w_k² G_kk + 2 Σ_{k<l} w_k w_l G_kl, with G the Gram of the 4 corners.
    // Pairs: horizontal (x, x+1), vertical (y, y+1), and the two diagonals.
    let grid = |p: Tensor<B, 3>, ys: std::ops::Range<usize>, xs: std::ops::Range<usize>| -> Tensor<B, 4> {
        p.slice([0..b, ys, xs]).unsqueeze_dim(1)
    };
    let sq = grid(pair(0), 0..gh, 0..gw); // [b,1,gh,gw]   G(y,x),(y,x)
    let hx = if gw > 1 { Some(grid(pair(1), 0..gh, 0..gw - 1)) } else { None }; // [b,1,gh,gw-1]
    let vy = if gh > 1 { Some(grid(pair(gw), 0..gh - 1, 0..gw)) } else { None }; // [b,1,gh-1,gw]
    let (d1, d2) = if gh > 1 && gw > 1 {
        // (y,x)·(y+1,x+1) is rows r, r+gw+1; (y,x+1)·(y+1,x) is rows r+1, r+1+(gw-1).
        (Some(grid(pair(gw + 1), 0..gh - 1, 0..gw - 1)), Some(grid(pair(gw - 1), 0..gh - 1, 1..gw)))
    } else {
        (None, None)
    };

    // Interpolation weights as dense matrices: out = Wy · map · Wxᵀ per term.
    let (wy0, wy1, ry) = axis_weights(gh, m);
    let (wx0, wx1, rx) = axis_weights(gw, m);
    let mat = |w: &[f32], rows: usize, cols: usize| -> Tensor<B, 2> {
        Tensor::from_data(TensorData::new(w.to_vec(), [rows, cols]), &device)
    };
    // Selection matrices: A0[o, i] = weight of source index i as the lower neighbour of o, etc.
    let ay0 = mat(&wy0, m, gh);
    let ay1 = mat(&wy1, m, gh);
    let ax0 = mat(&wx0, m, gw);
    let ax1 = mat(&wx1, m, gw);
    let _ = (ry, rx);
    let apply = |map: Tensor<B, 4>, ay: &Tensor<B, 2>, ax: &Tensor<B, 2>| -> Tensor<B, 4> {
        // [b,1,h,w] -> [b,1,m,m] = ay · map · axᵀ
        let [bb, _, h, w] = map.dims();
        let map = map.reshape([bb, h, w]);
        let out = ay.clone().unsqueeze::<3>().matmul(map).matmul(ax.clone().transpose().unsqueeze::<3>());
        out.reshape([bb, 1, m, m])
    };
    // Diagonal terms: Σ_k w_k² G_kk = (ay0²+ay1²) sq (ax0²+ax1²)ᵀ … expanded per corner.
    let sq2 = |a: &Tensor<B, 2>| a.clone().powi_scalar(2);
    let mut norm2 = apply(sq.clone(), &sq2(&ay0), &sq2(&ax0))
        + apply(sq.clone(), &sq2(&ay0), &sq2(&ax1))
        + apply(sq.clone(), &sq2(&ay1), &sq2(&ax0))
        + apply(sq, &sq2(&ay1), &sq2(&ax1));
    // Cross terms between corners. A horizontal pair (y,x)-(y,x+1) contributes
    // 2·wy²·wx0·wx1 · hx(y,x): use the x weights shifted so column i of hx pairs source x=i, i+1.
    let prod = |a: &Tensor<B, 2>, b2: &Tensor<B, 2>| a.clone() * b2.clone();
    let pair_x = prod(&ax0.clone().slice([0..m, 0..gw - 1]), &ax1.clone().slice([0..m, 1..gw]));
    let pair_y = prod(&ay0.clone().slice([0..m, 0..gh - 1]), &ay1.clone().slice([0..m, 1..gh]));
    if let Some(hx) = hx {
        norm2 = norm2 + (apply(hx.clone(), &sq2(&ay0), &pair_x) + apply(hx, &sq2(&ay1), &pair_x)) * 2.0;
    }
    if let Some(vy) = vy {
        norm2 = norm2 + (apply(vy.clone(), &pair_y, &sq2(&ax0)) + apply(vy, &pair_y, &sq2(&ax1))) * 2.0;
    }
    if let (Some(d1), Some(d2)) = (d1, d2) {
        // (y,x)-(y+1,x+1): wy0(y) wy1(y+1) wx0(x) wx1(x+1) ; (y,x+1)-(y+1,x): wy0(y) wy1(y+1) wx1(x+1) wx0(x)
        norm2 = norm2 + (apply(d1, &pair_y, &pair_x) + apply(d2, &pair_y, &pair_x)) * 2.0;
    }
    num / norm2.clamp_min(0.0).sqrt().clamp_min(NORM_EPS)
}

/// Bilinear `align_corners=True` weights along one axis as two `[m, g]` matrices: the weight of
/// the lower neighbour (`i0 = floor(s)`) and of the upper one (`i0 + 1`), where the upper index
/// is clamped at the border with weight 0.
fn axis_weights(g: usize, m: usize) -> (Vec<f32>, Vec<f32>, ()) {
    let mut w0 = vec![0f32; m * g];
    let mut w1 = vec![0f32; m * g];
    for o in 0..m {
        let s = if m > 1 { o as f32 * (g as f32 - 1.0) / (m as f32 - 1.0) } else { 0.0 };
        let i0 = (s.floor() as usize).min(g - 1);
        let t = s - i0 as f32;
        if i0 + 1 < g {
            w0[o * g + i0] = 1.0 - t;
            w1[o * g + i0 + 1] = t;
        } else {
            w0[o * g + i0] = 1.0;
        }
    }
    (w0, w1, ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::ElementConversion;

    /// The Gram trick against the materialised upsampling, on a non-square grid, batches of 1
    /// (inference) and 2.
    fn gram_trick_on<B: Backend>() {
        let device = Default::default();
        for b in [1, 2] {
            let f = Tensor::<B, 4>::random([b, 5, 3, 4], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
            let t = Tensor::<B, 2>::random([b, 5], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
            let m = 7;
            let fast = cosine_upsampled(f.clone(), t.clone(), m);
            let up = bilinear(f, [m, m], true);
            let up = up.clone() / up.powi_scalar(2).sum_dim(1).sqrt().clamp_min(NORM_EPS);
            let tn = t.clone() / t.powi_scalar(2).sum_dim(1).sqrt();
            let slow = (up * tn.reshape([b, 5, 1, 1])).sum_dim(1);
            let diff = (fast - slow).abs().max().into_scalar().elem::<f32>();
            assert!(diff < 1e-5, "batch {b}: max diff {diff}");
        }
    }

    #[test]
    fn gram_trick_equals_materialised_upsampling() {
        gram_trick_on::<burn::backend::NdArray<f32>>();
        // The CPU backend users get, through the project's layout kernels.
        gram_trick_on::<burn_flex::Flex>();
    }
}
