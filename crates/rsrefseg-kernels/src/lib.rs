//! rsrefseg's own CPU kernels for burn's Flex backend.
//!
//! burn runs a model op by op. On Flex (the CPU backend of every rsrefseg command and of the
//! page's CPU fallback) these cost far more than their arithmetic, measured with `perf` on
//! `rsrefseg bench` (browser sizes, 2 threads) and on a `nano` training step:
//! - attention runs on one thread whatever the pool size, after copying the per-head views of q,
//!   k and v into contiguous buffers, with a scalar `exp` (13 % of SigLIP's vision tower, 10 %
//!   of Hiera's, plus its copies);
//! - GELU is five or six element-wise passes with a scalar libm `tanh`/`erf` (27 % of SigLIP's
//!   vision tower in `expm1`/`tanh`/`exp`, 5 % of Hiera's in `erf`);
//! - a permuted view (Hiera's window partition, its q/k/v split) is made contiguous by an
//!   element-by-element strided iterator (21 % of Hiera's time);
//! - burn's `max_pool2d` wants channels-first, so Hiera's channels-last query pooling permutes
//!   twice around it;
//! - convolutions as GEMM gather their columns tap by tap with strided copies; a `[1, c, 1, 1]`
//!   bias or LayerNorm2d's channel reductions walk strided views; SAM's pixel shuffle copies
//!   element by element (together most of the mask decoder's time);
//! - bilinear resizing runs one task per channel plane, so the one-channel mask brought to the
//!   original image size at the end of every query ran on one thread.
//!
//! Each kernel here takes and returns burn tensors of any backend. When the backend is Flex, or
//! Flex under burn's autodiff (training), and the tensor holds f32, the kernel runs — under
//! autodiff as one graph node with the kernel's own backward pass (burn's backend-extension
//! mechanism: `Backward` ops of `burn-autodiff`). Otherwise the input comes back untouched
//! (`Err`/`None`) and the caller runs its composed burn ops, so other backends keep burn's own
//! implementation and gradients.
//!
//! One concept per file: [`attention`], [`channel`] (per-channel affine maps), [`gelu`],
//! [`im2col`] (convolution columns), [`int8`] (int8 matrix products for inference), [`layout`]
//! (views and copies), [`norm`] (LayerNorm2d), [`pool`], [`resize`] (bilinear); the vectorised
//! math they share is in [`simd`], the autodiff glue in [`grad`].

pub mod attention;
pub mod channel;
pub mod gelu;
pub mod grad;
pub mod im2col;
pub mod int8;
pub mod layout;
pub mod norm;
pub mod pool;
pub mod resize;
pub mod simd;

use std::any::{Any, TypeId};

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorPrimitive};
use burn_flex::{Flex, FlexTensor};

pub use attention::{attention, attention_int8};
pub use channel::channel_affine;
pub use gelu::{gelu, Gelu};
pub use im2col::{im2col, Im2col};
pub use layout::{contiguous, view_reshape};
pub use norm::layer_norm_channels;
pub use pool::max_pool_nhwc;
pub use resize::bilinear;

/// Whether the kernels serve backend `B`: burn's Flex, plain (inference) or under autodiff
/// (training, with the kernels' own backward passes).
pub fn serves<B: Backend>() -> bool {
    serves_plain::<B>() || grad::serves::<B>()
}

/// `B` is Flex itself.
fn serves_plain<B: Backend>() -> bool {
    TypeId::of::<B>() == TypeId::of::<Flex>()
}

/// The float primitive behind `x` as a `P`, or `x` back when `B`'s primitive is not a `P` (or
/// `x` is quantized).
fn downcast<B: Backend, P: 'static, const D: usize>(x: Tensor<B, D>) -> Result<P, Tensor<B, D>> {
    if TypeId::of::<B::FloatTensorPrimitive>() != TypeId::of::<P>() {
        return Err(x);
    }
    match x.into_primitive() {
        TensorPrimitive::Float(p) => {
            let any: Box<dyn Any> = Box::new(p);
            Ok(*any.downcast::<P>().expect("the type was just compared"))
        }
        q => Err(Tensor::from_primitive(q)),
    }
}

/// `p` as a float tensor of `B`; `P` must be `B`'s float primitive (checked by the caller's
/// `serves`).
fn upcast<B: Backend, P: 'static, const D: usize>(p: P) -> Tensor<B, D> {
    let any: Box<dyn Any> = Box::new(p);
    let p = any.downcast::<B::FloatTensorPrimitive>().expect("the kernels only build tensors of the backend they serve");
    Tensor::from_primitive(TensorPrimitive::Float(*p))
}

/// The f32 Flex tensor behind `x`, or `x` back when `B` is not Flex or `x` is not plain f32.
fn into_flex<B: Backend, const D: usize>(x: Tensor<B, D>) -> Result<FlexTensor, Tensor<B, D>> {
    if !serves_plain::<B>() || x.dtype() != DType::F32 {
        return Err(x);
    }
    downcast(x)
}

/// A view of `x` as a Flex tensor (shares its storage), when the kernels serve it.
fn flex_ref<B: Backend, const D: usize>(x: &Tensor<B, D>) -> Option<FlexTensor> {
    if !serves_plain::<B>() || x.dtype() != DType::F32 {
        return None;
    }
    into_flex(x.clone()).ok()
}

/// `t` as a tensor of backend `B`; only called once [`serves`] said `B` is Flex.
fn from_flex<B: Backend, const D: usize>(t: FlexTensor) -> Tensor<B, D> {
    upcast(t)
}

/// A raw pointer that tasks writing disjoint parts of one output buffer share.
struct SendPtr<T = f32>(*mut T);
impl<T> Clone for SendPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SendPtr<T> {}
// SAFETY: every kernel hands each task a disjoint set of elements of the buffer behind the
// pointer, and the buffer outlives the parallel loop (it is joined before the buffer is used).
unsafe impl<T: Send> Send for SendPtr<T> {}
unsafe impl<T: Send> Sync for SendPtr<T> {}

/// Runs `f(i)` for `i in 0..n`, on rayon's pool natively and in a loop in the browser.
fn for_each_task(n: usize, f: impl Fn(usize) + Send + Sync) {
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        (0..n).into_par_iter().for_each(f);
    }
    #[cfg(target_arch = "wasm32")]
    (0..n).for_each(f);
}

/// Runs `f(start, part)` over `out` cut into consecutive parts of `chunk` elements (the last
/// may be shorter), in parallel: `start` is the part's offset in `out`.
fn for_each_chunk(out: &mut [f32], chunk: usize, f: impl Fn(usize, &mut [f32]) + Send + Sync) {
    let (n, chunk) = (out.len(), chunk.max(1));
    let ptr = SendPtr(out.as_mut_ptr());
    for_each_task(n.div_ceil(chunk), move |i| {
        let ptr = ptr;
        let (start, end) = (i * chunk, ((i + 1) * chunk).min(n));
        // SAFETY: the parts are disjoint ranges of `out`, which outlives the loop.
        f(start, unsafe { std::slice::from_raw_parts_mut(ptr.0.add(start), end - start) });
    });
}

/// Like [`for_each_task`], with a scratch value made once per worker thread.
fn for_each_task_with<S: Send>(n: usize, init: impl Fn() -> S + Send + Sync, f: impl Fn(&mut S, usize) + Send + Sync) {
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        (0..n).into_par_iter().for_each_init(init, f);
    }
    #[cfg(target_arch = "wasm32")]
    {
        let mut s = init();
        (0..n).for_each(|i| f(&mut s, i));
    }
}

/// Checks that every element a strided view can address lies inside its buffer (`len`
/// elements): the kernels then read it through raw pointers. Negative strides are not served.
fn view_fits(shape: &[usize], strides: &[isize], offset: usize, len: usize) -> bool {
    if shape.iter().any(|&d| d == 0) {
        return false;
    }
    let mut last = offset;
    for (&d, &s) in shape.iter().zip(strides) {
        if s < 0 {
            return false;
        }
        last += (d - 1) * s as usize;
    }
    last < len
}

#[cfg(test)]
pub(crate) mod testing {
    //! Flex tensors for the kernels' tests, compared against burn's own ops.
    use burn::tensor::{Distribution, Tensor};
    pub type F = burn_flex::Flex;

    pub fn random<const D: usize>(shape: [usize; D], seed: u64) -> Tensor<F, D> {
        <F as burn::tensor::backend::Backend>::seed(&Default::default(), seed);
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), &Default::default())
    }

    pub fn max_abs_diff<const D: usize>(a: Tensor<F, D>, b: Tensor<F, D>) -> f32 {
        assert_eq!(a.dims(), b.dims());
        (a - b).abs().max().into_scalar()
    }
}
