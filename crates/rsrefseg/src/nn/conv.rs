//! 2-D convolution as im2col + one matrix product.
//!
//! Why: burn-ndarray (the CPU backend) runs `conv2d` and, worse, the transposed convolution that
//! autodiff uses for the input gradient as scalar loops with per-element indexing. Training the
//! `nano` model spent about half of every step there. Written as reshapes, slices and a matmul,
//! the same convolution runs on the GEMM kernels, and autodiff differentiates it through those
//! ops (no transposed-convolution kernel is needed at all). The numbers are the same up to the
//! order of the additions.
//!
//! Every tap `(kh, kw)` of a stride-`s` convolution reads the padded input at rows
//! `kh + s·i`; writing `kh = s·q + r`, that is row `q + i` of phase `r` once the padded input is
//! reshaped to `[n, c, hp/s, s, wp/s, s]`, so strided taps need no strided slicing.

use burn::nn::conv::Conv2d;
use burn::nn::PaddingConfig2d;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// Apply a burn [`Conv2d`] layer through [`conv2d_gemm`] when it is a plain convolution
/// (dilation 1, one group, `Valid` or explicit padding); other layers use burn's kernel.
///
/// `[n, c_in, h, w] -> [n, c_out, h_out, w_out]`
pub fn conv2d<B: Backend>(layer: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let padding = match layer.padding {
        PaddingConfig2d::Valid => Some([0, 0, 0, 0]),
        PaddingConfig2d::Explicit(top, left, bottom, right) => Some([top, left, bottom, right]),
        PaddingConfig2d::Same => None,
    };
    match padding {
        Some(padding) if layer.dilation == [1, 1] && layer.groups == 1 => conv2d_gemm(
            x,
            layer.weight.val(),
            layer.bias.as_ref().map(|b| b.val()),
            layer.stride,
            padding,
        ),
        _ => layer.forward(x),
    }
}

/// Cross-correlation with zero padding `[top, left, bottom, right]`, dilation 1, one group.
///
/// `x: [n, c, h, w]`, `weight: [o, c, kh, kw]`, `bias: [o]` → `[n, o, h_out, w_out]` with
/// `h_out = (h + top + bottom - kh) / stride + 1`.
pub fn conv2d_gemm<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    stride: [usize; 2],
    padding: [usize; 4],
) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    let [o, c_w, kh, kw] = weight.dims();
    assert_eq!(c, c_w, "conv2d: input has {c} channels, weight expects {c_w}");
    let [sh, sw] = stride;
    let [top, left, bottom, right] = padding;
    let (hp, wp) = (h + top + bottom, w + left + right);
    assert!(hp >= kh && wp >= kw, "conv2d: kernel {kh}×{kw} larger than padded input {hp}×{wp}");
    let (ho, wo) = ((hp - kh) / sh + 1, (wp - kw) / sw + 1);

    let pointwise = kh == 1 && kw == 1 && sh == 1 && sw == 1 && padding == [0, 0, 0, 0];
    // The CPU backend gathers the columns in one pass (also under autodiff, with its scatter-add
    // backward); the composed gathers below serve the other backends.
    let x = if pointwise {
        x
    } else {
        let geometry = rsrefseg_kernels::Im2col { kernel: [kh, kw], stride, padding: [top, left, bottom, right] };
        match rsrefseg_kernels::im2col(x, geometry) {
            Ok(cols) => return with_bias(weight.reshape([1, o, c * kh * kw]).matmul(cols).reshape([n, o, ho, wo]), bias),
            Err(x) => x,
        }
    };
    let y = if pointwise {
        // Pointwise: (o, c) · (n, c, h·w).
        weight.reshape([1, o, c]).matmul(x.reshape([n, c, h * w]))
    } else if kh == sh && kw == sw && padding == [0, 0, 0, 0] && h % kh == 0 && w % kw == 0 {
        // Non-overlapping patches (ViT patch embedding): a pure reshape.
        // (n, c, ho, kh, wo, kw) -> (n, c, kh, kw, ho, wo) -> (n, c·kh·kw, ho·wo)
        let cols = x
            .reshape([n, c, ho, kh, wo, kw])
            .permute([0, 1, 3, 5, 2, 4])
            .reshape([n, c * kh * kw, ho * wo]);
        weight.reshape([1, o, c * kh * kw]).matmul(cols)
    } else {
        // Padded input, rounded up so that it splits into whole stride phases and every tap's
        // window `q .. q + ho` fits: rows needed = s·((k-1)/s + ho).
        let rows = sh * ((kh - 1) / sh + ho);
        let cols_needed = sw * ((kw - 1) / sw + wo);
        let (hq, wq) = (rows.max(hp), cols_needed.max(wp));
        let (hq, wq) = (hq.div_ceil(sh) * sh, wq.div_ceil(sw) * sw);
        let xp = if (hq, wq) == (h, w) {
            x
        } else {
            Tensor::zeros([n, c, hq, wq], &x.device()).slice_assign([0..n, 0..c, top..top + h, left..left + w], x)
        };
        let phases = xp.reshape([n, c, hq / sh, sh, wq / sw, sw]);
        let mut taps = Vec::with_capacity(kh * kw);
        for dy in 0..kh {
            let (q, r) = (dy / sh, dy % sh);
            for dx in 0..kw {
                let (q2, r2) = (dx / sw, dx % sw);
                let tap = phases.clone().slice([0..n, 0..c, q..q + ho, r..r + 1, q2..q2 + wo, r2..r2 + 1]);
                taps.push(tap.reshape([n, c, 1, ho * wo]));
            }
        }
        // (n, c, kh·kw, ho·wo) in the weight's (c, kh, kw) order.
        let cols = Tensor::cat(taps, 2).reshape([n, c * kh * kw, ho * wo]);
        weight.reshape([1, o, c * kh * kw]).matmul(cols)
    };
    with_bias(y.reshape([n, o, ho, wo]), bias)
}

/// `y: [n, o, ho, wo]` plus the per-channel bias.
fn with_bias<B: Backend>(y: Tensor<B, 4>, bias: Option<Tensor<B, 1>>) -> Tensor<B, 4> {
    match bias {
        Some(bias) => super::channel_affine(y, None, Some(bias)),
        None => y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::module::conv2d as burn_conv2d;
    use burn::tensor::ops::ConvOptions;
    use burn::tensor::Distribution;

    type B = NdArray<f32>;

    /// Against burn's own kernel on every branch: pointwise, patch, padded strided, odd sizes.
    #[test]
    fn matches_burn_conv2d() {
        let device = Default::default();
        let cases: &[([usize; 4], [usize; 4], [usize; 2], [usize; 4])] = &[
            ([2, 5, 7, 6], [4, 5, 1, 1], [1, 1], [0, 0, 0, 0]),
            ([2, 3, 16, 32], [6, 3, 8, 8], [8, 8], [0, 0, 0, 0]),
            ([1, 3, 33, 29], [5, 3, 7, 7], [4, 4], [3, 3, 3, 3]),
            ([2, 4, 9, 11], [3, 4, 3, 3], [1, 1], [1, 1, 1, 1]),
            ([1, 2, 10, 10], [3, 2, 2, 2], [2, 2], [0, 0, 0, 0]),
            ([1, 2, 9, 8], [3, 2, 3, 2], [2, 1], [1, 0, 2, 1]),
        ];
        for &(xs, ws, stride, pad) in cases {
            let x = Tensor::<B, 4>::random(xs, Distribution::Normal(0.0, 1.0), &device);
            let wt = Tensor::<B, 4>::random(ws, Distribution::Normal(0.0, 1.0), &device);
            let b = Tensor::<B, 1>::random([ws[0]], Distribution::Normal(0.0, 1.0), &device);
            let ours = conv2d_gemm(x.clone(), wt.clone(), Some(b.clone()), stride, pad);
            // burn's kernel pads symmetrically: pad explicitly for the asymmetric case.
            let [top, left, bottom, right] = pad;
            let xp = Tensor::zeros([xs[0], xs[1], xs[2] + top + bottom, xs[3] + left + right], &device)
                .slice_assign([0..xs[0], 0..xs[1], top..top + xs[2], left..left + xs[3]], x);
            let theirs = burn_conv2d(xp, wt, Some(b), ConvOptions::new(stride, [0, 0], [1, 1], 1));
            assert_eq!(ours.dims(), theirs.dims(), "{xs:?} {ws:?}");
            let diff = (ours - theirs).abs().max().into_scalar();
            assert!(diff < 1e-4, "{xs:?} {ws:?} {stride:?} {pad:?}: max diff {diff}");
        }
    }
}
