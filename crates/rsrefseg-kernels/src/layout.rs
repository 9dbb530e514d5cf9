//! Views and copies. Flex reshapes a non-contiguous view by copying it element by element
//! through a generic strided iterator; Hiera does that to every window partition and to each of
//! its q/k/v splits. Here a reshape that the strides allow stays a view (as PyTorch's `view`),
//! and a copy that cannot be avoided moves whole contiguous runs.

use burn::tensor::backend::Backend;
use burn::tensor::{Shape, Tensor};
use burn_flex::{FlexTensor, Layout};

use crate::{flex_ref, for_each_task, from_flex, grad, view_fits, SendPtr};

/// `x.reshape(shape)` as a view of the same buffer when its strides allow one, else `Err(x)`
/// (for the caller's `reshape`, which copies). `shape` must hold as many elements as `x`.
pub fn view_reshape<B: Backend, const D: usize, const D2: usize>(
    x: Tensor<B, D>,
    shape: [usize; D2],
) -> Result<Tensor<B, D2>, Tensor<B, D>> {
    if grad::serves::<B>() {
        // Under autodiff: a node whose backward reshapes the gradient back.
        let Some(layout) = grad::ad_ref(&x).and_then(|t| view_layout(&t.primitive, &shape)) else { return Err(x) };
        let t = grad::into_ad(x)?;
        let y = grad::unary_node(
            t,
            move |p| p.with_layout(layout),
            |x, _| x.layout().shape().clone(),
            |old, g| g.reshape(old.clone()),
        );
        return Ok(grad::from_ad(y));
    }
    let Some(t) = flex_ref(&x) else { return Err(x) };
    let Some(layout) = view_layout(&t, &shape) else { return Err(x) };
    drop(x);
    Ok(from_flex(t.with_layout(layout)))
}

/// The layout of `t` reshaped to `shape` without moving data, when there is one.
fn view_layout(t: &FlexTensor, shape: &[usize]) -> Option<Layout> {
    let layout = t.layout();
    if layout.num_elements() != shape.iter().product::<usize>() {
        return None;
    }
    let strides = view_strides(layout.shape(), layout.strides(), shape)?;
    Some(Layout::new(Shape::from(shape.to_vec()), strides, layout.start_offset()))
}

/// Strides that read `old` (with `old_strides`) in the row-major order of `new`, when one set of
/// strides can (the algorithm of PyTorch's `computeStride`): each run of `old` dimensions that is
/// contiguous in memory may be split or merged freely, runs may not be merged with each other.
fn view_strides(old: &[usize], old_strides: &[isize], new: &[usize]) -> Option<Vec<isize>> {
    if old.iter().product::<usize>() == 0 {
        return None;
    }
    let mut strides = vec![0isize; new.len()];
    let mut view_d = new.len() as isize - 1;
    let mut chunk_base = *old_strides.last().unwrap_or(&1);
    let (mut tensor_numel, mut view_numel) = (1usize, 1usize);
    for d in (0..old.len()).rev() {
        tensor_numel *= old[d];
        let run_ends = d == 0 || (old[d - 1] != 1 && old_strides[d - 1] != tensor_numel as isize * chunk_base);
        if run_ends {
            while view_d >= 0 && (view_numel < tensor_numel || new[view_d as usize] == 1) {
                strides[view_d as usize] = view_numel as isize * chunk_base;
                view_numel *= new[view_d as usize];
                view_d -= 1;
            }
            if view_numel != tensor_numel {
                return None;
            }
            if d > 0 {
                chunk_base = old_strides[d - 1];
                tensor_numel = 1;
                view_numel = 1;
            }
        }
    }
    (view_d == -1).then_some(strides)
}

/// Shortest contiguous run worth a `memcpy` of its own; shorter ones are left to Flex.
const MIN_RUN: usize = 8;

/// `x` laid out contiguously: whole contiguous runs copied at once, or (a permutation that
/// interleaves, such as a pixel shuffle) the two innermost dimensions walked with their strides.
/// Ok when the kernels serve `x` (a contiguous `x` comes back as is), `Err(x)` otherwise.
pub fn contiguous<B: Backend, const D: usize>(x: Tensor<B, D>) -> Result<Tensor<B, D>, Tensor<B, D>> {
    if grad::serves::<B>() {
        // Under autodiff: a node whose backward passes the gradient through.
        let Some(t) = grad::ad_ref(&x) else { return Err(x) };
        if is_plain(&t.primitive) {
            return Ok(x);
        }
        let copy = contiguous_flex(&t.primitive).unwrap_or_else(|| t.primitive.to_contiguous());
        drop(t);
        let t = grad::into_ad(x)?;
        let y = grad::unary_node(t, move |_| copy, |_, _| (), |_, g| g);
        return Ok(grad::from_ad(y));
    }
    let Some(t) = flex_ref(&x) else { return Err(x) };
    if is_plain(&t) {
        return Ok(x);
    }
    // What the runs and tiles here do not cover (a plain 2-D transpose) goes to Flex's own
    // tiled copy: an elementwise op on the view would walk it with a scalar strided iterator.
    Ok(from_flex(contiguous_flex(&t).unwrap_or_else(|| t.to_contiguous())))
}

/// Laid out contiguously from the start of its buffer.
fn is_plain(t: &FlexTensor) -> bool {
    t.layout().is_contiguous() && t.layout().start_offset() == 0
}

/// The copy of `t` into a contiguous buffer (`None` for a 2-D transpose, or a view that does not
/// fit its buffer).
fn contiguous_flex(t: &FlexTensor) -> Option<FlexTensor> {
    let layout = t.layout();
    let (mut shape, mut strides) = collapse(layout.shape(), layout.strides());
    let src: &[f32] = t.storage();
    if !view_fits(&shape, &strides, layout.start_offset(), src.len()) {
        return None;
    }
    let long_runs = strides.last() == Some(&1) && *shape.last().unwrap_or(&1) >= MIN_RUN;
    if !long_runs && shape.len() <= 2 {
        return None;
    }
    // The innermost block copied per outer index: one run, or an (a × b) strided tile.
    if shape.len() < 2 {
        shape.insert(0, 1);
        strides.insert(0, 0);
    }
    let k = shape.len();
    let (inner, (ia, ib, sa, sb)) = if long_runs {
        (shape[k - 1], (1, shape[k - 1], 0, 1))
    } else {
        (shape[k - 2] * shape[k - 1], (shape[k - 2], shape[k - 1], strides[k - 2], strides[k - 1]))
    };
    let n_outer = if long_runs { k - 1 } else { k - 2 };
    let n = layout.num_elements();
    let blocks = n / inner;
    let mut out = vec![0.0f32; n];
    let dst = SendPtr(out.as_mut_ptr());
    let outer = &shape[..n_outer];
    let outer_strides = &strides[..n_outer];
    let offset = layout.start_offset();
    // Tasks of ~64 KiB each.
    let per_task = (16384 / inner).max(1);
    for_each_task(blocks.div_ceil(per_task), |task| {
        let dst = dst;
        let first = task * per_task;
        let last = (first + per_task).min(blocks);
        // The outer index of block `first`, then an odometer.
        let mut idx = vec![0usize; outer.len()];
        let mut r = first;
        for d in (0..outer.len()).rev() {
            idx[d] = r % outer[d];
            r /= outer[d];
        }
        for j in first..last {
            let at = offset + idx.iter().zip(outer_strides).map(|(&i, &s)| i * s as usize).sum::<usize>();
            // SAFETY: block j occupies out[j·inner .. (j+1)·inner], disjoint across tasks;
            // `view_fits` bounded every source index.
            unsafe {
                let o = dst.0.add(j * inner);
                if long_runs {
                    std::ptr::copy_nonoverlapping(src.as_ptr().add(at), o, inner);
                } else {
                    let (sa, sb) = (sa as usize, sb as usize);
                    for a in 0..ia {
                        for b in 0..ib {
                            *o.add(a * ib + b) = *src.get_unchecked(at + a * sa + b * sb);
                        }
                    }
                }
            }
            for d in (0..outer.len()).rev() {
                idx[d] += 1;
                if idx[d] < outer[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
    });
    Some(FlexTensor::from_data(burn::tensor::TensorData::new(out, layout.shape().clone())))
}

/// Drops size-1 dimensions and merges neighbours that are contiguous with each other.
fn collapse(shape: &Shape, strides: &[isize]) -> (Vec<usize>, Vec<isize>) {
    let mut s: Vec<usize> = Vec::new();
    let mut st: Vec<isize> = Vec::new();
    for (i, &d) in shape.iter().enumerate() {
        if d == 1 {
            continue;
        }
        match (s.last_mut(), st.last_mut()) {
            (Some(ls), Some(lst)) if *lst == strides[i] * d as isize => {
                *ls *= d;
                *lst = strides[i];
            }
            _ => {
                s.push(d);
                st.push(strides[i]);
            }
        }
    }
    if s.is_empty() {
        s.push(1);
        st.push(1);
    }
    (s, st)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{random, F};

    fn layout_of<const D: usize>(x: &Tensor<F, D>) -> Layout {
        flex_ref(x).unwrap().layout().clone()
    }

    #[test]
    fn a_reshape_the_strides_allow_is_a_view_with_the_same_values() {
        // Hiera's q/k/v split: [b, n, 3, heads, d] narrowed to one of the three.
        let qkv = random([2, 12, 3, 4, 8], 3);
        let part = qkv.clone().narrow(2, 1, 1);
        let view = view_reshape(part.clone(), [2, 12, 4, 8]).ok().expect("a view");
        assert!(!layout_of(&view).is_contiguous());
        assert_eq!(view.clone().into_data(), part.clone().reshape([2, 12, 4, 8]).into_data());
        // ... and merging the heads back: [b, n, heads·d] is a view too.
        let merged = view_reshape(view.clone(), [2, 12, 32]).ok().expect("a view");
        assert_eq!(merged.into_data(), part.reshape([2, 12, 32]).into_data());
        // Merging dimensions that are not adjacent in memory is not a view.
        let t = random([4, 6], 4).swap_dims(0, 1);
        assert!(view_reshape(t, [24]).is_err());
    }

    #[test]
    fn strided_copies_equal_flexs_own() {
        // Hiera's window partition: (B, H/ws, ws, W/ws, ws, C) permuted to (…, W/ws, ws, ws, C).
        let x = random([2, 4, 8, 3, 8, 12], 5);
        let p = x.clone().permute([0, 1, 3, 2, 4, 5]);
        let fast = contiguous(p.clone()).ok().expect("runs of 8·12");
        assert!(layout_of(&fast).is_contiguous());
        assert_eq!(fast.into_data(), p.reshape([2 * 4 * 3, 8, 8, 12]).reshape([2, 4, 3, 8, 8, 12]).into_data());
        // A narrowed view with an offset.
        let n = x.clone().narrow(5, 2, 9).narrow(1, 1, 2);
        assert_eq!(contiguous(n.clone()).ok().unwrap().into_data(), (n * 1.0).into_data());
        // A pixel shuffle (SAM's 2×2 transposed convolution): runs of one element.
        let y = random([2, 5, 6, 3, 2, 2], 7);
        let shuffled = y.clone().permute([0, 3, 1, 4, 2, 5]);
        assert_eq!(contiguous(shuffled.clone()).ok().expect("served").into_data(), (shuffled * 1.0).into_data());
        // A plain transpose of the last dimension goes to Flex's tiled copy, contiguous too.
        let t = random([16, 24], 6).swap_dims(0, 1);
        let c = contiguous(t.clone()).ok().expect("served");
        assert!(layout_of(&c).is_contiguous());
        assert_eq!(c.into_data(), (t * 1.0).into_data());
    }

    #[test]
    fn under_autodiff_views_and_copies_pass_gradients_back() {
        type A = crate::grad::Ad;
        let x0 = random([2, 12, 3, 4, 8], 8);
        let w0 = random([2, 4, 12, 8], 9);
        let run = |fast: bool| {
            let x = Tensor::<A, 5>::from_inner(x0.clone()).require_grad();
            let part = x.clone().narrow(2, 1, 1);
            let v: Tensor<A, 4> = if fast { view_reshape(part, [2, 12, 4, 8]).ok().expect("a view") } else { part.reshape([2, 12, 4, 8]) };
            let p = v.reshape([2, 3, 4, 4, 8]).permute([0, 2, 1, 3, 4]);
            let c = if fast { contiguous(p).ok().expect("runs of 8") } else { p * 1.0 };
            let y = c.swap_dims(2, 3).reshape([2, 4, 12, 8]);
            let g = (y.clone() * Tensor::from_inner(w0.clone())).sum().backward();
            (y.inner(), x.grad(&g).unwrap())
        };
        let (y1, g1) = run(true);
        let (y0, g0) = run(false);
        assert_eq!(y1.into_data(), y0.into_data());
        assert_eq!(g1.into_data(), g0.into_data());
    }

    #[test]
    fn view_strides_follow_pytorch() {
        // contiguous → anything
        assert_eq!(view_strides(&[2, 3, 4], &[12, 4, 1], &[6, 4]), Some(vec![4, 1]));
        // transposed last two dims cannot be flattened
        assert_eq!(view_strides(&[2, 4, 3], &[12, 1, 4], &[2, 12]), None);
        // split of a strided dimension
        assert_eq!(view_strides(&[6, 5], &[10, 1], &[2, 3, 5]), Some(vec![30, 10, 1]));
        // size-1 dims anywhere
        assert_eq!(view_strides(&[3, 1, 5], &[15, 99, 1], &[3, 5, 1]), Some(vec![15, 1, 1]));
    }
}
