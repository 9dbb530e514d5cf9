//! Resampling exactly as PyTorch's `F.interpolate` does it.
//!
//! Bilinear and nearest run on the backend (`burn::tensor::module::interpolate` follows PyTorch's
//! coordinate rules). Bicubic is only used for constant tables (Hiera's position embedding, SigLIP
//! position rows at a non-native size), so it runs once on the host, in f32, with PyTorch's
//! `a = -0.75` kernel and border-clamped taps; it must never run per call on WebGPU.

use burn::tensor::backend::Backend;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::Tensor;

/// Bilinear resize of an NCHW tensor (no antialias).
///
/// On an autodiff backend the resize is written as two matrix products with the interpolation
/// weights (`Wy · X · Wxᵀ`), which every backend can differentiate (burn's CPU backend has no
/// backward for its bilinear kernel); inference uses the backend's kernel, which is O(output).
pub fn bilinear<B: Backend>(x: Tensor<B, 4>, size: [usize; 2], align_corners: bool) -> Tensor<B, 4> {
    let [b, c, h, w] = x.dims();
    if [h, w] == size {
        return x;
    }
    let device = x.device();
    if B::ad_enabled(&device) {
        let wy = linear_weights::<B>(h, size[0], align_corners, &device); // [oh, h]
        let wx = linear_weights::<B>(w, size[1], align_corners, &device); // [ow, w]
        let y = x.reshape([b * c, h, w]);
        let y = wy.unsqueeze::<3>().matmul(y).matmul(wx.transpose().unsqueeze::<3>());
        return y.reshape([b, c, size[0], size[1]]);
    }
    // The project's CPU kernel (parallel over output rows, same values); the backend's otherwise.
    match rsrefseg_kernels::bilinear(x, size, align_corners) {
        Ok(y) => y,
        Err(x) => interpolate(x, size, InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(align_corners)),
    }
}

/// `[out, in]` matrix of PyTorch's linear interpolation weights along one axis
/// (`area_pixel_compute_source_index`: half-pixel centres clamped at 0 unless `align_corners`).
pub fn linear_weights<B: Backend>(inp: usize, out: usize, align_corners: bool, device: &B::Device) -> Tensor<B, 2> {
    let mut w = vec![0f32; out * inp];
    for o in 0..out {
        let s = if align_corners {
            if out > 1 { o as f32 * (inp as f32 - 1.0) / (out as f32 - 1.0) } else { 0.0 }
        } else {
            ((o as f32 + 0.5) * (inp as f32 / out as f32) - 0.5).max(0.0)
        };
        let i0 = (s.floor() as usize).min(inp - 1);
        let i1 = (i0 + 1).min(inp - 1);
        let t = s - i0 as f32;
        w[o * inp + i0] += 1.0 - t;
        w[o * inp + i1] += t;
    }
    Tensor::from_data(burn::tensor::TensorData::new(w, [out, inp]), device)
}

/// Nearest-neighbour resize (PyTorch `mode="nearest"`: `src = floor(dst · in / out)`).
pub fn nearest<B: Backend>(x: Tensor<B, 4>, size: [usize; 2]) -> Tensor<B, 4> {
    let [_, _, h, w] = x.dims();
    if [h, w] == size {
        return x;
    }
    interpolate(x, size, InterpolateOptions::new(InterpolateMode::Nearest).with_align_corners(false))
}

fn cubic_weights(t: f32) -> [f32; 4] {
    // PyTorch upsample_bicubic2d: A = -0.75.
    const A: f32 = -0.75;
    let c1 = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let c2 = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [c2(t + 1.0), c1(t), c1(1.0 - t), c2(2.0 - t)]
}

/// Source coordinate of output index `dst` (PyTorch `area_pixel_compute_source_index` for cubic:
/// never clamped).
fn source_coord(dst: usize, in_size: usize, out_size: usize, align_corners: bool) -> f32 {
    if align_corners {
        if out_size > 1 {
            dst as f32 * (in_size as f32 - 1.0) / (out_size as f32 - 1.0)
        } else {
            0.0
        }
    } else {
        let scale = in_size as f32 / out_size as f32;
        (dst as f32 + 0.5) * scale - 0.5
    }
}

/// Bicubic resize of a host `[c, h, w]` array to `[c, oh, ow]`.
pub fn bicubic_host(
    data: &[f32],
    [c, h, w]: [usize; 3],
    [oh, ow]: [usize; 2],
    align_corners: bool,
) -> Vec<f32> {
    assert_eq!(data.len(), c * h * w, "bicubic_host: data does not match its shape");
    if [h, w] == [oh, ow] {
        return data.to_vec();
    }
    let taps = |out: usize, inp: usize| -> Vec<([usize; 4], [f32; 4])> {
        (0..out)
            .map(|d| {
                let s = source_coord(d, inp, out, align_corners);
                let f = s.floor();
                let t = s - f;
                let f = f as isize;
                let idx = [-1isize, 0, 1, 2]
                    .map(|o| (f + o).clamp(0, inp as isize - 1) as usize);
                (idx, cubic_weights(t))
            })
            .collect()
    };
    let ty = taps(oh, h);
    let tx = taps(ow, w);
    let mut out = vec![0f32; c * oh * ow];
    for ch in 0..c {
        let src = &data[ch * h * w..(ch + 1) * h * w];
        for (y, (iy, wy)) in ty.iter().enumerate() {
            for (x, (ix, wx)) in tx.iter().enumerate() {
                let mut acc = 0f32;
                for (a, &yy) in iy.iter().enumerate() {
                    let mut row = 0f32;
                    for (b, &xx) in ix.iter().enumerate() {
                        row += wx[b] * src[yy * w + xx];
                    }
                    acc += wy[a] * row;
                }
                out[ch * oh * ow + y * ow + x] = acc;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilinear_matrix_form_equals_the_kernel() {
        type B = burn::backend::NdArray<f32>;
        type AB = burn::backend::Autodiff<B>;
        let device = Default::default();
        let x = Tensor::<B, 4>::random([2, 3, 5, 7], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
        for (size, ac) in [([11, 4], false), ([11, 4], true), ([2, 20], false), ([3, 3], true)] {
            let kernel = bilinear(x.clone(), size, ac);
            let matrix = bilinear(Tensor::<AB, 4>::from_inner(x.clone()), size, ac).inner();
            let d = (kernel - matrix).abs().max().into_scalar();
            assert!(d < 1e-5, "{size:?} {ac}: {d}");
        }
    }

    #[test]
    fn bicubic_identity_and_constant() {
        let data: Vec<f32> = (0..12).map(|v| v as f32).collect();
        assert_eq!(bicubic_host(&data, [1, 3, 4], [3, 4], false), data);
        // Cubic weights sum to one: a constant map stays constant at any size.
        let ones = vec![2.5f32; 9];
        for v in bicubic_host(&ones, [1, 3, 3], [7, 5], false) {
            assert!((v - 2.5).abs() < 1e-5);
        }
    }

    #[test]
    fn bicubic_matches_pytorch_1d() {
        // torch.nn.functional.interpolate(torch.tensor([[[[0.,1.,4.,9.]]]]), size=(1,8),
        //   mode='bicubic', align_corners=False)
        let data = [0f32, 1.0, 4.0, 9.0];
        let out = bicubic_host(&data, [1, 1, 4], [1, 8], false);
        let expected = [-0.10546875f32, 0.12109375, 0.45703125, 1.609375, 2.828125, 5.449219, 7.9726563, 9.527344];
        for (a, b) in out.iter().zip(expected) {
            assert!((a - b).abs() < 1e-4, "{out:?}");
        }
    }
}
