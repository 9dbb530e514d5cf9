//! GELU in one vectorised, parallel pass (burn composes it from five or six element-wise ops,
//! each with its own buffer, around a scalar libm `tanh` or `erf`).

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use burn_flex::FlexTensor;

use crate::{for_each_chunk, from_flex, grad, into_flex, simd};

/// Which GELU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gelu {
    /// `x·Φ(x)` with the exact erf (PyTorch `nn.GELU()`).
    Erf,
    /// The tanh approximation (`gelu_pytorch_tanh`).
    Tanh,
}

/// Elements per parallel task: large enough to amortise the task, small enough to spread a
/// SigLIP MLP activation (1024 × 3072) over the threads.
const CHUNK: usize = 1 << 14;

/// GELU of `x`, or `Err(x)` when the kernels do not serve its backend (the caller composes it).
/// Under autodiff one graph node, whose backward multiplies by the exact derivative.
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>, kind: Gelu) -> Result<Tensor<B, D>, Tensor<B, D>> {
    if grad::serves::<B>() {
        let t = grad::into_ad(x)?;
        let backward = match kind {
            Gelu::Erf => gelu_erf_backward,
            Gelu::Tanh => gelu_tanh_backward,
        };
        let y = grad::unary_node(t, |x| gelu_flex(x, kind), |x, _| x.clone(), backward);
        return Ok(grad::from_ad(y));
    }
    let t = into_flex(x)?;
    Ok(from_flex(gelu_flex(t, kind)))
}

fn gelu_erf_backward(x: &FlexTensor, g: FlexTensor) -> FlexTensor {
    map2(x, g, simd::gelu_erf_grad)
}

fn gelu_tanh_backward(x: &FlexTensor, g: FlexTensor) -> FlexTensor {
    map2(x, g, simd::gelu_tanh_grad)
}

/// `out[i] = f(x[i], g[i])` over two tensors of one shape, in parallel chunks.
fn map2(x: &FlexTensor, g: FlexTensor, f: fn(&[f32], &[f32], &mut [f32])) -> FlexTensor {
    let shape = x.layout().shape().clone();
    let x = x.to_contiguous();
    let g = owned_contiguous(g);
    let n = shape.num_elements();
    let (xs, gs): (&[f32], &[f32]) = (&x.storage()[..n], &g.storage()[..n]);
    let mut out = vec![0.0f32; n];
    for_each_chunk(&mut out, CHUNK, |start, dst| f(&xs[start..][..dst.len()], &gs[start..][..dst.len()], dst));
    FlexTensor::from_data(burn::tensor::TensorData::new(out, shape))
}

fn gelu_flex(t: FlexTensor, kind: Gelu) -> FlexTensor {
    let shape = t.layout().shape().clone();
    // In place when the buffer is ours alone and laid out plainly; otherwise into a new one.
    let mut t = owned_contiguous(t);
    if let Some(xs) = t.try_storage_mut::<f32>() {
        for_each_chunk(xs, CHUNK, |_, xs| match kind {
            Gelu::Erf => simd::gelu_erf_inplace(xs),
            Gelu::Tanh => simd::gelu_tanh_inplace(xs),
        });
        return t;
    }
    let n = shape.num_elements();
    let src: &[f32] = &t.storage()[..n];
    let mut out = vec![0.0f32; n];
    for_each_chunk(&mut out, CHUNK, |start, dst| {
        let src = &src[start..][..dst.len()];
        match kind {
            Gelu::Erf => simd::gelu_erf(src, dst),
            Gelu::Tanh => simd::gelu_tanh(src, dst),
        }
    });
    FlexTensor::from_data(burn::tensor::TensorData::new(out, shape))
}

/// `t` laid out contiguously, without keeping a second handle on its buffer (so that a buffer
/// held by `t` alone stays writable in place).
pub(crate) fn owned_contiguous(t: FlexTensor) -> FlexTensor {
    let c = t.to_contiguous();
    drop(t);
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{max_abs_diff, random};
    use burn::tensor::activation;

    #[test]
    fn matches_burns_gelus_on_owned_shared_and_strided_tensors() {
        let x = random([3, 70, 50], 1) * 3.0;
        for kind in [Gelu::Erf, Gelu::Tanh] {
            let want = match kind {
                Gelu::Erf => activation::gelu(x.clone()),
                Gelu::Tanh => activation::gelu_approximate(x.clone()),
            };
            // Shared buffer (x is still held): written to a new one, x unchanged.
            let shared = gelu(x.clone(), kind).ok().unwrap();
            assert!(max_abs_diff(shared, want.clone()) < 1e-5);
            // Owned buffer: in place.
            let owned = gelu(x.clone() * 1.0, kind).ok().unwrap();
            assert!(max_abs_diff(owned, want.clone()) < 1e-5);
            // A permuted view.
            let strided = gelu(x.clone().swap_dims(0, 2), kind).ok().unwrap();
            assert!(max_abs_diff(strided, want.swap_dims(0, 2)) < 1e-5);
        }
    }

    #[test]
    fn under_autodiff_the_gradient_is_the_composed_ones() {
        type A = crate::grad::Ad;
        let x0 = random([4, 33, 20], 9) * 3.0;
        let w0 = random([4, 33, 20], 10);
        for kind in [Gelu::Erf, Gelu::Tanh] {
            let grads_of = |fast: bool| {
                let x = Tensor::<A, 3>::from_inner(x0.clone()).require_grad();
                let w = Tensor::<A, 3>::from_inner(w0.clone());
                let y = if fast {
                    gelu(x.clone(), kind).ok().expect("served")
                } else {
                    match kind {
                        Gelu::Erf => x.clone() * ((x.clone() * std::f64::consts::FRAC_1_SQRT_2).erf() + 1.0) * 0.5,
                        Gelu::Tanh => activation::gelu_approximate(x.clone()),
                    }
                };
                let loss = (y.clone() * w).sum();
                let g = loss.backward();
                (y.inner(), x.grad(&g).unwrap())
            };
            let (y_fast, g_fast) = grads_of(true);
            let (y_ref, g_ref) = grads_of(false);
            assert!(max_abs_diff(y_fast, y_ref) < 1e-5);
            assert!(max_abs_diff(g_fast, g_ref) < 1e-4, "{kind:?}");
        }
    }

    #[test]
    fn other_backends_get_their_tensor_back() {
        type N = burn::backend::NdArray<f32>;
        let x = Tensor::<N, 2>::ones([2, 3], &Default::default());
        let back = gelu(x.clone(), Gelu::Erf).err().expect("NdArray is not served");
        assert_eq!(back.into_data(), x.into_data());
    }
}
