//! Per-channel affine maps of channels-first tensors, `y[n, c, …] = x[n, c, …]·scale[c] + shift[c]`:
//! a convolution's bias, LayerNorm2d's weight and bias, pixel normalisation. burn broadcasts the
//! `[1, c, 1, 1]` operand with a strided walk on Flex; here each channel's plane is one
//! contiguous, vectorised pass. Under autodiff: `dx = dy·scale`, `dscale[c] = Σ dy·x`,
//! `dshift[c] = Σ dy`.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use burn_flex::{Flex, FlexTensor};

use crate::gelu::owned_contiguous;
use crate::{flex_ref, for_each_chunk, for_each_task, from_flex, grad, SendPtr};

/// `x·scale[c] + shift[c]` over dimension 1 of `x` (`[n, c, …]`); either operand may be absent.
/// `Err(x)` when the kernels do not serve the tensors (the caller broadcasts).
pub fn channel_affine<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    scale: Option<&Tensor<B, 1>>,
    shift: Option<&Tensor<B, 1>>,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    let dims = x.dims();
    if D < 2 || [scale, shift].iter().flatten().any(|t| t.dims()[0] != dims[1]) || (scale.is_none() && shift.is_none()) {
        return Err(x);
    }
    if grad::serves::<B>() {
        let (Some(xa), Some(sa), Some(ba)) = (
            grad::ad_ref(&x),
            scale.map(grad::ad_ref).unwrap_or_else(|| grad::ad_ref(&x)),
            shift.map(grad::ad_ref).unwrap_or_else(|| grad::ad_ref(&x)),
        ) else {
            return Err(x);
        };
        let (s, b) = (scale.map(|_| &sa.primitive), shift.map(|_| &ba.primitive));
        let y = affine(&xa.primitive, s, b);
        drop(x);
        // Absent operands are stood in for by x itself and get no gradient.
        let op = Affine { has_scale: scale.is_some(), has_shift: shift.is_some() };
        let out = match grad::node(op, [&xa, &sa, &ba]) {
            OpsKind::Tracked(prep) => prep.finish((xa.primitive.clone(), s.cloned()), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        };
        return Ok(grad::from_ad(out));
    }
    let (Some(xt), s, b) = (flex_ref(&x), scale.map(flex_ref), shift.map(flex_ref)) else { return Err(x) };
    if matches!(s, Some(None)) || matches!(b, Some(None)) {
        return Err(x);
    }
    let y = affine(&xt, s.flatten().as_ref(), b.flatten().as_ref());
    Ok(from_flex(y))
}

/// The forward pass on Flex tensors.
fn affine(x: &FlexTensor, scale: Option<&FlexTensor>, shift: Option<&FlexTensor>) -> FlexTensor {
    let shape = x.layout().shape().clone();
    let (n, c) = (shape[0], shape[1]);
    let plane = shape.num_elements() / (n * c).max(1);
    let x = x.to_contiguous();
    let xs: &[f32] = &x.storage()[..shape.num_elements()];
    let s = scale.map(|t| t.to_contiguous());
    let b = shift.map(|t| t.to_contiguous());
    let (ss, bs): (Option<&[f32]>, Option<&[f32]>) = (s.as_ref().map(|t| &t.storage()[..c]), b.as_ref().map(|t| &t.storage()[..c]));
    let mut out = vec![0.0f32; xs.len()];
    // One part per (image, channel) plane.
    for_each_chunk(&mut out, plane, |start, o| {
        let ci = (start / plane) % c;
        let (k, a) = (ss.map_or(1.0, |s| s[ci]), bs.map_or(0.0, |b| b[ci]));
        for (y, &v) in o.iter_mut().zip(&xs[start..][..plane]) {
            *y = v * k + a;
        }
    });
    FlexTensor::from_data(burn::tensor::TensorData::new(out, shape))
}

#[derive(Debug)]
struct Affine {
    has_scale: bool,
    has_shift: bool,
}

impl Backward<Flex, 3> for Affine {
    /// x and the scale (the shift's gradient needs neither).
    type State = (FlexTensor, Option<FlexTensor>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, scale) = ops.state.clone();
        let (has_scale, has_shift) = (self.has_scale, self.has_shift);
        grad::register_grads(ops, grads, |dy| {
            let shape = x.layout().shape().clone();
            let (n, c) = (shape[0], shape[1]);
            let plane = shape.num_elements() / (n * c).max(1);
            let dy = owned_contiguous(dy);
            let x = x.to_contiguous();
            let (gs, xs): (&[f32], &[f32]) = (&dy.storage()[..shape.num_elements()], &x.storage()[..shape.num_elements()]);
            // Per-channel sums Σ dy and Σ dy·x, reduced over the images in order.
            let mut sums = vec![[0.0f64; 2]; n * c];
            let sp = SendPtr(sums.as_mut_ptr());
            for_each_task(n * c, |task| {
                let sp = sp;
                let (g, v) = (&gs[task * plane..][..plane], &xs[task * plane..][..plane]);
                let (mut a, mut b) = (0.0f64, 0.0f64);
                for (gc, vc) in g.chunks(256).zip(v.chunks(256)) {
                    a += gc.iter().sum::<f32>() as f64;
                    b += gc.iter().zip(vc).map(|(p, q)| p * q).sum::<f32>() as f64;
                }
                // SAFETY: entry `task` belongs to this task.
                unsafe { *sp.0.add(task) = [a, b] };
            });
            let per_channel = |k: usize| -> Vec<f32> { (0..c).map(|ci| (0..n).map(|ni| sums[ni * c + ci][k]).sum::<f64>() as f32).collect() };
            let dx = match &scale {
                Some(s) => affine(&dy, Some(s), None),
                None => dy.clone(),
            };
            let dscale = has_scale.then(|| FlexTensor::from_data(burn::tensor::TensorData::new(per_channel(1), [c])));
            let dshift = has_shift.then(|| FlexTensor::from_data(burn::tensor::TensorData::new(per_channel(0), [c])));
            [Some(dx), dscale, dshift]
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{max_abs_diff, random};

    #[test]
    fn equals_broadcasting_with_gradients() {
        type A = crate::grad::Ad;
        let x0 = random([2, 5, 7, 3], 40).swap_dims(2, 3);
        let (s0, b0) = (random([5], 41), random([5], 42));
        let r0 = random([2, 5, 3, 7], 43);
        for (with_scale, with_shift) in [(true, true), (false, true), (true, false)] {
            let run = |fast: bool| {
                let x = Tensor::<A, 4>::from_inner(x0.clone()).require_grad();
                let s = Tensor::<A, 1>::from_inner(s0.clone()).require_grad();
                let b = Tensor::<A, 1>::from_inner(b0.clone()).require_grad();
                let y = if fast {
                    channel_affine(x.clone(), with_scale.then_some(&s), with_shift.then_some(&b)).ok().expect("served")
                } else {
                    let mut y = x.clone();
                    if with_scale {
                        y = y * s.clone().reshape([1, 5, 1, 1]);
                    }
                    if with_shift {
                        y = y + b.clone().reshape([1, 5, 1, 1]);
                    }
                    y
                };
                let g = (y.clone() * Tensor::from_inner(r0.clone())).sum().backward();
                (y.inner(), x.grad(&g).unwrap(), s.grad(&g), b.grad(&g))
            };
            let ((y1, gx1, gs1, gb1), (y0, gx0, gs0, gb0)) = (run(true), run(false));
            assert!(max_abs_diff(y1, y0) < 1e-6);
            assert!(max_abs_diff(gx1, gx0) < 1e-6);
            assert_eq!(gs1.is_some(), gs0.is_some());
            assert_eq!(gb1.is_some(), gb0.is_some());
            if let (Some(a), Some(b)) = (gs1, gs0) {
                assert!(max_abs_diff(a, b) < 1e-4);
            }
            if let (Some(a), Some(b)) = (gb1, gb0) {
                assert!(max_abs_diff(a, b) < 1e-4);
            }
        }
        // Plain Flex (inference).
        let y = channel_affine(x0.clone(), Some(&s0), Some(&b0)).ok().unwrap();
        let want = x0 * s0.reshape([1, 5, 1, 1]) + b0.reshape([1, 5, 1, 1]);
        assert!(max_abs_diff(y, want) < 1e-6);
    }
}
