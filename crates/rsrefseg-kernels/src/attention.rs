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

use crate::int8::{self, Int8Weight, QuantRows};
use crate::{flex_ref, for_each_task, for_each_task_with, from_flex, grad, simd, view_fits, SendPtr};

/// Query rows per task: a 64 × n_k score block (256 KiB at SigLIP's 1 024 keys, 1 MiB at Hiera's
/// 4 096-token global blocks) stays in L2.
const ROWS: usize = 64;

/// Fewest queries per head for which [`attention_int8`] runs int8 products (measured on Hiera's
/// windows: below this, packing the keys and values outweighs what int8 saves).
pub const MIN_INT8_QUERIES: usize = 128;

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
    if grad::serves::<B>() {
        return attention_autodiff(q, k, v, bias);
    }
    let (qt, kt, vt, bt) = flex_operands(q, k, v, bias)?;
    Some(from_flex(attention_flex(&qt, &kt, &vt, bt.as_ref())?))
}

/// The Flex tensors behind q, k, v and the bias, when the kernels serve them (plain Flex, f32).
fn flex_operands<B: Backend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    v: &Tensor<B, 4>,
    bias: Option<&Tensor<B, 4>>,
) -> Option<(FlexTensor, FlexTensor, FlexTensor, Option<FlexTensor>)> {
    let bt = match bias {
        Some(b) => Some(flex_ref(b)?),
        None => None,
    };
    Some((flex_ref(q)?, flex_ref(k)?, flex_ref(v)?, bt))
}

/// The forward kernel on Flex tensors (`None` when a view does not fit its buffer).
fn attention_flex(qt: &FlexTensor, kt: &FlexTensor, vt: &FlexTensor, bt: Option<&FlexTensor>) -> Option<FlexTensor> {
    let ops = Operands::of(qt, kt, vt, bt)?;
    let [b, h, nq, nk, _, dv] = ops.dims;
    let vv = &ops.v;
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
            ops.weights(s, bi, hi, r0);
            // SAFETY: the operand views were bounds-checked by `View::of`; the score block is this
            // worker's own; the output rows (bi, r0..r0+rows, hi, ..) belong to this task only.
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
    Some(heads_view(out, [b, h, nq, dv]))
}

/// The bounds-checked views of one attention call and its sizes `[b, heads, n_q, n_k, d, d_v]`.
struct Operands<'a> {
    dims: [usize; 6],
    q: View<'a>,
    k: View<'a>,
    v: View<'a>,
    bias: Option<View<'a>>,
}

impl<'a> Operands<'a> {
    fn of(qt: &'a FlexTensor, kt: &'a FlexTensor, vt: &'a FlexTensor, bt: Option<&'a FlexTensor>) -> Option<Self> {
        let [b, h, nq, d] = dims4(qt);
        let [_, _, nk, dv] = dims4(vt);
        Some(Self {
            dims: [b, h, nq, nk, d, dv],
            q: View::of(qt, [b, h, nq, d])?,
            k: View::of(kt, [b, h, nk, d])?,
            v: View::of(vt, [b, h, nk, dv])?,
            bias: match bt {
                Some(t) => Some(View::of(t, [b, h, nq, nk])?),
                None => None,
            },
        })
    }
}

impl Operands<'_> {
    /// The attention weights of head `(bi, hi)`'s query rows `r0..`: `p` (rows of `n_k`) becomes
    /// `softmax(q kᵀ/√d + bias)` for those rows, as the forward pass and the backward pass's
    /// recomputation both need it.
    fn weights(&self, p: &mut [f32], bi: usize, hi: usize, r0: usize) {
        let [_, _, _, nk, d, _] = self.dims;
        let rows = p.len() / nk;
        let (qv, kv) = (&self.q, &self.k);
        // SAFETY: the operand views were bounds-checked by `View::of`; `p` holds rows × n_k.
        unsafe {
            gemm::gemm(
                rows, nk, d,
                p.as_mut_ptr(), 1, nk as isize, false,
                qv.at(bi, hi, r0), qv.strides[3] as isize, qv.strides[2] as isize,
                kv.at(bi, hi, 0), kv.strides[2] as isize, kv.strides[3] as isize,
                0.0, 1.0 / (d as f32).sqrt(), false, false, false, gemm::Parallelism::None,
            );
        }
        self.bias_softmax(p, bi, hi, r0);
    }

    /// Scores `p` (rows of `n_k`) of head `(bi, hi)`'s query rows `r0..` → attention weights:
    /// the bias added, each row's softmax taken.
    fn bias_softmax(&self, p: &mut [f32], bi: usize, hi: usize, r0: usize) {
        self.add_bias(p, bi, hi, r0);
        // A row masked everywhere attends to nothing (zeros, not NaN).
        simd::softmax_rows(p, self.dims[3]);
    }

    /// Scores `p` of head `(bi, hi)`'s query rows `r0..` plus the bias, if any.
    fn add_bias(&self, p: &mut [f32], bi: usize, hi: usize, r0: usize) {
        let nk = self.dims[3];
        if let Some(bv) = &self.bias {
            for (i, row) in p.chunks_exact_mut(nk).enumerate() {
                let base = bv.offset + bi * bv.strides[0] + hi * bv.strides[1] + (r0 + i) * bv.strides[2];
                match bv.strides[3] {
                    1 => row.iter_mut().zip(&bv.data[base..base + nk]).for_each(|(x, &b)| *x += b),
                    st => row.iter_mut().enumerate().for_each(|(j, x)| *x += bv.data[base + j * st]),
                }
            }
        }
    }
}

/// [`attention`] with int8 products, for inference (the CLI's `--precision int8`): each head's
/// keys are quantised per key and its values per channel (packed once per head), each block of
/// queries per row, and the attention weights per row after the softmax; scores, bias and
/// softmax stay f32. See [`crate::int8`]. `None` when the kernels do not serve the backend, the
/// query rows are not contiguous or there are fewer than [`MIN_INT8_QUERIES`] queries (the caller
/// then runs the f32 attention).
pub fn attention_int8<B: Backend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    v: &Tensor<B, 4>,
    bias: Option<&Tensor<B, 4>>,
) -> Option<Tensor<B, 4>> {
    let (qt, kt, vt, bt) = flex_operands(q, k, v, bias)?;
    Some(from_flex(attention_int8_flex(&qt, &kt, &vt, bt.as_ref())?))
}

fn attention_int8_flex(qt: &FlexTensor, kt: &FlexTensor, vt: &FlexTensor, bt: Option<&FlexTensor>) -> Option<FlexTensor> {
    let ops = Operands::of(qt, kt, vt, bt)?;
    let [b, h, nq, nk, d, dv] = ops.dims;
    let (qv, kv, vv) = (&ops.q, &ops.k, &ops.v);
    // Packing a head's keys and values costs about as much as the products of a few dozen
    // queries: short sequences (Hiera's windows of 16, 49 and 64 tokens) stay with the f32 kernel.
    if qv.strides[3] != 1 || nq < MIN_INT8_QUERIES {
        return None;
    }
    let scale = 1.0 / (d as f32).sqrt();
    // Every head's kᵀ (`[d, n_k]`, 1/√d folded into its scales) and v (`[n_k, d_v]`), packed once.
    let mut packs: Vec<Option<(Int8Weight, Int8Weight)>> = (0..b * h).map(|_| None).collect();
    let slots = SendPtr(packs.as_mut_ptr());
    for_each_task(b * h, move |bh| {
        let slots = slots;
        let (bi, hi) = (bh / h, bh % h);
        let (kb, ks) = (kv.offset + bi * kv.strides[0] + hi * kv.strides[1], [kv.strides[2], kv.strides[3]]);
        let (vb, vs) = (vv.offset + bi * vv.strides[0] + hi * vv.strides[1], [vv.strides[2], vv.strides[3]]);
        let kt = Int8Weight::pack(d, nk, |j, col| col.extend((0..d).map(|c| kv.data[kb + j * ks[0] + c * ks[1]])), None, scale);
        let vp = Int8Weight::pack(nk, dv, |c, col| col.extend((0..nk).map(|j| vv.data[vb + j * vs[0] + c * vs[1]])), None, 1.0);
        // SAFETY: slot bh is this task's alone, and `packs` outlives the loop.
        unsafe { *slots.0.add(bh) = Some((kt, vp)) };
    });
    let packs: Vec<(Int8Weight, Int8Weight)> = packs.into_iter().map(|p| p.expect("every head was packed")).collect();
    let blocks = nq.div_ceil(ROWS);
    let mut out = vec![0.0f32; b * nq * h * dv];
    let dst = SendPtr(out.as_mut_ptr());
    for_each_task_with(
        b * h * blocks,
        || (vec![0.0f32; ROWS.min(nq) * nk], QuantRows::default(), vec![0.0f32; ROWS]),
        |(scores, rows_q, sums), task| {
            let dst = dst;
            let (bh, blk) = (task / blocks, task % blocks);
            let (bi, hi) = (bh / h, bh % h);
            let r0 = blk * ROWS;
            let rows = ROWS.min(nq - r0);
            let (kt, vp) = &packs[bh];
            let s = &mut scores[..rows * nk];
            let qb = qv.offset + bi * qv.strides[0] + hi * qv.strides[1] + r0 * qv.strides[2];
            rows_q.fill(rows, d, |r| &qv.data[qb + r * qv.strides[2]..][..d]);
            // SAFETY: the score block is this worker's own (rows × n_k).
            unsafe { int8::multiply(rows_q, kt, s.as_mut_ptr(), nk) };
            // The softmax's numerators e^(s − max) lie in [0, 1] with 1 at each row's maximum:
            // they are quantised as they are (no normalising pass, no search for the maximum)
            // and the row's 1 / Σ goes into its scale.
            ops.add_bias(s, bi, hi, r0);
            simd::softmax_numerators(s, nk, &mut sums[..rows]);
            let s = &scores[..rows * nk];
            rows_q.fill_unit(rows, nk, |r| &s[r * nk..][..nk], |r| if sums[r] > 0.0 { 1.0 / sums[r] } else { 0.0 });
            // SAFETY: the output rows (bi, r0..r0+rows, hi, ..) belong to this task only.
            unsafe { int8::multiply(rows_q, vp, dst.0.add(((bi * nq + r0) * h + hi) * dv), h * dv) };
        },
    );
    Some(heads_view(out, [b, h, nq, dv]))
}

fn dims4(t: &FlexTensor) -> [usize; 4] {
    let s = t.layout().shape();
    [s[0], s[1], s[2], s[3]]
}

/// A buffer laid out `[b, n, heads, d]` as its `[b, heads, n, d]` view.
fn heads_view(buf: Vec<f32>, [b, h, n, d]: [usize; 4]) -> FlexTensor {
    let t = FlexTensor::from_data(burn::tensor::TensorData::new(buf, [b, n, h, d]));
    t.with_layout(Layout::new(Shape::from(vec![b, h, n, d]), vec![(n * h * d) as isize, d as isize, (h * d) as isize, 1], 0))
}

/// Gradients of q, k, v given the output's (`dout`, `[b, heads, n_q, d_v]`), recomputing the
/// attention weights block by block (nothing of the forward pass is kept but its inputs):
/// `dV = Pᵀ dO`, `dP = dO Vᵀ`, `dS = P ⊙ (dP − rowsum(P ⊙ dP))`, `dQ = dS K / √d`,
/// `dK = dSᵀ Q / √d`. One task per (batch, head): dK and dV accumulate over its query blocks.
fn attention_backward(
    qt: &FlexTensor,
    kt: &FlexTensor,
    vt: &FlexTensor,
    bt: Option<&FlexTensor>,
    dout: &FlexTensor,
) -> Option<[FlexTensor; 3]> {
    let ops = Operands::of(qt, kt, vt, bt)?;
    let [b, h, nq, nk, d, dv] = ops.dims;
    let (qv, kv, vv) = (&ops.q, &ops.k, &ops.v);
    let ov = View::of(dout, [b, h, nq, dv])?;
    let scale = 1.0 / (d as f32).sqrt();
    let mut dq = vec![0.0f32; b * nq * h * d];
    let mut dk = vec![0.0f32; b * nk * h * d];
    let mut dvb = vec![0.0f32; b * nk * h * dv];
    let (dq_p, dk_p, dv_p) = (SendPtr(dq.as_mut_ptr()), SendPtr(dk.as_mut_ptr()), SendPtr(dvb.as_mut_ptr()));
    let rows_max = ROWS.min(nq);
    for_each_task_with(
        b * h,
        || (vec![0.0f32; rows_max * nk], vec![0.0f32; rows_max * nk]),
        |(p, dp), task| {
            let (dq_p, dk_p, dv_p) = (dq_p, dk_p, dv_p);
            let (bi, hi) = (task / h, task % h);
            let dk_at = unsafe { dk_p.0.add((bi * nk * h + hi) * d) };
            let dv_at = unsafe { dv_p.0.add((bi * nk * h + hi) * dv) };
            for r0 in (0..nq).step_by(ROWS) {
                let rows = ROWS.min(nq - r0);
                let (p, dp) = (&mut p[..rows * nk], &mut dp[..rows * nk]);
                let first = r0 == 0;
                // P = softmax(Q Kᵀ / √d + bias)
                ops.weights(p, bi, hi, r0);
                // SAFETY (all GEMMs): operand views bounds-checked by `View::of`; scratch is this
                // worker's; the (bi, hi) slices of dq, dk, dv belong to this task only.
                unsafe {
                    // dV += Pᵀ dO
                    gemm::gemm(
                        nk, dv, rows, dv_at, 1, (h * dv) as isize, !first,
                        p.as_ptr(), nk as isize, 1,
                        ov.at(bi, hi, r0), ov.strides[3] as isize, ov.strides[2] as isize,
                        1.0, 1.0, false, false, false, gemm::Parallelism::None,
                    );
                    // dP = dO Vᵀ
                    gemm::gemm(
                        rows, nk, dv, dp.as_mut_ptr(), 1, nk as isize, false,
                        ov.at(bi, hi, r0), ov.strides[3] as isize, ov.strides[2] as isize,
                        vv.at(bi, hi, 0), vv.strides[2] as isize, vv.strides[3] as isize,
                        0.0, 1.0, false, false, false, gemm::Parallelism::None,
                    );
                }
                // dS = P ⊙ (dP − rowsum(P ⊙ dP)), in dp
                for (pr, dr) in p.chunks_exact(nk).zip(dp.chunks_exact_mut(nk)) {
                    let dot: f32 = pr.iter().zip(dr.iter()).map(|(a, b)| a * b).sum();
                    for (x, &pv) in dr.iter_mut().zip(pr) {
                        *x = pv * (*x - dot);
                    }
                }
                unsafe {
                    // dQ = dS K / √d
                    gemm::gemm(
                        rows, d, nk, dq_p.0.add(((bi * nq + r0) * h + hi) * d), 1, (h * d) as isize, false,
                        dp.as_ptr(), 1, nk as isize,
                        kv.at(bi, hi, 0), kv.strides[3] as isize, kv.strides[2] as isize,
                        0.0, scale, false, false, false, gemm::Parallelism::None,
                    );
                    // dK += dSᵀ Q / √d
                    gemm::gemm(
                        nk, d, rows, dk_at, 1, (h * d) as isize, !first,
                        dp.as_ptr(), nk as isize, 1,
                        qv.at(bi, hi, r0), qv.strides[3] as isize, qv.strides[2] as isize,
                        1.0, scale, false, false, false, gemm::Parallelism::None,
                    );
                }
            }
        },
    );
    Some([heads_view(dq, [b, h, nq, d]), heads_view(dk, [b, h, nk, d]), heads_view(dvb, [b, h, nk, dv])])
}

/// The attention under autodiff: one node with parents q, k, v (the bias, SigLIP's key padding,
/// must not need a gradient; if it does, burn's composed attention is used).
fn attention_autodiff<B: Backend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    v: &Tensor<B, 4>,
    bias: Option<&Tensor<B, 4>>,
) -> Option<Tensor<B, 4>> {
    let (qa, ka, va) = (grad::ad_ref(q)?, grad::ad_ref(k)?, grad::ad_ref(v)?);
    let bias = match bias {
        Some(t) if t.is_require_grad() => return None,
        Some(t) => Some(grad::ad_ref(t)?.primitive),
        None => None,
    };
    let out = attention_flex(&qa.primitive, &ka.primitive, &va.primitive, bias.as_ref())?;
    let y = match grad::node(AttentionBackward, [&qa, &ka, &va]) {
        burn_autodiff::ops::OpsKind::Tracked(prep) => {
            prep.finish((qa.primitive.clone(), ka.primitive.clone(), va.primitive.clone(), bias), out)
        }
        burn_autodiff::ops::OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Some(grad::from_ad(y))
}

#[derive(Debug)]
struct AttentionBackward;

impl burn_autodiff::ops::Backward<burn_flex::Flex, 3> for AttentionBackward {
    type State = (FlexTensor, FlexTensor, FlexTensor, Option<FlexTensor>);

    fn backward(
        self,
        ops: burn_autodiff::ops::Ops<Self::State, 3>,
        grads: &mut burn_autodiff::grads::Gradients,
        _: &mut burn_autodiff::checkpoint::base::Checkpointer,
    ) {
        let (q, k, v, bias) = ops.state.clone();
        grad::register_grads(ops, grads, |dout| {
            let [dq, dk, dv] = attention_backward(&q, &k, &v, bias.as_ref(), &dout)
                .expect("the views were checked when the forward pass ran");
            [Some(dq), Some(dk), Some(dv)]
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{max_abs_diff, random};
    use burn::tensor::module::attention as burn_attention;
    use burn::tensor::ops::AttentionModuleOptions;

    /// q, k, v as the model splits heads: `[b, n, heads·d]` reshaped, then a swap_dims view.
    fn head_views(b: usize, h: usize, nq: usize, nk: usize, d: usize, seed: u64) -> [Tensor<crate::testing::F, 4>; 3] {
        let view = |n: usize, s: u64| random([b, n, h * d], s).reshape([b, n, h, d]).swap_dims(1, 2);
        [view(nq, seed), view(nk, seed + 1), view(nk, seed + 2)]
    }

    /// A key-padding bias broadcast over heads and queries (−∞ on the last key).
    fn padding_bias(b: usize, h: usize, nq: usize, nk: usize) -> Tensor<crate::testing::F, 4> {
        let mut pad = vec![0.0f32; b * nk];
        for bi in 0..b {
            pad[bi * nk + nk - 1] = f32::NEG_INFINITY;
        }
        Tensor::<crate::testing::F, 1>::from_floats(pad.as_slice(), &Default::default())
            .reshape([b, 1, 1, nk])
            .expand([b, h, nq, nk])
    }

    #[test]
    fn equals_burns_attention_on_head_views_with_and_without_bias() {
        // [b, n, heads·d] split into heads the way the model does: a swap_dims view.
        for (b, h, nq, nk, d) in [(2, 3, 70, 70, 16), (1, 4, 9, 200, 8), (2, 2, 130, 5, 32)] {
            let [q, k, v] = head_views(b, h, nq, nk, d, 1);
            let want = burn_attention(q.clone(), k.clone(), v.clone(), None, None, AttentionModuleOptions::default());
            let got = attention(&q, &k, &v, None).unwrap();
            assert!(max_abs_diff(got.clone(), want.clone()) < 1e-5, "{b} {h} {nq} {nk} {d}");
            // The recombined heads read the same values.
            let merged = got.swap_dims(1, 2).reshape([b, nq, h * d]);
            assert!(max_abs_diff(merged, want.swap_dims(1, 2).reshape([b, nq, h * d])) < 1e-5);

            let bias = padding_bias(b, h, nq, nk);
            let want = burn_attention(q.clone(), k.clone(), v.clone(), None, Some(bias.clone()), AttentionModuleOptions::default());
            let got = attention(&q, &k, &v, Some(&bias)).unwrap();
            assert!(max_abs_diff(got, want) < 1e-5);
        }
    }

    #[test]
    fn int8_attention_follows_the_f32_one() {
        // Head views as the model makes them, ragged sizes, with and without a key-padding bias.
        for (b, h, nq, nk, d) in [(2, 3, 270, 70, 16), (1, 4, 300, 200, 8), (2, 2, 260, 5, 32)] {
            let [q, k, v] = head_views(b, h, nq, nk, d, 21);
            let bias = padding_bias(b, h, nq, nk);
            for bias in [None, Some(&bias)] {
                let want = attention(&q, &k, &v, bias).unwrap();
                let got = attention_int8(&q, &k, &v, bias).unwrap();
                assert_eq!(got.dims(), want.dims());
                let (got, want) = (got.into_data().to_vec::<f32>().unwrap(), want.into_data().to_vec::<f32>().unwrap());
                let err: f32 = got.iter().zip(&want).map(|(a, b)| (a - b) * (a - b)).sum::<f32>().sqrt();
                let norm: f32 = want.iter().map(|a| a * a).sum::<f32>().sqrt();
                // 8-bit q, k, weights and v: a few per cent of the output's norm.
                assert!(err / norm < 0.05, "{b} {h} {nq} {nk} {d}: relative error {}", err / norm);
            }
        }
        // Short sequences are handed back to the f32 kernel.
        let x = random([1, 2, MIN_INT8_QUERIES - 1, 8], 24);
        assert!(attention_int8(&x, &x, &x, None).is_none());
    }

    #[test]
    fn under_autodiff_the_gradients_are_the_composed_ones() {
        type A = crate::grad::Ad;
        for (b, h, nq, nk, d, blocks) in [(2, 3, 70, 70, 16, false), (1, 2, 150, 9, 8, true), (2, 2, 9, 130, 32, false)] {
            // Inputs drawn once: the generator is global, and tests run in parallel.
            let inputs = [random([b, nq, h * d], 11), random([b, nk, h * d], 12), random([b, nk, h * d], 13)];
            let w0 = random([b, h, nq, d], 14);
            let run = |fast: bool| {
                let leaf = |i: usize| Tensor::<A, 3>::from_inner(inputs[i].clone()).require_grad();
                let (q0, k0, v0) = (leaf(0), leaf(1), leaf(2));
                let split = |t: Tensor<A, 3>, n| t.reshape([b, n, h, d]).swap_dims(1, 2);
                let (q, k, v) = (split(q0.clone(), nq), split(k0.clone(), nk), split(v0.clone(), nk));
                let bias = blocks.then(|| {
                    let mut pad = vec![0.0f32; nk];
                    pad[nk - 1] = f32::NEG_INFINITY;
                    Tensor::<A, 1>::from_floats(pad.as_slice(), &Default::default()).reshape([1, 1, 1, nk]).expand([b, h, nq, nk])
                });
                let y = if fast {
                    attention(&q, &k, &v, bias.as_ref()).expect("served")
                } else {
                    burn_attention(q, k, v, None, bias, AttentionModuleOptions::default())
                };
                let w = Tensor::<A, 4>::from_inner(w0.clone());
                let g = (y.clone() * w).sum().backward();
                let grads: Vec<_> = [&q0, &k0, &v0].iter().map(|t| t.grad(&g).unwrap()).collect();
                (y.inner(), grads)
            };
            let (y1, g1) = run(true);
            let (y0, g0) = run(false);
            let dy = max_abs_diff(y1, y0);
            assert!(dy < 1e-5, "{b} {h} {nq} {nk} {d}: {dy}");
            for (a, c) in g1.into_iter().zip(g0) {
                assert!(max_abs_diff(a, c) < 1e-4, "{b} {h} {nq} {nk} {d}");
            }
        }
    }
}
