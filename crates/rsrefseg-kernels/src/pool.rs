//! Max-pooling of a channels-last map with kernel = stride and no padding (Hiera's query
//! pooling). burn's `max_pool2d` wants channels-first: the permutes around it cost two copies,
//! and Flex's pooling walks one channel plane at a time. Here each output pixel takes the
//! element-wise maximum of its window's channel vectors, which are contiguous.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use burn_flex::FlexTensor;

use std::sync::Arc;

use crate::gelu::owned_contiguous;
use crate::{flex_ref, for_each_task, from_flex, grad, view_fits, SendPtr};

/// `[b, h, w, c]` → `[b, ⌊h/sₕ⌋, ⌊w/s_w⌋, c]`, the maximum over each `sₕ × s_w` window; `Err(x)`
/// when the kernels do not serve `x` or its channels are not contiguous. Under autodiff the
/// gradient goes to each window's (first) maximum.
pub fn max_pool_nhwc<B: Backend>(x: Tensor<B, 4>, s: [usize; 2]) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    if grad::serves::<B>() {
        let Some(t) = grad::ad_ref(&x) else { return Err(x) };
        let dims = x.dims();
        let Some((y, argmax)) = pool(&t.primitive, s) else { return Err(x) };
        drop(t);
        let t = grad::into_ad(x)?;
        let argmax = Arc::new(argmax);
        let out = grad::unary_node(t, move |_| y, move |_, _| (dims, argmax), |(dims, argmax), g| unpool(g, *dims, argmax));
        return Ok(grad::from_ad(out));
    }
    let Some(t) = flex_ref(&x) else { return Err(x) };
    match pool(&t, s) {
        Some((y, _)) => Ok(from_flex(y)),
        None => Err(x),
    }
}

/// The pooled map and, per output element, the flat index of its maximum in the contiguous
/// `[b, h, w, c]` input.
fn pool(t: &FlexTensor, [sh, sw]: [usize; 2]) -> Option<(FlexTensor, Vec<u32>)> {
    let layout = t.layout();
    let [b, h, w, c] = [layout.shape()[0], layout.shape()[1], layout.shape()[2], layout.shape()[3]];
    let st = layout.strides();
    let (ho, wo) = (h / sh.max(1), w / sw.max(1));
    let src: &[f32] = t.storage();
    if sh == 0 || sw == 0 || ho == 0 || wo == 0 || st[3] != 1 || b * h * w * c > u32::MAX as usize {
        return None;
    }
    if !view_fits(layout.shape(), st, layout.start_offset(), src.len()) {
        return None;
    }
    let (s0, s1, s2) = (st[0] as usize, st[1] as usize, st[2] as usize);
    let offset = layout.start_offset();
    let mut out = vec![0.0f32; b * ho * wo * c];
    let mut idx = vec![0u32; b * ho * wo * c];
    let (dst, dst_idx) = (SendPtr(out.as_mut_ptr()), SendPtr(idx.as_mut_ptr()));
    // One task per output row.
    for_each_task(b * ho, |task| {
        let (dst, dst_idx) = (dst, dst_idx);
        let (bi, oy) = (task / ho, task % ho);
        for ox in 0..wo {
            let at_out = ((bi * ho + oy) * wo + ox) * c;
            // SAFETY: output pixel (bi, oy, ox) is written by this task only.
            let (o, oi) = unsafe {
                (std::slice::from_raw_parts_mut(dst.0.add(at_out), c), std::slice::from_raw_parts_mut(dst_idx.0.add(at_out), c))
            };
            o.fill(f32::NEG_INFINITY);
            for dy in 0..sh {
                for dx in 0..sw {
                    let (iy, ix) = (oy * sh + dy, ox * sw + dx);
                    let at = offset + bi * s0 + iy * s1 + ix * s2;
                    let flat = (((bi * h + iy) * w + ix) * c) as u32;
                    let row = &src[at..at + c];
                    for (ch, ((m, mi), &v)) in o.iter_mut().zip(oi.iter_mut()).zip(row).enumerate() {
                        if v > *m || v.is_nan() || (dy == 0 && dx == 0) {
                            *m = v;
                            *mi = flat + ch as u32;
                        }
                    }
                }
            }
        }
    });
    Some((FlexTensor::from_data(burn::tensor::TensorData::new(out, [b, ho, wo, c])), idx))
}

/// The backward of [`pool`]: each output gradient added at its window's maximum (windows do not
/// overlap, so every input element receives at most one).
fn unpool(g: FlexTensor, [b, h, w, c]: [usize; 4], argmax: &[u32]) -> FlexTensor {
    let g = owned_contiguous(g);
    let gs: &[f32] = &g.storage()[..argmax.len()];
    let mut out = vec![0.0f32; b * h * w * c];
    for (&i, &v) in argmax.iter().zip(gs) {
        out[i as usize] += v;
    }
    FlexTensor::from_data(burn::tensor::TensorData::new(out, [b, h, w, c]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::random;
    use burn::tensor::module::max_pool2d;

    #[test]
    fn equals_burns_channels_first_pooling() {
        for (shape, s) in [([2, 8, 6, 5], [2, 2]), ([1, 7, 9, 16], [2, 2]), ([1, 9, 9, 3], [3, 3])] {
            let x = random(shape, 7);
            let want = max_pool2d(x.clone().permute([0, 3, 1, 2]), s, s, [0, 0], [1, 1], false).permute([0, 2, 3, 1]);
            let got = max_pool_nhwc(x.clone(), s).ok().unwrap();
            assert_eq!(got.into_data(), (want * 1.0).into_data());
            // A strided view (every other channel block of a wider map) gives the same.
            let wide = Tensor::cat(vec![x.clone(), x.clone() * 2.0], 3);
            let view = wide.narrow(3, 0, shape[3]);
            assert_eq!(max_pool_nhwc(view, s).ok().unwrap().into_data(), max_pool_nhwc(x, s).ok().unwrap().into_data());
        }
    }

    #[test]
    fn under_autodiff_the_gradient_goes_to_the_maxima() {
        type A = crate::grad::Ad;
        let x0 = random([2, 9, 8, 6], 30);
        let r0 = random([2, 4, 4, 6], 31);
        let grads = |fast: bool| {
            let x = Tensor::<A, 4>::from_inner(x0.clone()).require_grad();
            let y = if fast {
                max_pool_nhwc(x.clone(), [2, 2]).ok().expect("served")
            } else {
                max_pool2d(x.clone().permute([0, 3, 1, 2]), [2, 2], [2, 2], [0, 0], [1, 1], false).permute([0, 2, 3, 1])
            };
            let g = (y.clone() * Tensor::from_inner(r0.clone())).sum().backward();
            (y.inner(), x.grad(&g).unwrap())
        };
        let ((y1, g1), (y0, g0)) = (grads(true), grads(false));
        assert_eq!(y1.into_data(), (y0 * 1.0).into_data());
        assert_eq!(g1.into_data(), (g0 * 1.0).into_data());
    }
}
