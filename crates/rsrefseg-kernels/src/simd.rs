//! Vectorised element-wise math on f32 slices: `exp`, `erf`, the two GELUs and the softmax row.
//!
//! The bodies are branch-free scalar code that the compiler vectorises; [`dispatch!`] compiles
//! each once more for AVX-512 and for AVX2 + FMA and picks the widest the CPU has at run time, so
//! one x86-64 binary runs everywhere. In the browser the crate is built with SIMD128 and the
//! plain body is the vector one.
//!
//! Accuracy (checked in the tests against f64): `exp` ≤ 3 ulp; `erf` ≤ 2e-7 absolute
//! (Abramowitz & Stegun 7.1.26, the approximation PyTorch's vectorised CPU `erf` uses); the
//! GELUs follow to ~1e-6 absolute.

/// Generates `pub fn $name(args)` that runs `$body(args)` compiled for the widest x86 vector
/// extension present (AVX-512, else AVX2 + FMA, else the baseline).
macro_rules! dispatch {
    ($(#[$doc:meta])* $name:ident => $body:ident ($($arg:ident : $ty:ty),*) $(-> $ret:ty)?) => {
        $(#[$doc])*
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn v4($($arg: $ty),*) $(-> $ret)? { $body($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($arg: $ty),*) $(-> $ret)? { $body($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has the features `v4` is compiled for.
                    return unsafe { v4($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: as above, for `v3`.
                    return unsafe { v3($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

/// Lanes of the hand-split reductions (max, sum): wide enough for AVX-512, and independent
/// accumulators let the compiler vectorise without reassociating a single sum.
const LANES: usize = 16;

const LOG2E: f32 = std::f32::consts::LOG2_E;
// ln 2 split so that `n · LN2_HI` is exact for the |n| ≤ 128 that occur.
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;

/// `eˣ` for one lane: `x = n·ln2 + r`, |r| ≤ ln2/2, `eʳ` by its degree-6 Taylor polynomial,
/// `2ⁿ` built in the exponent bits. 0 below −87.3 (including −∞), ∞ above 88.7, NaN stays NaN.
#[inline(always)]
pub fn exp_lane(x: f32) -> f32 {
    let xc = x.clamp(-87.5, 88.7);
    let n = (xc * LOG2E + 0.5).floor();
    let r = xc - n * LN2_HI - n * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // 2ⁿ from the bits of n + 127 + 1.5·2²³ (the integer sits in the low mantissa bits; the
    // shift drops the rest): unlike `n as i32`, which saturates lane by lane, this vectorises.
    let two_n = f32::from_bits((n + (127.0 + 12_582_912.0)).to_bits() << 23);
    let y = p * two_n;
    let y = if x < -87.3 { 0.0 } else { y };
    if x.is_nan() { x } else { y }
}

/// `erf(x)` for one lane (Abramowitz & Stegun 7.1.26, |error| ≤ 1.5e-7).
#[inline(always)]
pub fn erf_lane(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp_lane(-a * a);
    if x < 0.0 { -y } else { y }
}

/// Exact GELU, `x · ½(1 + erf(x/√2))` (PyTorch `nn.GELU()`).
#[inline(always)]
pub fn gelu_erf_lane(x: f32) -> f32 {
    x * 0.5 * (1.0 + erf_lane(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// tanh GELU, `½x(1 + tanh(u))` with `u = √(2/π)(x + 0.044715x³)`, written as the equal
/// `x / (1 + e^(−2u))`.
#[inline(always)]
pub fn gelu_tanh_lane(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let u = SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x);
    x / (1.0 + exp_lane(-2.0 * u))
}

/// Derivative of the exact GELU: `Φ(x) + x·φ(x)`.
#[inline(always)]
pub fn gelu_erf_grad_lane(x: f32) -> f32 {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    0.5 * (1.0 + erf_lane(x * std::f32::consts::FRAC_1_SQRT_2)) + x * INV_SQRT_2PI * exp_lane(-0.5 * x * x)
}

/// Derivative of the tanh GELU `x·σ(2u)`: `σ + x·σ(1 − σ)·2u'`.
#[inline(always)]
pub fn gelu_tanh_grad_lane(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let u = SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x);
    let s = 1.0 / (1.0 + exp_lane(-2.0 * u));
    s + x * s * (1.0 - s) * 2.0 * SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044_715 * x * x)
}

#[inline(always)]
fn grad_body(x: &[f32], g: &[f32], dst: &mut [f32], f: impl Fn(f32) -> f32) {
    for ((d, &x), &g) in dst.iter_mut().zip(x).zip(g) {
        *d = g * f(x);
    }
}

#[inline(always)]
fn gelu_erf_grad_body(x: &[f32], g: &[f32], dst: &mut [f32]) {
    grad_body(x, g, dst, gelu_erf_grad_lane)
}

#[inline(always)]
fn gelu_tanh_grad_body(x: &[f32], g: &[f32], dst: &mut [f32]) {
    grad_body(x, g, dst, gelu_tanh_grad_lane)
}

#[inline(always)]
fn map_body(src: &[f32], dst: &mut [f32], f: impl Fn(f32) -> f32) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = f(s);
    }
}

#[inline(always)]
fn gelu_erf_body(src: &[f32], dst: &mut [f32]) {
    map_body(src, dst, gelu_erf_lane)
}

#[inline(always)]
fn gelu_tanh_body(src: &[f32], dst: &mut [f32]) {
    map_body(src, dst, gelu_tanh_lane)
}

#[inline(always)]
fn gelu_erf_inplace_body(xs: &mut [f32]) {
    for x in xs.iter_mut() {
        *x = gelu_erf_lane(*x);
    }
}

#[inline(always)]
fn gelu_tanh_inplace_body(xs: &mut [f32]) {
    for x in xs.iter_mut() {
        *x = gelu_tanh_lane(*x);
    }
}

#[inline(always)]
fn exp_inplace_body(xs: &mut [f32]) {
    for x in xs.iter_mut() {
        *x = exp_lane(*x);
    }
}

/// Softmax numerator of one score row in place: `xᵢ ← e^(xᵢ − max x)`; returns `Σ xᵢ`.
#[inline(always)]
fn softmax_row_body(xs: &mut [f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            m[i] = if c[i] > m[i] { c[i] } else { m[i] };
        }
    }
    let mut max = chunks.remainder().iter().fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
    for v in m {
        max = if v > max { v } else { max };
    }
    // A row masked everywhere (all −∞) stays all zeros instead of NaN.
    let max = if max == f32::NEG_INFINITY { 0.0 } else { max };
    let mut s = [0.0f32; LANES];
    let mut chunks = xs.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            c[i] = exp_lane(c[i] - max);
            s[i] += c[i];
        }
    }
    let mut sum = 0.0;
    for x in chunks.into_remainder() {
        *x = exp_lane(*x - max);
        sum += *x;
    }
    sum + s.iter().sum::<f32>()
}

#[inline(always)]
fn scale_body(xs: &mut [f32], k: f32) {
    for x in xs.iter_mut() {
        *x *= k;
    }
}

/// Every row (of `nk`) of a score block becomes its softmax numerators `e^(xᵢ − max x)` (all
/// zeros for a row masked everywhere); then `each(r, row, Σ row)` for every row.
#[inline(always)]
fn softmax_numerators_each(s: &mut [f32], nk: usize, mut each: impl FnMut(usize, &mut [f32], f32)) {
    if nk >= LANES {
        for (r, row) in s.chunks_exact_mut(nk).enumerate() {
            let sum = softmax_row_body(row);
            each(r, row, sum);
        }
        return;
    }
    // Rows shorter than a vector (SAM's image tokens attending to a dozen prompt tokens): each
    // row's maximum subtracted, then the whole block exponentiated in one vectorised pass.
    for row in s.chunks_exact_mut(nk) {
        let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
        let max = if max == f32::NEG_INFINITY { 0.0 } else { max };
        row.iter_mut().for_each(|x| *x -= max);
    }
    exp_inplace_body(s);
    for (r, row) in s.chunks_exact_mut(nk).enumerate() {
        let sum: f32 = row.iter().sum();
        each(r, row, sum);
    }
}

#[inline(always)]
fn softmax_numerators_body(s: &mut [f32], nk: usize, sums: &mut [f32]) {
    softmax_numerators_each(s, nk, |r, _, sum| sums[r] = sum);
}

/// `max |xᵢ|` (0 for an empty slice; NaN ignored).
#[inline(always)]
fn max_abs_body(xs: &[f32]) -> f32 {
    let mut m = [0.0f32; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            let a = c[i].abs();
            m[i] = if a > m[i] { a } else { m[i] };
        }
    }
    let tail = chunks.remainder().iter().fold(0.0f32, |a, &b| if b.abs() > a { b.abs() } else { a });
    m.iter().fold(tail, |a, &b| if b > a { b } else { a })
}

/// `dst[i] = round(src[i] · inv) + 128` as a byte, for `|src[i] · inv| ≤ 127.5`: rounded half to
/// even by adding `1.5·2²³` (the integer lands in the low mantissa bits), which vectorises where
/// a float-to-int cast does not.
#[inline(always)]
fn quantize_u8_body(src: &[f32], inv: f32, dst: &mut [u8]) {
    for (d, &x) in dst.iter_mut().zip(src) {
        let t = x * inv + (128.0 + 12_582_912.0);
        *d = t.to_bits() as u8;
    }
}

/// Every row (of `nk`) of a score block becomes its softmax; a row masked everywhere becomes
/// zeros, not NaN.
#[inline(always)]
fn softmax_rows_body(s: &mut [f32], nk: usize) {
    softmax_numerators_each(s, nk, |_, row, sum| scale_body(row, if sum > 0.0 { 1.0 / sum } else { 0.0 }));
}

dispatch!(
    /// `dst[i] = gelu_erf(src[i])`.
    gelu_erf => gelu_erf_body(src: &[f32], dst: &mut [f32])
);
dispatch!(
    /// `dst[i] = gelu_tanh(src[i])`.
    gelu_tanh => gelu_tanh_body(src: &[f32], dst: &mut [f32])
);
dispatch!(
    /// `xs[i] = gelu_erf(xs[i])`.
    gelu_erf_inplace => gelu_erf_inplace_body(xs: &mut [f32])
);
dispatch!(
    /// `xs[i] = gelu_tanh(xs[i])`.
    gelu_tanh_inplace => gelu_tanh_inplace_body(xs: &mut [f32])
);
dispatch!(
    /// `dst[i] = g[i] · gelu_erf'(x[i])`.
    gelu_erf_grad => gelu_erf_grad_body(x: &[f32], g: &[f32], dst: &mut [f32])
);
dispatch!(
    /// `dst[i] = g[i] · gelu_tanh'(x[i])`.
    gelu_tanh_grad => gelu_tanh_grad_body(x: &[f32], g: &[f32], dst: &mut [f32])
);
dispatch!(
    /// `xs[i] = eˣⁱ`.
    exp_inplace => exp_inplace_body(xs: &mut [f32])
);
dispatch!(
    /// Softmax of every row (of `nk` scores) of a block, in place.
    softmax_rows => softmax_rows_body(s: &mut [f32], nk: usize)
);
dispatch!(
    /// Softmax numerators `e^(xᵢ − max x)` of every row (of `nk`) of a score block, in place;
    /// each row's sum into `sums`.
    softmax_numerators => softmax_numerators_body(s: &mut [f32], nk: usize, sums: &mut [f32])
);
dispatch!(
    /// `max |xᵢ|` of a slice (0 when empty; NaN ignored).
    max_abs => max_abs_body(xs: &[f32]) -> f32
);
dispatch!(
    /// Quantise to unsigned bytes: `dst[i] = round(src[i] · inv) + 128` (half to even), for
    /// `|src[i] · inv| ≤ 127.5`.
    quantize_u8 => quantize_u8_body(src: &[f32], inv: f32, dst: &mut [u8])
);

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_is_within_two_ulp_and_handles_the_edges() {
        let mut worst = 0;
        let mut x = -87.0f32;
        while x < 88.0 {
            let mut v = [x];
            exp_inplace(&mut v);
            let want = (x as f64).exp() as f32;
            worst = worst.max(ulps(v[0], want));
            x += 0.0137;
        }
        assert!(worst <= 3, "exp: {worst} ulp");
        let mut v = [f32::NEG_INFINITY, -100.0, 0.0, 100.0, f32::INFINITY, f32::NAN];
        exp_inplace(&mut v);
        assert_eq!(&v[..5], &[0.0, 0.0, 1.0, f32::INFINITY, f32::INFINITY]);
        assert!(v[5].is_nan());
    }

    #[test]
    fn gelus_match_their_definitions() {
        let xs: Vec<f32> = (-4000..4000).map(|i| i as f32 * 0.0025).chain([-30.0, -12.0, 12.0, 30.0]).collect();
        let mut e = vec![0.0; xs.len()];
        let mut t = vec![0.0; xs.len()];
        gelu_erf(&xs, &mut e);
        gelu_tanh(&xs, &mut t);
        for (i, &x) in xs.iter().enumerate() {
            let xd = x as f64;
            let want_e = 0.5 * xd * (1.0 + libm_erf(xd / 2f64.sqrt()));
            let u = (2.0 / std::f64::consts::PI).sqrt() * (xd + 0.044715 * xd * xd * xd);
            let want_t = 0.5 * xd * (1.0 + u.tanh());
            assert!((e[i] as f64 - want_e).abs() < 2e-6 * (1.0 + xd.abs()), "gelu_erf({x}) = {} vs {want_e}", e[i]);
            assert!((t[i] as f64 - want_t).abs() < 2e-6 * (1.0 + xd.abs()), "gelu_tanh({x}) = {} vs {want_t}", t[i]);
        }
        // The in-place variants are the same function.
        let mut e2 = xs.clone();
        gelu_erf_inplace(&mut e2);
        assert_eq!(e, e2);
        let mut t2 = xs.clone();
        gelu_tanh_inplace(&mut t2);
        assert_eq!(t, t2);
    }

    #[test]
    fn gelu_derivatives_match_finite_differences() {
        let h = 1e-3f64;
        for i in -300..300 {
            let x = i as f64 * 0.021;
            let e = |x: f64| 0.5 * x * (1.0 + libm_erf(x / 2f64.sqrt()));
            let t = |x: f64| {
                let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
                0.5 * x * (1.0 + u.tanh())
            };
            let de = (e(x + h) - e(x - h)) / (2.0 * h);
            let dt = (t(x + h) - t(x - h)) / (2.0 * h);
            let mut out = [0.0f32];
            gelu_erf_grad(&[x as f32], &[2.0], &mut out);
            assert!((out[0] as f64 - 2.0 * de).abs() < 1e-5, "gelu_erf'({x})");
            gelu_tanh_grad(&[x as f32], &[2.0], &mut out);
            assert!((out[0] as f64 - 2.0 * dt).abs() < 1e-5, "gelu_tanh'({x})");
        }
    }

    /// erf in f64 by its Taylor series (|x| < 3) or its asymptotic complement: a reference
    /// independent of the approximation under test.
    fn libm_erf(x: f64) -> f64 {
        if x.abs() > 3.0 {
            let z = x.abs();
            let mut term = 1.0;
            let mut sum = 1.0;
            for n in 1..8 {
                term *= -((2 * n - 1) as f64) / (2.0 * z * z);
                sum += term;
            }
            let erfc = (-z * z).exp() / (z * std::f64::consts::PI.sqrt()) * sum;
            return x.signum() * (1.0 - erfc);
        }
        let mut term = x;
        let mut sum = x;
        for n in 1..200 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        2.0 / std::f64::consts::PI.sqrt() * sum
    }

    #[test]
    fn softmax_rows_normalise_short_and_long_rows() {
        for nk in [1usize, 7, 16, 33, 1000] {
            let rows = 3;
            let mut s: Vec<f32> = (0..rows * nk).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.7 + (i / nk) as f32).collect();
            let want: Vec<f64> = s
                .chunks(nk)
                .flat_map(|row| {
                    let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                    let e: Vec<f64> = row.iter().map(|&x| ((x - max) as f64).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    e.into_iter().map(move |v| v / sum)
                })
                .collect();
            softmax_rows(&mut s, nk);
            for (a, b) in s.iter().zip(&want) {
                assert!((*a as f64 - b).abs() < 1e-6, "nk {nk}: {a} vs {b}");
            }
        }
        // A row masked everywhere attends to nothing, short or long.
        for nk in [5usize, 20] {
            let mut masked = vec![f32::NEG_INFINITY; 2 * nk];
            masked[nk] = 1.0;
            softmax_rows(&mut masked, nk);
            assert!(masked[..nk].iter().all(|&x| x == 0.0));
            assert_eq!(masked[nk], 1.0);
        }
    }
}
