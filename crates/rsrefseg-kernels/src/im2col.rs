//! The column matrix of a 2-D convolution (im2col), so that the convolution is one GEMM.
//!
//! Composed from burn ops (pad, stride-phase reshape, one slice per tap, concatenation) it costs
//! a strided copy per tap on Flex; here each (image, channel) plane is gathered once into its
//! `kh·kw` rows. Under autodiff its backward is the matching scatter-add (col2im).

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use burn_flex::FlexTensor;

use crate::gelu::owned_contiguous;
use crate::{flex_ref, for_each_chunk, from_flex, grad, view_fits};

/// Geometry of one convolution's column matrix.
#[derive(Clone, Copy, Debug)]
pub struct Im2col {
    /// Kernel size `[kh, kw]`.
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    /// Zero padding `[top, left, bottom, right]`.
    pub padding: [usize; 4],
}

impl Im2col {
    /// Output grid `[ho, wo]` for an `h × w` input (`None` when the kernel does not fit).
    pub fn output(&self, [h, w]: [usize; 2]) -> Option<[usize; 2]> {
        let ([kh, kw], [sh, sw], [t, l, b, r]) = (self.kernel, self.stride, self.padding);
        let (hp, wp) = (h + t + b, w + l + r);
        if kh == 0 || kw == 0 || sh == 0 || sw == 0 || hp < kh || wp < kw {
            return None;
        }
        Some([(hp - kh) / sh + 1, (wp - kw) / sw + 1])
    }
}

/// `x: [n, c, h, w]` → columns `[n, c·kh·kw, ho·wo]` (row `(ci·kh + dy)·kw + dx`, the
/// weight's `(c, kh, kw)` order; zeros where a tap falls in the padding), or `Err(x)` when the
/// kernels do not serve `x`.
pub fn im2col<B: Backend>(x: Tensor<B, 4>, g: Im2col) -> Result<Tensor<B, 3>, Tensor<B, 4>> {
    let [n, c, h, w] = x.dims();
    if g.output([h, w]).is_none() {
        return Err(x);
    }
    if grad::serves::<B>() {
        let Some(t) = grad::ad_ref(&x) else { return Err(x) };
        let Some(cols) = gather(&t.primitive, g) else { return Err(x) };
        drop(t);
        let t = grad::into_ad(x)?;
        let y = grad::unary_node(t, move |_| cols, move |_, _| ([n, c, h, w], g), |(dims, g), dcols| scatter(dcols, *dims, *g));
        return Ok(grad::from_ad(y));
    }
    let Some(t) = flex_ref(&x) else { return Err(x) };
    match gather(&t, g) {
        Some(cols) => Ok(from_flex(cols)),
        None => Err(x),
    }
}

/// The forward gather on a Flex tensor of any strides.
fn gather(t: &FlexTensor, g: Im2col) -> Option<FlexTensor> {
    let l = t.layout();
    let [n, c, h, w] = [l.shape()[0], l.shape()[1], l.shape()[2], l.shape()[3]];
    let [ho, wo] = g.output([h, w])?;
    let src: &[f32] = t.storage();
    if !view_fits(l.shape(), l.strides(), l.start_offset(), src.len()) {
        return None;
    }
    let st: Vec<usize> = l.strides().iter().map(|&s| s as usize).collect();
    let off = l.start_offset();
    let ([kh, kw], [sh, sw], [top, left, _, _]) = (g.kernel, g.stride, g.padding);
    let plane = kh * kw * ho * wo;
    let mut out = vec![0.0f32; n * c * plane];
    // One part per (image, channel): its kh·kw rows.
    for_each_chunk(&mut out, plane, |start, rows| {
        let task = start / plane;
        let (ni, ci) = (task / c, task % c);
        let base = off + ni * st[0] + ci * st[1];
        for dy in 0..kh {
            for dx in 0..kw {
                let row = &mut rows[(dy * kw + dx) * ho * wo..][..ho * wo];
                for oy in 0..ho {
                    let Some(iy) = (oy * sh + dy).checked_sub(top).filter(|&iy| iy < h) else { continue };
                    let line = &mut row[oy * wo..][..wo];
                    for (ox, v) in line.iter_mut().enumerate() {
                        if let Some(ix) = (ox * sw + dx).checked_sub(left).filter(|&ix| ix < w) {
                            *v = src[base + iy * st[2] + ix * st[3]];
                        }
                    }
                }
            }
        }
    });
    Some(FlexTensor::from_data(burn::tensor::TensorData::new(out, [n, c * kh * kw, ho * wo])))
}

/// The backward of [`gather`]: each column entry's gradient added back to the input pixel it
/// came from (padding taps dropped). One task per (image, channel) plane.
fn scatter(dcols: FlexTensor, [n, c, h, w]: [usize; 4], g: Im2col) -> FlexTensor {
    let [ho, wo] = g.output([h, w]).expect("checked in the forward pass");
    let ([kh, kw], [sh, sw], [top, left, _, _]) = (g.kernel, g.stride, g.padding);
    let dcols = owned_contiguous(dcols);
    let src: &[f32] = dcols.storage();
    let plane = kh * kw * ho * wo;
    let mut out = vec![0.0f32; n * c * h * w];
    // One part per (image, channel) plane of the input gradient.
    for_each_chunk(&mut out, h * w, |start, gx| {
        let task = start / (h * w);
        let rows = &src[task * plane..][..plane];
        for dy in 0..kh {
            for dx in 0..kw {
                let row = &rows[(dy * kw + dx) * ho * wo..][..ho * wo];
                for oy in 0..ho {
                    let Some(iy) = (oy * sh + dy).checked_sub(top).filter(|&iy| iy < h) else { continue };
                    for ox in 0..wo {
                        if let Some(ix) = (ox * sw + dx).checked_sub(left).filter(|&ix| ix < w) {
                            gx[iy * w + ix] += row[oy * wo + ox];
                        }
                    }
                }
            }
        }
    });
    FlexTensor::from_data(burn::tensor::TensorData::new(out, [n, c, h, w]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{max_abs_diff, random};
    use burn::tensor::module::conv2d;
    use burn::tensor::ops::ConvOptions;

    /// The convolution through the columns, against burn's own.
    fn conv_via_cols<Bk: Backend>(x: Tensor<Bk, 4>, wt: Tensor<Bk, 4>, g: Im2col) -> Tensor<Bk, 4> {
        let [n, _, h, w] = x.dims();
        let [o, c, kh, kw] = wt.dims();
        let [ho, wo] = g.output([h, w]).unwrap();
        let cols = im2col(x, g).ok().expect("served");
        wt.reshape([1, o, c * kh * kw]).matmul(cols).reshape([n, o, ho, wo])
    }

    #[test]
    fn convolution_through_the_columns_equals_burns_with_gradients() {
        type A = crate::grad::Ad;
        // Hiera's 7×7/4 patch embedding (padding 3), a 3×3/1 head, a 2×2/2 downscaling, a
        // strided (permuted) input.
        for (shape, k, s, p, permuted) in [
            ([2, 3, 21, 18], 7, 4, 3, false),
            ([1, 5, 9, 11], 3, 1, 1, true),
            ([2, 4, 8, 8], 2, 2, 0, false),
        ] {
            let [n, c, h, w] = shape;
            let x0 = if permuted { random([n, h, w, c], 20).permute([0, 3, 1, 2]) } else { random(shape, 20) };
            let w0 = random([6, c, k, k], 21);
            let g = Im2col { kernel: [k, k], stride: [s, s], padding: [p, p, p, p] };
            let opts = ConvOptions::new([s, s], [p, p], [1, 1], 1);
            let want = conv2d(x0.clone(), w0.clone(), None, opts.clone());
            assert!(max_abs_diff(conv_via_cols(x0.clone(), w0.clone(), g), want.clone()) < 1e-4);

            let [_, o, ho, wo] = want.dims();
            let r0 = random([n, o, ho, wo], 22);
            let grads = |fast: bool| {
                let x = Tensor::<A, 4>::from_inner(x0.clone()).require_grad();
                let wt = Tensor::<A, 4>::from_inner(w0.clone()).require_grad();
                let y = if fast { conv_via_cols(x.clone(), wt.clone(), g) } else { conv2d(x.clone(), wt.clone(), None, opts.clone()) };
                let gr = (y * Tensor::from_inner(r0.clone())).sum().backward();
                (x.grad(&gr).unwrap(), wt.grad(&gr).unwrap())
            };
            let ((gx1, gw1), (gx0, gw0)) = (grads(true), grads(false));
            assert!(max_abs_diff(gx1, gx0) < 1e-4, "{shape:?}");
            assert!(max_abs_diff(gw1, gw0) < 1e-3, "{shape:?}");
        }
    }
}
