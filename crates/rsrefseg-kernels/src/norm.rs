//! LayerNorm over the channels of a channels-first map (SAM's LayerNorm2d), in one pass over
//! blocks of pixels: burn composes it from two reductions along the strided channel dimension
//! and four broadcast element-wise ops. Inference only; under autodiff the caller composes it.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use burn_flex::FlexTensor;

use crate::{flex_ref, for_each_task, from_flex, SendPtr};

/// Pixels per task (per image).
const PIXELS: usize = 256;

/// `(x − mean_c x) / √(var_c x + eps) · weight[c] + bias[c]` for `x: [n, c, h, w]`, with the
/// biased variance of the centred values (as the reference computes it); `Err(x)` when the
/// kernels do not serve plain `x` (autodiff included).
pub fn layer_norm_channels<B: Backend>(
    x: Tensor<B, 4>,
    weight: &Tensor<B, 1>,
    bias: &Tensor<B, 1>,
    eps: f64,
) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    let [n, c, h, w] = x.dims();
    let (Some(xt), Some(wt), Some(bt)) = (flex_ref(&x), flex_ref(weight), flex_ref(bias)) else { return Err(x) };
    if weight.dims()[0] != c || bias.dims()[0] != c || c == 0 {
        return Err(x);
    }
    drop(x);
    let p = h * w;
    let xt = xt.to_contiguous();
    let (wt, bt) = (wt.to_contiguous(), bt.to_contiguous());
    let xs: &[f32] = &xt.storage()[..n * c * p];
    let (ws, bs): (&[f32], &[f32]) = (&wt.storage()[..c], &bt.storage()[..c]);
    let mut out = vec![0.0f32; n * c * p];
    let dst = SendPtr(out.as_mut_ptr());
    let chunks = p.div_ceil(PIXELS);
    let inv_c = 1.0 / c as f32;
    for_each_task(n * chunks, |task| {
        let dst = dst;
        let (ni, ch) = (task / chunks, task % chunks);
        let (p0, p1) = (ch * PIXELS, ((ch + 1) * PIXELS).min(p));
        let len = p1 - p0;
        let plane = |ci: usize| &xs[(ni * c + ci) * p + p0..][..len];
        let mut mean = [0.0f32; PIXELS];
        for ci in 0..c {
            for (m, &v) in mean[..len].iter_mut().zip(plane(ci)) {
                *m += v;
            }
        }
        mean[..len].iter_mut().for_each(|m| *m *= inv_c);
        let mut var = [0.0f32; PIXELS];
        for ci in 0..c {
            for ((s, &m), &v) in var[..len].iter_mut().zip(&mean[..len]).zip(plane(ci)) {
                *s += (v - m) * (v - m);
            }
        }
        let mut rstd = [0.0f32; PIXELS];
        for (r, &s) in rstd[..len].iter_mut().zip(&var[..len]) {
            *r = 1.0 / (s * inv_c + eps as f32).sqrt();
        }
        for ci in 0..c {
            // SAFETY: pixels p0..p1 of every channel of image ni belong to this task.
            let o = unsafe { std::slice::from_raw_parts_mut(dst.0.add((ni * c + ci) * p + p0), len) };
            let (wc, bc) = (ws[ci], bs[ci]);
            for (((y, &v), &m), &r) in o.iter_mut().zip(plane(ci)).zip(&mean[..len]).zip(&rstd[..len]) {
                *y = (v - m) * r * wc + bc;
            }
        }
    });
    Ok(from_flex(FlexTensor::from_data(burn::tensor::TensorData::new(out, [n, c, h, w]))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{max_abs_diff, random};

    #[test]
    fn equals_the_composed_layer_norm() {
        let x = random([2, 16, 9, 37], 50) * 3.0 + 1.0;
        let (wt, bt) = (random([16], 51), random([16], 52));
        let u = x.clone().mean_dim(1);
        let d = x.clone() - u;
        let s = d.clone().powi_scalar(2).mean_dim(1);
        let want = d / (s + 1e-6).sqrt() * wt.clone().reshape([1, 16, 1, 1]) + bt.clone().reshape([1, 16, 1, 1]);
        let got = layer_norm_channels(x.clone(), &wt, &bt, 1e-6).ok().expect("served");
        assert!(max_abs_diff(got, want.clone()) < 1e-5);
        // A strided input gives the same.
        let strided = layer_norm_channels(x.permute([0, 2, 3, 1]).permute([0, 3, 1, 2]), &wt, &bt, 1e-6).ok().unwrap();
        assert!(max_abs_diff(strided, want) < 1e-5);
    }
}
