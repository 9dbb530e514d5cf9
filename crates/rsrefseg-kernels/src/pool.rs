//! Max-pooling of a channels-last map with kernel = stride and no padding (Hiera's query
//! pooling). burn's `max_pool2d` wants channels-first: the permutes around it cost two copies,
//! and Flex's pooling walks one channel plane at a time. Here each output pixel takes the
//! element-wise maximum of its window's channel vectors, which are contiguous.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use burn_flex::FlexTensor;

use crate::{flex_ref, for_each_task, from_flex, view_fits, SendPtr};

/// `[b, h, w, c]` → `[b, ⌊h/sₕ⌋, ⌊w/s_w⌋, c]`, the maximum over each `sₕ × s_w` window; `Err(x)`
/// when the kernels do not serve `x` or its channels are not contiguous.
pub fn max_pool_nhwc<B: Backend>(x: Tensor<B, 4>, [sh, sw]: [usize; 2]) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    let Some(t) = flex_ref(&x) else { return Err(x) };
    let layout = t.layout();
    let [b, h, w, c] = [layout.shape()[0], layout.shape()[1], layout.shape()[2], layout.shape()[3]];
    let st = layout.strides();
    let (ho, wo) = (h / sh.max(1), w / sw.max(1));
    let src: &[f32] = t.storage();
    if sh == 0 || sw == 0 || ho == 0 || wo == 0 || st[3] != 1 || !view_fits(layout.shape(), st, layout.start_offset(), src.len()) {
        return Err(x);
    }
    let (s0, s1, s2) = (st[0] as usize, st[1] as usize, st[2] as usize);
    let offset = layout.start_offset();
    let mut out = vec![0.0f32; b * ho * wo * c];
    let dst = SendPtr(out.as_mut_ptr());
    // One task per output row.
    for_each_task(b * ho, |task| {
        let dst = dst;
        let (bi, oy) = (task / ho, task % ho);
        for ox in 0..wo {
            // SAFETY: output pixel (bi, oy, ox) is written by this task only.
            let o = unsafe { std::slice::from_raw_parts_mut(dst.0.add(((bi * ho + oy) * wo + ox) * c), c) };
            o.fill(f32::NEG_INFINITY);
            for dy in 0..sh {
                for dx in 0..sw {
                    let at = offset + bi * s0 + (oy * sh + dy) * s1 + (ox * sw + dx) * s2;
                    let row = &src[at..at + c];
                    for (m, &v) in o.iter_mut().zip(row) {
                        *m = if v > *m || v.is_nan() { v } else { *m };
                    }
                }
            }
        }
    });
    drop(x);
    Ok(from_flex(FlexTensor::from_data(burn::tensor::TensorData::new(out, [b, ho, wo, c]))))
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
}
