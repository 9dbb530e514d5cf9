//! Multi-head scaled dot-product attention, `softmax(q kᵀ/√d + bias) v`, parallel over
//! (batch, head, block of query rows).
//!
//! Each task multiplies its block of queries with all keys into a score block (GEMM straight
//! from the strided per-head views: no copy of q, k or v), adds the bias, turns each row into
//! its softmax with the vectorised `exp`, and multiplies with the values straight into the
//! output. The output is laid out `[b, n_q, heads, d_v]` in memory and returned as the
//! `[b, heads, n_q, d_v]` view of it, so the usual "recombine the heads" (swap heads and tokens,
//! reshape to `[b, n_q, heads·d_v]`) is free.
//!
//! Flex's own attention runs all heads on one thread after copying the three views.

use burn::tensor::backend::Backend;
use burn::tensor::{Shape, Tensor};
use burn_flex::{FlexTensor, Layout};

use crate::{flex_ref, for_each_task_with, from_flex, simd, view_fits, SendPtr};

/// Query rows per task: a 64 × n_k score block (256 KiB at SigLIP's 1 024 keys, 1 MiB at Hiera's
/// 4 096-token global blocks) stays in L2.
const ROWS: usize = 64;

/// One operand's view: its storage, start and the strides of its four dimensions.
struct View<'a> {
    data: &'a [f32],
    offset: usize,
    strides: [usize; 4],
}

impl<'a> View<'a> {
    fn of(t: &'a FlexTensor, dims: [usize; 4]) -> Option<Self> {
        let l = t.layout();
        if l.shape().as_slice() != dims.as_slice() {
            return None;
        }
        let data: &[f32] = t.storage();
        if !view_fits(&dims, l.strides(), l.start_offset(), data.len()) {
            return None;
        }
        let s = l.strides();
        Some(Self { data, offset: l.start_offset(), strides: [s[0] as usize, s[1] as usize, s[2] as usize, s[3] as usize] })
    }

    /// Pointer to element `(b, h, row, 0)`.
    fn at(&self, b: usize, h: usize, row: usize) -> *const f32 {
        // In bounds: `view_fits` checked the largest index the view addresses.
        self.data[self.offset + b * self.strides[0] + h * self.strides[1] + row * self.strides[2]..].as_ptr()
    }
}

/// `softmax(q kᵀ · scale + bias) v` with `scale = 1/√d`.
///
/// # Shapes
/// - q: `[b, heads, n_q, d]`, k: `[b, heads, n_k, d]`, v: `[b, heads, n_k, d_v]`
/// - bias: `[b, heads, n_q, n_k]` (broadcast views with zero strides are fine)
/// - output: `[b, heads, n_q, d_v]`
///
/// `None` when the kernels do not serve the backend (the caller composes burn's attention).
pub fn attention<B: Backend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    v: &Tensor<B, 4>,
    bias: Option<&Tensor<B, 4>>,
) -> Option<Tensor<B, 4>> {
    let (qt, kt, vt) = (flex_ref(q)?, flex_ref(k)?, flex_ref(v)?);
    let bt = match bias {
        Some(b) => Some(flex_ref(b)?),
        None => None,
    };
    let [b, h, nq, d] = q.dims();
    let [_, _, nk, dv] = v.dims();
    let qv = View::of(&qt, [b, h, nq, d])?;
    let kv = View::of(&kt, [b, h, nk, d])?;
    let vv = View::of(&vt, [b, h, nk, dv])?;
    let bv = match &bt {
        Some(t) => Some(View::of(t, [b, h, nq, nk])?),
        None => None,
    };
    let scale = 1.0 / (d as f32).sqrt();
    let blocks = nq.div_ceil(ROWS);
    let mut out = vec![0.0f32; b * nq * h * dv];
    let dst = SendPtr(out.as_mut_ptr());
    for_each_task_with(
        b * h * blocks,
        || vec![0.0f32; ROWS.min(nq) * nk],
        |scores, task| {
            let dst = dst;
            let (bh, blk) = (task / blocks, task % blocks);
            let (bi, hi) = (bh / h, bh % h);
            let r0 = blk * ROWS;
            let rows = ROWS.min(nq - r0);
            let s = &mut scores[..rows * nk];
            // SAFETY (both GEMMs): the operand views were bounds-checked by `View::of`; the score
            // block is this worker's own; the output rows (bi, r0..r0+rows, hi, ..) belong to this
            // task only.
            unsafe {
                gemm::gemm(
                    rows, nk, d,
                    s.as_mut_ptr(), 1, nk as isize, false,
                    qv.at(bi, hi, r0), qv.strides[3] as isize, qv.strides[2] as isize,
                    kv.at(bi, hi, 0), kv.strides[2] as isize, kv.strides[3] as isize,
                    0.0, scale, false, false, false, gemm::Parallelism::None,
                );
            }
            for (i, row) in s.chunks_exact_mut(nk).enumerate() {
                if let Some(bv) = &bv {
                    let base = bv.offset + bi * bv.strides[0] + hi * bv.strides[1] + (r0 + i) * bv.strides[2];
                    match bv.strides[3] {
                        1 => row.iter_mut().zip(&bv.data[base..base + nk]).for_each(|(x, &b)| *x += b),
                        st => row.iter_mut().enumerate().for_each(|(j, x)| *x += bv.data[base + j * st]),
                    }
                }
                let sum = simd::softmax_row(row);
                // A row masked everywhere attends to nothing (zeros, not NaN).
                simd::scale(row, if sum > 0.0 { 1.0 / sum } else { 0.0 });
            }
            unsafe {
                gemm::gemm(
                    rows, dv, nk,
                    dst.0.add(((bi * nq + r0) * h + hi) * dv), 1, (h * dv) as isize, false,
                    s.as_ptr(), 1, nk as isize,
                    vv.at(bi, hi, 0), vv.strides[3] as isize, vv.strides[2] as isize,
                    0.0, 1.0, false, false, false, gemm::Parallelism::None,
                );
            }
        },
    );
    let t = FlexTensor::from_data(burn::tensor::TensorData::new(out, [b, nq, h, dv]));
    let view = Layout::new(Shape::from(vec![b, h, nq, dv]), vec![(nq * h * dv) as isize, dv as isize, (h * dv) as isize, 1], 0);
    Some(from_flex(t.with_layout(view)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{max_abs_diff, random};
    use burn::tensor::module::attention as burn_attention;
    use burn::tensor::ops::AttentionModuleOptions;

    #[test]
    fn equals_burns_attention_on_head_views_with_and_without_bias() {
        // [b, n, heads·d] split into heads the way the model does: a swap_dims view.
        for (b, h, nq, nk, d) in [(2, 3, 70, 70, 16), (1, 4, 9, 200, 8), (2, 2, 130, 5, 32)] {
            let q = random([b, nq, h * d], 1).reshape([b, nq, h, d]).swap_dims(1, 2);
            let k = random([b, nk, h * d], 2).reshape([b, nk, h, d]).swap_dims(1, 2);
            let v = random([b, nk, h * d], 3).reshape([b, nk, h, d]).swap_dims(1, 2);
            let want = burn_attention(q.clone(), k.clone(), v.clone(), None, None, AttentionModuleOptions::default());
            let got = attention(&q, &k, &v, None).unwrap();
            assert!(max_abs_diff(got.clone(), want.clone()) < 1e-5, "{b} {h} {nq} {nk} {d}");
            // The recombined heads read the same values.
            let merged = got.swap_dims(1, 2).reshape([b, nq, h * d]);
            assert!(max_abs_diff(merged, want.swap_dims(1, 2).reshape([b, nq, h * d])) < 1e-5);

            // A key-padding bias broadcast over heads and queries (−∞ on the last key).
            let mut pad = vec![0.0f32; b * nk];
            for bi in 0..b {
                pad[bi * nk + nk - 1] = f32::NEG_INFINITY;
            }
            let bias = Tensor::<crate::testing::F, 1>::from_floats(pad.as_slice(), &Default::default())
                .reshape([b, 1, 1, nk])
                .expand([b, h, nq, nk]);
            let want = burn_attention(q.clone(), k.clone(), v.clone(), None, Some(bias.clone()), AttentionModuleOptions::default());
            let got = attention(&q, &k, &v, Some(&bias)).unwrap();
            assert!(max_abs_diff(got, want) < 1e-5);
        }
    }
}
