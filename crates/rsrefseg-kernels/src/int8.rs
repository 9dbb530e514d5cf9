//! Int8 matrix products for inference on the CPU (the CLI's `--precision int8`).
//!
//! `x · W + b` with `W` quantised once, per output column (symmetric i8, scale `max|w| / 127`),
//! and every row of `x` quantised as it arrives (symmetric, scale `max|x| / 127`). The products
//! are integer dot products accumulated in i32, scaled back to f32 with the bias added in the
//! same pass. The micro-kernel is chosen at run time ([`Kernel`]): AVX-512 VNNI's `vpdpbusd`
//! (64 multiply-adds per instruction against f32 FMA's 16), AVX2's `vpmaddubsw` + `vpmaddwd`
//! (most x86-64 laptops and servers without AVX-512), a portable loop elsewhere. All give the
//! same bits (the same exact integers, the same fused multiply-add in the epilogue).
//!
//! `vpdpbusd` multiplies unsigned by signed bytes, so a row's values `q ∈ [-127, 127]` are
//! stored as `q + 128` and `128 · Σ_k w[k, j]` is subtracted from each column's sum. AVX2's
//! `vpmaddubsw` adds two such products in a saturating i16, which `255 · 127 · 2` would overflow;
//! its rows are therefore stored as `|q|` beside `q`, and `|q| · (w · sign q)` (at most
//! `127 · 127 · 2`) gives the exact `Σ q · w` with no offset.
//!
//! Layout: `W` is cut into panels of [`PANEL`] columns; a panel holds, for every group of four
//! `k`, the four bytes of each of its columns next to each other (`[k / 4][PANEL][4]`), which is
//! what one `vpdpbusd` lane reads. Rows are quantised per task (64 rows) into a scratch buffer
//! and multiplied eight at a time against each panel (8 × 48 i32 accumulators in 24 registers).
//! The attention kernel's int8 variant packs each head's keys and values the same way.

use std::fmt;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use burn_flex::FlexTensor;

use crate::{flex_ref, for_each_task_with, from_flex, into_flex, SendPtr};

/// Columns per packed panel: three 16-lane i32 vectors.
pub const PANEL: usize = 48;
/// Rows per micro-tile.
const MR: usize = 8;
/// Rows quantised and multiplied by one parallel task.
const ROWS_PER_TASK: usize = 64;

/// A `Linear` weight `[k, n]` (burn's layout) and bias, quantised and packed for [`matmul`].
pub struct Int8Weight {
    k: usize,
    n: usize,
    /// `k` rounded up to a multiple of 4.
    kp: usize,
    /// `[n / PANEL][kp / 4][PANEL][4]`, zero-padded in `k` and `n`.
    packed: Vec<i8>,
    /// Per column (padded to whole panels with zeros): dequantisation scale, `128 · Σ_k q[k, j]`,
    /// bias.
    scale: Vec<f32>,
    offset: Vec<i32>,
    bias: Vec<f32>,
}

impl fmt::Debug for Int8Weight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Int8Weight([{}, {}])", self.k, self.n)
    }
}

impl Int8Weight {
    /// Quantise `w` (`[k, n]`, row-major) and `bias` (`[n]`).
    pub fn new(w: &[f32], k: usize, n: usize, bias: Option<&[f32]>) -> Self {
        assert_eq!(w.len(), k * n, "Int8Weight: {} values for a [{k}, {n}] weight", w.len());
        if let Some(b) = bias {
            assert_eq!(b.len(), n, "Int8Weight: bias of {} values for {n} columns", b.len());
        }
        // Columns gathered 64 at a time (a column walk through a row-major matrix touches one
        // cache line per value; 64 columns share each line).
        const BLOCK: usize = 64;
        let mut block: Vec<f32> = Vec::new();
        Self::pack(k, n, |j, column| {
            let (j0, width) = (j / BLOCK * BLOCK, (n - j / BLOCK * BLOCK).min(BLOCK));
            if j == j0 {
                block.clear();
                block.resize(width * k, 0.0);
                for (kk, row) in w.chunks_exact(n).enumerate() {
                    for (c, &v) in row[j0..j0 + width].iter().enumerate() {
                        block[c * k + kk] = v;
                    }
                }
            }
            column.extend_from_slice(&block[(j - j0) * k..][..k]);
        }, bias, 1.0)
    }

    /// Quantise the `[k, n]` matrix whose column `j` (`k` values) `column(j, buf)` pushes onto
    /// the empty `buf` (called for j = 0, 1, … in order); the products come out multiplied by
    /// `factor`.
    pub(crate) fn pack(k: usize, n: usize, mut column: impl FnMut(usize, &mut Vec<f32>), bias: Option<&[f32]>, factor: f32) -> Self {
        let kp = k.div_ceil(4) * 4;
        let panels = n.div_ceil(PANEL);
        let np = panels * PANEL;
        let mut scale = vec![0.0f32; np];
        let mut offset = vec![0i32; np];
        let mut packed = vec![0i8; panels * kp * PANEL];
        let mut q = vec![0u8; kp];
        let mut buf = Vec::with_capacity(k);
        for j in 0..n {
            buf.clear();
            column(j, &mut buf);
            assert_eq!(buf.len(), k, "Int8Weight: column {j} has {} values, not {k}", buf.len());
            let col = &buf[..];
            // The column quantised as the rows are (`q + 128` in bytes, padding zeros at 128),
            // then re-centred: the weight side of `vpdpbusd` is signed.
            let amax = crate::simd::max_abs(col);
            let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
            crate::simd::quantize_u8(col, inv, &mut q[..k]);
            q[k..].fill(128);
            scale[j] = amax / 127.0 * factor;
            let (p, c) = (j / PANEL, j % PANEL);
            let panel = &mut packed[p * kp * PANEL..][..kp * PANEL];
            let mut sum = 0i32;
            for (g, four) in q.chunks_exact(4).enumerate() {
                for (t, &b) in four.iter().enumerate() {
                    let v = (b ^ 0x80) as i8;
                    panel[g * PANEL * 4 + c * 4 + t] = v;
                    sum += i32::from(v);
                }
            }
            offset[j] = 128 * sum;
        }
        let mut b = vec![0.0f32; np];
        if let Some(bias) = bias {
            b[..n].copy_from_slice(bias);
        }
        Self { k, n, kp, packed, scale, offset, bias: b }
    }

    /// From a `Linear`'s weight `[k, n]` and bias `[n]` when they live on the backend the kernels
    /// serve (plain Flex, f32); `None` otherwise.
    pub fn from_linear<B: Backend>(w: &Tensor<B, 2>, bias: Option<&Tensor<B, 1>>) -> Option<Self> {
        let [k, n] = w.dims();
        let w = flex_ref(w)?.to_contiguous();
        let bias = match bias {
            Some(b) => Some(flex_ref(b)?.to_contiguous()),
            None => None,
        };
        let ws: &[f32] = &w.storage()[..k * n];
        let bs: Option<&[f32]> = bias.as_ref().map(|b| &b.storage()[..n]);
        Some(Self::new(ws, k, n, bs))
    }

    /// `[k, n]`.
    pub fn dims(&self) -> [usize; 2] {
        [self.k, self.n]
    }
}

/// The micro-kernel [`matmul`] runs on this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// AVX-512 F/BW/VNNI: `vpdpbusd`, 8 rows × 48 columns in 24 registers.
    Vnni,
    /// AVX2 + FMA: `vpmaddubsw` + `vpmaddwd`, 4 rows × 16 columns in 8 registers.
    Avx2,
    /// Plain Rust (slower than the f32 product).
    Portable,
}

impl Kernel {
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Vnni => "avx512-vnni",
            Kernel::Avx2 => "avx2",
            Kernel::Portable => "portable",
        }
    }
}

/// The fastest micro-kernel the CPU runs (detected once; the detection is cached by std).
pub fn kernel() -> Kernel {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("avx512bw") && has!("avx512vnni") {
            return Kernel::Vnni;
        }
        if has!("avx2") && has!("fma") {
            return Kernel::Avx2;
        }
    }
    Kernel::Portable
}

/// Whether [`matmul`] runs on a vector kernel here (otherwise on the portable loop, which is
/// slower than the f32 product).
pub fn accelerated() -> bool {
    kernel() != Kernel::Portable
}

/// `x · W + b` over the last dimension of `x` (`[..., k]` → `[..., n]`), or `Err(x)` when the
/// kernels do not serve its backend (then the caller runs the f32 product).
pub fn linear<B: Backend, const D: usize>(x: Tensor<B, D>, w: &Int8Weight) -> Result<Tensor<B, D>, Tensor<B, D>> {
    let mut dims = x.dims();
    if dims[D - 1] != w.k {
        return Err(x);
    }
    let t = into_flex(x)?.to_contiguous();
    let m: usize = dims[..D - 1].iter().product();
    // Every output value is written by the product: no zero-filling pass first.
    let mut y: Vec<f32> = Vec::with_capacity(m * w.n);
    // SAFETY: `y` has room for m × n values; `matmul_raw` writes each of them, then they count.
    unsafe {
        matmul_raw(&t.storage()[..m * w.k], m, w, y.as_mut_ptr());
        y.set_len(m * w.n);
    }
    dims[D - 1] = w.n;
    Ok(from_flex(FlexTensor::from_data(TensorData::new(y, dims.to_vec()))))
}

/// `y[m, n] = x[m, k] · W + b`, all row-major.
pub fn matmul(x: &[f32], m: usize, w: &Int8Weight, y: &mut [f32]) {
    assert!(y.len() >= m * w.n, "int8 matmul: output buffer too small");
    // SAFETY: `y` holds m × n writable values.
    unsafe { matmul_raw(x, m, w, y.as_mut_ptr()) }
}

/// [`matmul`] into `m × n` values from `y`, each written (none read).
///
/// # Safety
/// `y` must address `m × n` writable values.
unsafe fn matmul_raw(x: &[f32], m: usize, w: &Int8Weight, y: *mut f32) {
    let (k, n) = (w.k, w.n);
    assert!(x.len() >= m * k, "int8 matmul: input buffer too small");
    if m == 0 || n == 0 {
        return;
    }
    let out = SendPtr(y);
    for_each_task_with(m.div_ceil(ROWS_PER_TASK), QuantRows::default, move |rows_q, task| {
        let out = out;
        let r0 = task * ROWS_PER_TASK;
        let rows = (m - r0).min(ROWS_PER_TASK);
        rows_q.fill(rows, k, |r| &x[(r0 + r) * k..][..k]);
        // SAFETY: this task alone writes rows r0..r0 + rows of `y` (n apart), all inside it.
        unsafe { multiply(rows_q, w, out.0.add(r0 * n), n) };
    });
}

/// Rows quantised for [`multiply`]: `q + 128` per value, `kp` bytes per row (zeros, stored as
/// 128, pad the rows to `kp` and their number to whole tiles), and each row's scale.
#[derive(Default)]
pub(crate) struct QuantRows {
    rows: usize,
    kp: usize,
    /// `q + 128`; `|q|` for the AVX2 kernel.
    data: Vec<u8>,
    /// `q`, for the AVX2 kernel only (empty otherwise).
    signed: Vec<i8>,
    scale: Vec<f32>,
}

impl QuantRows {
    /// Quantise `rows` rows of `k` values, row `r` being `row(r)`.
    pub(crate) fn fill<'a>(&mut self, rows: usize, k: usize, row: impl Fn(usize) -> &'a [f32]) {
        self.reset(rows, k);
        let kp = self.kp;
        for r in 0..rows {
            self.scale[r] = quantize_row(row(r), &mut self.data[r * kp..][..kp]);
        }
        self.finish();
    }

    /// Like [`QuantRows::fill`] for rows whose values lie in `[0, 1]` with 1 as their largest
    /// (softmax numerators), which then stand for `row(r)[i] · factor(r)`.
    pub(crate) fn fill_unit<'a>(&mut self, rows: usize, k: usize, row: impl Fn(usize) -> &'a [f32], factor: impl Fn(usize) -> f32) {
        self.reset(rows, k);
        let kp = self.kp;
        for r in 0..rows {
            crate::simd::quantize_u8(row(r), 127.0, &mut self.data[r * kp..][..k]);
            self.scale[r] = factor(r) / 127.0;
        }
        self.finish();
    }

    /// The AVX2 kernel's form of the rows: `|q|` in `data`, `q` in `signed` (padding 0 in both).
    fn finish(&mut self) {
        self.signed.clear();
        if kernel() != Kernel::Avx2 {
            return;
        }
        self.signed.extend(self.data.iter().map(|&b| (b ^ 0x80) as i8));
        for (d, &q) in self.data.iter_mut().zip(&self.signed) {
            *d = q.unsigned_abs();
        }
    }

    /// Room for `rows` rows of `k` values, all zero (stored as 128), in whole tiles.
    fn reset(&mut self, rows: usize, k: usize) {
        let kp = k.div_ceil(4) * 4;
        let padded = rows.div_ceil(MR) * MR;
        self.rows = rows;
        self.kp = kp;
        self.data.clear();
        self.data.resize(padded * kp, 128);
        self.scale.clear();
        self.scale.resize(padded, 0.0);
    }
}

/// `y = rows · W + b` for quantised rows: `rows.rows` rows of `w.n` values written from `y`,
/// `ldy` apart. One thread (callers parallelise over rows or heads).
///
/// # Safety
/// `y` must address `rows.rows` rows of `w.n` writable values, `ldy` apart.
pub(crate) unsafe fn multiply(rows: &QuantRows, w: &Int8Weight, y: *mut f32, ldy: usize) {
    assert_eq!(rows.kp, w.kp, "int8 multiply: rows of {} bytes against a weight of {}", rows.kp, w.kp);
    let kp = w.kp;
    let kernel = kernel();
    for p in 0..w.n.div_ceil(PANEL) {
        let epilogue = Epilogue {
            scale: &w.scale[p * PANEL..][..PANEL],
            offset: &w.offset[p * PANEL..][..PANEL],
            bias: &w.bias[p * PANEL..][..PANEL],
        };
        let panel = &w.packed[p * kp * PANEL..][..kp * PANEL];
        for t in 0..rows.rows.div_ceil(MR) {
            let tile = Tile {
                a: &rows.data[t * MR * kp..][..MR * kp],
                signed: if rows.signed.is_empty() { &[] } else { &rows.signed[t * MR * kp..][..MR * kp] },
                kp,
                w: panel,
                row_scale: &rows.scale[t * MR..][..MR],
                rows: (rows.rows - t * MR).min(MR),
                cols: (w.n - p * PANEL).min(PANEL),
            };
            // SAFETY: the tile's corner and extent lie inside the block the caller vouched for.
            let y0 = unsafe { y.add(t * MR * ldy + p * PANEL) };
            match kernel {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the CPU has AVX-512 F/BW/VNNI (`kernel`); `y0` as above.
                Kernel::Vnni => unsafe { vnni::tile(&tile, &epilogue, y0, ldy) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the CPU has AVX2 and FMA, the rows are in the AVX2 form (`finish`).
                Kernel::Avx2 => unsafe { avx2::tile(&tile, &epilogue, y0, ldy) },
                // SAFETY: as above.
                _ => unsafe { tile_portable(&tile, &epilogue, y0, ldy) },
            }
        }
    }
}

/// One micro-tile's operands: `MR` quantised rows (`kp` bytes each) against one panel.
struct Tile<'a> {
    /// `q + 128`, or `|q|` for the AVX2 kernel.
    a: &'a [u8],
    /// `q` (AVX2 kernel only).
    signed: &'a [i8],
    kp: usize,
    w: &'a [i8],
    row_scale: &'a [f32],
    /// Rows and columns of the tile that exist in the output (≤ MR, ≤ PANEL).
    rows: usize,
    cols: usize,
}

/// The panel's per-column terms of `y = (acc − offset) · (row_scale · scale) + bias`.
struct Epilogue<'a> {
    scale: &'a [f32],
    offset: &'a [i32],
    bias: &'a [f32],
}

/// Quantise one row: `q + 128` into `dst[..x.len()]`, 128 (zero) into the padding; returns
/// the row's scale. Round half to even through the float adder (`+ 1.5·2²³`), which
/// vectorises where a float-to-int cast does not.
fn quantize_row(x: &[f32], dst: &mut [u8]) -> f32 {
    let amax = crate::simd::max_abs(x);
    let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
    crate::simd::quantize_u8(x, inv, &mut dst[..x.len()]);
    dst[x.len()..].fill(128);
    amax / 127.0
}

/// The portable micro-kernel.
///
/// # Safety
/// `y` must address `tile.rows` rows of `tile.cols` writable values, `ldy` apart.
unsafe fn tile_portable(tile: &Tile, e: &Epilogue, y: *mut f32, ldy: usize) {
    let mut acc = [[0i32; PANEL]; MR];
    for k4 in 0..tile.kp / 4 {
        let w = &tile.w[k4 * PANEL * 4..][..PANEL * 4];
        for (r, acc) in acc.iter_mut().enumerate().take(tile.rows) {
            let a = &tile.a[r * tile.kp + k4 * 4..][..4];
            for (c, acc) in acc.iter_mut().enumerate() {
                let w = &w[c * 4..][..4];
                *acc += (0..4).map(|i| i32::from(a[i]) * i32::from(w[i])).sum::<i32>();
            }
        }
    }
    for (r, acc) in acc.iter().enumerate().take(tile.rows) {
        for c in 0..tile.cols {
            let s = e.scale[c] * tile.row_scale[r];
            let v = (acc[c] - e.offset[c]) as f32;
            // SAFETY: (r, c) lies inside the tile the caller vouched for.
            unsafe { *y.add(r * ldy + c) = v.mul_add(s, e.bias[c]) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use std::arch::x86_64::*;

    use super::{Epilogue, Tile, MR, PANEL};

    /// The AVX-512 VNNI micro-kernel: 8 rows × 48 columns in 24 i32 accumulators.
    ///
    /// # Safety
    /// The CPU has AVX-512 F, BW and VNNI; `y` as for `tile_portable`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub unsafe fn tile(tile: &Tile, e: &Epilogue, y: *mut f32, ldy: usize) {
        debug_assert!(tile.a.len() >= MR * tile.kp && tile.w.len() >= tile.kp * PANEL);
        let (a, w, kp) = (tile.a.as_ptr(), tile.w.as_ptr(), tile.kp);
        let mut acc = [[_mm512_setzero_si512(); 3]; MR];
        for k4 in 0..kp / 4 {
            // SAFETY (all loads): `w` holds kp / 4 groups of PANEL × 4 bytes, `a` MR rows of kp.
            let wk = unsafe { w.add(k4 * PANEL * 4) };
            let w0 = unsafe { _mm512_loadu_si512(wk.cast()) };
            let w1 = unsafe { _mm512_loadu_si512(wk.add(64).cast()) };
            let w2 = unsafe { _mm512_loadu_si512(wk.add(128).cast()) };
            for (r, acc) in acc.iter_mut().enumerate() {
                let ar = unsafe { a.add(r * kp + k4 * 4).cast::<i32>().read_unaligned() };
                let ar = _mm512_set1_epi32(ar);
                acc[0] = _mm512_dpbusd_epi32(acc[0], ar, w0);
                acc[1] = _mm512_dpbusd_epi32(acc[1], ar, w1);
                acc[2] = _mm512_dpbusd_epi32(acc[2], ar, w2);
            }
        }
        for v in 0..3 {
            let c0 = v * 16;
            if c0 >= tile.cols {
                break;
            }
            let left = tile.cols - c0;
            let mask: __mmask16 = if left >= 16 { 0xffff } else { (1u16 << left) - 1 };
            // SAFETY: the epilogue slices hold PANEL values.
            let scale = unsafe { _mm512_loadu_ps(e.scale.as_ptr().add(c0)) };
            let offset = unsafe { _mm512_loadu_si512(e.offset.as_ptr().add(c0).cast()) };
            let bias = unsafe { _mm512_loadu_ps(e.bias.as_ptr().add(c0)) };
            for (r, acc) in acc.iter().enumerate() {
                if r < tile.rows {
                    let s = _mm512_mul_ps(scale, _mm512_set1_ps(tile.row_scale[r]));
                    let q = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[v], offset));
                    // SAFETY: row r < rows, the masked columns < cols: inside the tile.
                    unsafe { _mm512_mask_storeu_ps(y.add(r * ldy + c0), mask, _mm512_fmadd_ps(q, s, bias)) };
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{Epilogue, Tile, MR, PANEL};

    /// The AVX2 micro-kernel: the 8 × 48 tile as 4 × 16 sub-tiles (8 i32 accumulators each).
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `tile.a` holds `|q|` and `tile.signed` `q` (MR rows of kp);
    /// `y` as for `tile_portable`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tile(tile: &Tile, e: &Epilogue, y: *mut f32, ldy: usize) {
        debug_assert!(tile.a.len() >= MR * tile.kp && tile.signed.len() >= MR * tile.kp);
        debug_assert!(tile.w.len() >= tile.kp * PANEL);
        for r0 in (0..tile.rows).step_by(4) {
            for c0 in (0..tile.cols).step_by(16) {
                // SAFETY: rows r0..r0 + 4 ≤ MR and columns c0..c0 + 16 ≤ PANEL exist in the
                // operands; only the tile's own rows and columns are stored.
                unsafe { sub_tile(tile, e, r0, c0, y, ldy) };
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn sub_tile(tile: &Tile, e: &Epilogue, r0: usize, c0: usize, y: *mut f32, ldy: usize) {
        let (abs, sgn, kp) = (tile.a.as_ptr(), tile.signed.as_ptr(), tile.kp);
        let w = unsafe { tile.w.as_ptr().add(c0 * 4) };
        let ones = _mm256_set1_epi16(1);
        let mut acc = [[_mm256_setzero_si256(); 2]; 4];
        for k4 in 0..kp / 4 {
            // SAFETY (all loads): `w` holds kp / 4 groups of PANEL × 4 bytes (c0 + 16 ≤ PANEL),
            // `abs` and `sgn` MR rows of kp.
            let wk = unsafe { w.add(k4 * PANEL * 4) };
            let w0 = unsafe { _mm256_loadu_si256(wk.cast()) };
            let w1 = unsafe { _mm256_loadu_si256(wk.add(32).cast()) };
            for (r, acc) in acc.iter_mut().enumerate() {
                let at = (r0 + r) * kp + k4 * 4;
                let a = _mm256_set1_epi32(unsafe { abs.add(at).cast::<i32>().read_unaligned() });
                let s = _mm256_set1_epi32(unsafe { sgn.add(at).cast::<i32>().read_unaligned() });
                // |q| · (w · sign q): pairs of at most 2 · 127 · 127, exact in i16.
                let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(a, _mm256_sign_epi8(w0, s)), ones);
                let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(a, _mm256_sign_epi8(w1, s)), ones);
                acc[0] = _mm256_add_epi32(acc[0], p0);
                acc[1] = _mm256_add_epi32(acc[1], p1);
            }
        }
        for (v, c) in [c0, c0 + 8].into_iter().enumerate() {
            if c >= tile.cols {
                break;
            }
            let left = (tile.cols - c).min(8) as i32;
            let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(left), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
            // SAFETY: the epilogue slices hold PANEL values (c + 8 ≤ PANEL).
            let scale = unsafe { _mm256_loadu_ps(e.scale.as_ptr().add(c)) };
            let bias = unsafe { _mm256_loadu_ps(e.bias.as_ptr().add(c)) };
            for (r, acc) in acc.iter().enumerate() {
                if r0 + r >= tile.rows {
                    break;
                }
                let s = _mm256_mul_ps(scale, _mm256_set1_ps(tile.row_scale[r0 + r]));
                // Already Σ q · w: the offset of the `q + 128` form does not apply.
                let out = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[v]), s, bias);
                // SAFETY: row r0 + r < rows, the masked columns < cols: inside the tile.
                unsafe { _mm256_maskstore_ps(y.add((r0 + r) * ldy + c), mask, out) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{random, F};
    use burn::tensor::module::linear as burn_linear;

    /// Relative error of the int8 product against the f32 one, as RMS over RMS.
    fn rel_rms(a: &[f32], b: &[f32]) -> f32 {
        let d: f32 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
        let r: f32 = b.iter().map(|y| y * y).sum();
        (d / r).sqrt()
    }

    #[test]
    fn int8_product_follows_the_f32_one() {
        // Shapes with ragged edges in every direction: k not a multiple of 4, n not of the
        // panel, m not of the tile or the task.
        for &(m, k, n) in &[(1, 3, 5), (7, 13, 49), (130, 96, 96), (67, 257, 100)] {
            let x = random([m, k], 1);
            let w = random([k, n], 2);
            let b = random([n], 3);
            let q = Int8Weight::from_linear(&w, Some(&b)).expect("Flex tensors");
            assert_eq!(q.dims(), [k, n]);
            let y = linear(x.clone(), &q).expect("served on Flex");
            let f = burn_linear(x, w, Some(b));
            let (y, f) = (y.into_data().to_vec::<f32>().unwrap(), f.into_data().to_vec::<f32>().unwrap());
            let e = rel_rms(&y, &f);
            // Two 8-bit roundings of Gaussian values: about 1 % of the product's RMS.
            assert!(e < 0.02, "({m}, {k}, {n}): relative RMS error {e}");
        }
    }

    /// The dispatched kernel's output against the portable kernel's, tile by tile, on the
    /// same quantised rows.
    fn assert_same_bits_as_portable(x: &[f32], w: &[f32], b: &[f32], [m, k, n]: [usize; 3]) {
        let q = Int8Weight::new(w, k, n, Some(b));
        let mut fast = vec![0.0f32; m * n];
        matmul(x, m, &q, &mut fast);
        let kp = q.kp;
        let mut slow = vec![0.0f32; m * n];
        let mut rows_q = vec![128u8; m.div_ceil(MR) * MR * kp];
        let mut row_scale = vec![0.0f32; m.div_ceil(MR) * MR];
        for r in 0..m {
            row_scale[r] = quantize_row(&x[r * k..][..k], &mut rows_q[r * kp..][..kp]);
        }
        for p in 0..n.div_ceil(PANEL) {
            let e = Epilogue {
                scale: &q.scale[p * PANEL..][..PANEL],
                offset: &q.offset[p * PANEL..][..PANEL],
                bias: &q.bias[p * PANEL..][..PANEL],
            };
            for t in 0..m.div_ceil(MR) {
                let tile = Tile {
                    a: &rows_q[t * MR * kp..][..MR * kp],
                    signed: &[],
                    kp,
                    w: &q.packed[p * kp * PANEL..][..kp * PANEL],
                    row_scale: &row_scale[t * MR..][..MR],
                    rows: (m - t * MR).min(MR),
                    cols: (n - p * PANEL).min(PANEL),
                };
                unsafe { tile_portable(&tile, &e, slow.as_mut_ptr().add(t * MR * n + p * PANEL), n) };
            }
        }
        assert_eq!(fast, slow, "{:?} kernel", kernel());
    }

    #[test]
    fn vector_and_portable_kernels_give_the_same_bits() {
        if !accelerated() {
            return;
        }
        let (m, k, n) = (19, 70, 101);
        let x = random([m, k], 4).into_data().to_vec::<f32>().unwrap();
        let w = random([k, n], 5).into_data().to_vec::<f32>().unwrap();
        let b = random([n], 6).into_data().to_vec::<f32>().unwrap();
        assert_same_bits_as_portable(&x, &w, &b, [m, k, n]);
        // Every value at ±127 after quantisation, signs mixed: the largest pair sums AVX2's
        // 16-bit intermediate sees (2 · 127 · 127), which must not saturate.
        let sign = |i: usize| if (i * 7 + i / 3) % 5 < 2 { -1.0 } else { 1.0 };
        let x: Vec<f32> = (0..m * k).map(sign).collect();
        let w: Vec<f32> = (0..k * n).map(|i| sign(i + 1)).collect();
        let b = vec![0.0; n];
        assert_same_bits_as_portable(&x, &w, &b, [m, k, n]);
        let x = vec![1.0; m * k];
        let w = vec![-1.0; k * n];
        assert_same_bits_as_portable(&x, &w, &b, [m, k, n]);
    }

    #[test]
    fn zero_rows_and_columns_stay_exact() {
        // A zero row has scale 0 (no division by zero) and gives the bias; a zero column gives
        // its bias on every row.
        let (m, k, n) = (3, 8, 4);
        let mut x = random([m, k], 7).into_data().to_vec::<f32>().unwrap();
        x[k..2 * k].fill(0.0);
        let mut w = random([k, n], 8).into_data().to_vec::<f32>().unwrap();
        for row in w.chunks_exact_mut(n) {
            row[2] = 0.0;
        }
        let b = [0.5, -1.0, 2.0, 3.0];
        let q = Int8Weight::new(&w, k, n, Some(&b));
        let mut y = vec![f32::NAN; m * n];
        matmul(&x, m, &q, &mut y);
        assert_eq!(&y[n..2 * n], &b);
        assert!((0..m).all(|r| y[r * n + 2] == 2.0));
        assert!(y.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn other_backends_and_shapes_are_handed_back() {
        type N = burn::backend::NdArray<f32>;
        let w = Tensor::<N, 2>::zeros([4, 4], &Default::default());
        assert!(Int8Weight::from_linear(&w, None).is_none());
        let q = Int8Weight::new(&[0.0; 16], 4, 4, None);
        let x = Tensor::<N, 2>::zeros([2, 4], &Default::default());
        assert!(linear(x, &q).is_err());
        let x: Tensor<F, 2> = random([2, 5], 9);
        assert!(linear(x, &q).is_err(), "k mismatch");
    }
}
