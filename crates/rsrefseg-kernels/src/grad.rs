//! The kernels under burn's autodiff (training on the CPU backend): each kernel call becomes one
//! node of the autodiff graph, through `burn-autodiff`'s `Backward` ops (burn's
//! backend-extension mechanism), with a backward pass computed by the project's kernels.
//!
//! Only `Autodiff<Flex>` with burn's default (no) checkpointing is served; any other autodiff
//! backend composes burn's ops.

use std::any::TypeId;
use std::fmt::Debug;
use std::marker::PhantomData;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::NoCheckpointing;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn_autodiff::Autodiff;
use burn_flex::{Flex, FlexTensor};

use crate::{downcast, upcast};

/// The training backend the kernels serve.
pub type Ad = Autodiff<Flex>;
/// Its float tensor: a Flex tensor (`primitive`) and its graph node (`node`).
pub(crate) type AdTensor = <Ad as burn::tensor::backend::BackendTypes>::FloatTensorPrimitive;

/// `B` is Flex under autodiff.
pub fn serves<B: Backend>() -> bool {
    TypeId::of::<B>() == TypeId::of::<Ad>()
}

/// The autodiff tensor behind `x`, or `x` back when `B` is not `Autodiff<Flex>` or `x` is not f32.
pub(crate) fn into_ad<B: Backend, const D: usize>(x: Tensor<B, D>) -> Result<AdTensor, Tensor<B, D>> {
    if !serves::<B>() || x.dtype() != DType::F32 {
        return Err(x);
    }
    downcast(x)
}

/// A handle on the autodiff tensor behind `x` (shares storage and node).
pub(crate) fn ad_ref<B: Backend, const D: usize>(x: &Tensor<B, D>) -> Option<AdTensor> {
    into_ad(x.clone()).ok()
}

/// `t` as a tensor of `B`; only called once [`serves`] said `B` is `Autodiff<Flex>`.
pub(crate) fn from_ad<B: Backend, const D: usize>(t: AdTensor) -> Tensor<B, D> {
    upcast(t)
}

/// A one-input kernel as one graph node: `backward(state, grad of the output)` gives the grad
/// of the input.
#[derive(Debug)]
struct Unary<S> {
    backward: fn(&S, FlexTensor) -> FlexTensor,
    _state: PhantomData<S>,
}

impl<S: Clone + Send + Debug + 'static> Backward<Flex, 1> for Unary<S> {
    type State = S;

    fn backward(self, ops: Ops<S, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (f, state) = (self.backward, ops.state);
        unary::<Flex, _>(ops.parents, ops.node, grads, |g| f(&state, g));
    }
}

/// Applies `forward` to `x` as one autodiff node. `state(input, output)` keeps what `backward`
/// needs; it is only made when the graph tracks `x`.
pub(crate) fn unary_node<S: Clone + Send + Debug + 'static>(
    x: AdTensor,
    forward: impl FnOnce(FlexTensor) -> FlexTensor,
    state: impl FnOnce(&FlexTensor, &FlexTensor) -> S,
    backward: fn(&S, FlexTensor) -> FlexTensor,
) -> AdTensor {
    let op = Unary { backward, _state: PhantomData };
    match op.prepare::<NoCheckpointing>([x.node.clone()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            // The input stays alive as state: the kernel writes a new buffer.
            let y = forward(x.primitive.clone());
            let s = state(&x.primitive, &y);
            prep.finish(s, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(x.primitive)),
    }
}

/// Hands the backward op of an N-input kernel the gradient of its output, registers the input
/// gradients it returns (one per input the graph tracks).
pub(crate) fn register_grads<const N: usize>(
    ops: Ops<impl Sized, N>,
    grads: &mut Gradients,
    compute: impl FnOnce(FlexTensor) -> [Option<FlexTensor>; N],
) {
    let g = grads.consume::<Flex>(&ops.node);
    let computed = compute(g);
    for (parent, grad) in ops.parents.into_iter().zip(computed) {
        if let (Some(node), Some(grad)) = (parent, grad) {
            grads.register::<Flex>(node.id, grad);
        }
    }
}

/// Builds an N-input node for `op`: `Some(prep)` when tracked.
pub(crate) fn node<O: Backward<Flex, N>, const N: usize>(op: O, inputs: [&AdTensor; N]) -> OpsKind<O, Flex, O::State, NoCheckpointing, N> {
    op.prepare::<NoCheckpointing>(inputs.map(|t| t.node.clone())).compute_bound().stateful()
}
