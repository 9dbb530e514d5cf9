//! How a tensor's values are stored in a bundle: `f32`, `f16`, or symmetric block-wise `q8` /
//! `q4` with one scale per block.
//!
//! Quantised tensors are cut into blocks of `block` consecutive values in row-major order of the
//! canonical shape; for a `Linear` weight `(out, in)` with `in % block == 0` every block lies in
//! one row, i.e. along the input dimension (the GGML `Q8_0` / `Q4_0` arrangement). Per block,
//! `scale = max|x| / qmax` (`qmax` = 127 for q8, 7 for q4), `q = round(x / scale)` clamped to
//! `[-qmax, qmax]`, and the value read back is `q · scale`. An `f16` scale is rounded *up* to the
//! next representable half, so no value is clipped and every value read back is within half a
//! step of the original: `|x − q · scale| ≤ scale / 2` for the stored scale.
//!
//! Byte layout of one quantised tensor of `n` values (`n % block == 0`):
//! - q8: `n` bytes of `i8` (two's complement), then `n / block` scales;
//! - q4: `n / 2` bytes, value `2k` in the low nibble and `2k + 1` in the high nibble of byte `k`,
//!   each stored as `q + 8` (0..=15; 1..=15 used), then `n / block` scales;
//! - scales: `f32` (4 bytes) or `f16` (2 bytes) each, little-endian.
//!
//! `f32` / `f16` tensors are their values, little-endian.

use burn::tensor::f16;
use serde::{Deserialize, Serialize};

/// Storage type of one tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoredDtype {
    F32,
    F16,
    Q8,
    Q4,
}

impl StoredDtype {
    pub fn name(self) -> &'static str {
        match self {
            StoredDtype::F32 => "f32",
            StoredDtype::F16 => "f16",
            StoredDtype::Q8 => "q8",
            StoredDtype::Q4 => "q4",
        }
    }

    pub fn is_quantized(self) -> bool {
        matches!(self, StoredDtype::Q8 | StoredDtype::Q4)
    }

    /// Largest quantised magnitude.
    fn qmax(self) -> f32 {
        match self {
            StoredDtype::Q8 => 127.0,
            StoredDtype::Q4 => 7.0,
            StoredDtype::F32 | StoredDtype::F16 => unreachable!("not a quantised dtype"),
        }
    }
}

impl std::fmt::Display for StoredDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Storage type of the per-block scales of a quantised tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScaleDtype {
    F32,
    F16,
}

impl ScaleDtype {
    fn bytes(self) -> usize {
        match self {
            ScaleDtype::F32 => 4,
            ScaleDtype::F16 => 2,
        }
    }
}

/// How one tensor is encoded: dtype, and for quantised dtypes the block and scale type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Encoding {
    pub dtype: StoredDtype,
    /// Values per block (quantised dtypes only, 0 otherwise).
    pub block: usize,
    pub scale: ScaleDtype,
}

impl Encoding {
    pub fn plain(dtype: StoredDtype) -> Self {
        debug_assert!(!dtype.is_quantized());
        Self { dtype, block: 0, scale: ScaleDtype::F32 }
    }

    /// Whether `n` values (last dimension `row`) can be stored this way.
    pub fn check(&self, n: usize, row: usize) -> Result<(), String> {
        if !self.dtype.is_quantized() {
            return Ok(());
        }
        if self.block == 0 || (self.dtype == StoredDtype::Q4 && !self.block.is_multiple_of(2)) {
            return Err(format!("block {} is not valid for {} (q4 needs an even block)", self.block, self.dtype));
        }
        if row == 0 || !row.is_multiple_of(self.block) || !n.is_multiple_of(self.block) {
            return Err(format!("rows of {row} values are not a multiple of the block {}", self.block));
        }
        Ok(())
    }

    /// Bytes taken by `n` values, `None` on overflow.
    pub fn encoded_len(&self, n: usize) -> Option<usize> {
        match self.dtype {
            StoredDtype::F32 => n.checked_mul(4),
            StoredDtype::F16 => n.checked_mul(2),
            StoredDtype::Q8 | StoredDtype::Q4 => {
                let values = if self.dtype == StoredDtype::Q8 { n } else { n / 2 };
                let scales = (n / self.block).checked_mul(self.scale.bytes())?;
                values.checked_add(scales)
            }
        }
    }
}

/// `s` as the scale type, rounded up so that `max|x| / stored ≤ qmax` still holds.
fn stored_scale(s: f32, scale: ScaleDtype) -> Result<f32, String> {
    match scale {
        ScaleDtype::F32 => Ok(s),
        ScaleDtype::F16 => {
            let mut h = f16::from_f32(s);
            if h.to_f32() < s {
                h = f16::from_bits(h.to_bits() + 1);
            }
            if !h.is_finite() {
                return Err(format!("block scale {s:e} does not fit an f16 scale (use f32 scales)"));
            }
            Ok(h.to_f32())
        }
    }
}

fn push_scale(out: &mut Vec<u8>, s: f32, scale: ScaleDtype) {
    match scale {
        ScaleDtype::F32 => out.extend_from_slice(&s.to_le_bytes()),
        ScaleDtype::F16 => out.extend_from_slice(&f16::from_f32(s).to_le_bytes()),
    }
}

fn read_scale(bytes: &[u8], i: usize, scale: ScaleDtype) -> f32 {
    match scale {
        ScaleDtype::F32 => f32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().expect("4 bytes")),
        ScaleDtype::F16 => f16::from_le_bytes(bytes[2 * i..2 * i + 2].try_into().expect("2 bytes")).to_f32(),
    }
}

/// Encode `values` (row length `row`, the last dimension of the canonical shape).
pub fn encode(values: &[f32], row: usize, enc: Encoding) -> Result<Vec<u8>, String> {
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(format!("value {} at index {i} is not finite", values[i]));
    }
    enc.check(values.len(), row)?;
    let mut out = Vec::with_capacity(enc.encoded_len(values.len()).ok_or("tensor too large")?);
    match enc.dtype {
        StoredDtype::F32 => values.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        StoredDtype::F16 => {
            for (i, &v) in values.iter().enumerate() {
                let h = f16::from_f32(v);
                if !h.is_finite() {
                    return Err(format!("value {v:e} at index {i} overflows f16 (export without --half)"));
                }
                out.extend_from_slice(&h.to_le_bytes());
            }
        }
        StoredDtype::Q8 | StoredDtype::Q4 => {
            let qmax = enc.dtype.qmax();
            let mut scales = Vec::with_capacity(values.len() / enc.block);
            let mut q = Vec::with_capacity(values.len());
            for block in values.chunks_exact(enc.block) {
                let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
                let s = stored_scale(amax / qmax, enc.scale)?;
                scales.push(s);
                q.extend(block.iter().map(|&x| if s == 0.0 { 0i8 } else { (x / s).round().clamp(-qmax, qmax) as i8 }));
            }
            if enc.dtype == StoredDtype::Q8 {
                out.extend(q.iter().map(|&v| v as u8));
            } else {
                out.extend(q.chunks_exact(2).map(|p| ((p[0] + 8) as u8) | (((p[1] + 8) as u8) << 4)));
            }
            scales.iter().for_each(|&s| push_scale(&mut out, s, enc.scale));
        }
    }
    Ok(out)
}

/// Values `start .. start + count` of an encoded tensor of `n` values. For quantised dtypes
/// `start` and `count` must be multiples of the block. `bytes.len()` must be
/// `enc.encoded_len(n)` (the bundle reader checks it before any decode).
pub fn decode_range(bytes: &[u8], n: usize, enc: Encoding, start: usize, count: usize) -> Vec<f32> {
    let end = start + count;
    assert!(end <= n, "decode_range {start}..{end} of {n} values");
    match enc.dtype {
        StoredDtype::F32 => bytes[4 * start..4 * end]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect(),
        StoredDtype::F16 => bytes[2 * start..2 * end]
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes(b.try_into().expect("2 bytes")).to_f32())
            .collect(),
        StoredDtype::Q8 | StoredDtype::Q4 => {
            let b = enc.block;
            assert!(
                start.is_multiple_of(b) && count.is_multiple_of(b),
                "decode_range {start}..{end} is not block-aligned ({b})"
            );
            let (values, scales) = bytes.split_at(if enc.dtype == StoredDtype::Q8 { n } else { n / 2 });
            let mut out = Vec::with_capacity(count);
            for blk in start / b..end / b {
                let s = read_scale(scales, blk, enc.scale);
                if enc.dtype == StoredDtype::Q8 {
                    out.extend(values[blk * b..(blk + 1) * b].iter().map(|&q| (q as i8) as f32 * s));
                } else {
                    for &byte in &values[blk * b / 2..(blk + 1) * b / 2] {
                        out.push(((byte & 0x0f) as i32 - 8) as f32 * s);
                        out.push(((byte >> 4) as i32 - 8) as f32 * s);
                    }
                }
            }
            out
        }
    }
}

/// All `n` values of an encoded tensor (see [`decode_range`]).
pub fn decode(bytes: &[u8], n: usize, enc: Encoding) -> Vec<f32> {
    decode_range(bytes, n, enc, 0, n)
}

/// The per-block scales of a quantised tensor, as stored (for tests and diagnostics).
pub fn scales(bytes: &[u8], n: usize, enc: Encoding) -> Vec<f32> {
    assert!(enc.dtype.is_quantized());
    let values = if enc.dtype == StoredDtype::Q8 { n } else { n / 2 };
    (0..n / enc.block).map(|i| read_scale(&bytes[values..], i, enc.scale)).collect()
}

/// 64-bit FNV-1a of `bytes` (the manifest's per-tensor integrity check).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(n: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0).collect()
    }

    #[test]
    fn q8_hand_checked_block() {
        // max |x| = 1.27 → scale 0.01; 0.5 → 50, -1.27 → -127, 0.004 → 0.
        let mut x = vec![0f32; 4];
        x[0] = 0.5;
        x[1] = -1.27;
        x[2] = 0.004;
        let enc = Encoding { dtype: StoredDtype::Q8, block: 4, scale: ScaleDtype::F32 };
        let bytes = encode(&x, 4, enc).unwrap();
        assert_eq!(bytes.len(), 4 + 4);
        assert_eq!(&bytes[..4], &[50u8, (-127i8) as u8, 0, 0]);
        let back = decode(&bytes, 4, enc);
        assert!((back[0] - 0.5).abs() < 1e-6 && (back[1] + 1.27).abs() < 1e-6 && back[2] == 0.0);
    }

    #[test]
    fn q4_nibbles_and_bound() {
        let x = ramp(64);
        for scale in [ScaleDtype::F32, ScaleDtype::F16] {
            let enc = Encoding { dtype: StoredDtype::Q4, block: 32, scale };
            let bytes = encode(&x, 64, enc).unwrap();
            assert_eq!(bytes.len(), enc.encoded_len(64).unwrap());
            let back = decode(&bytes, 64, enc);
            let s = scales(&bytes, 64, enc);
            for (i, (a, b)) in x.iter().zip(&back).enumerate() {
                assert!((a - b).abs() <= s[i / 32] / 2.0 + a.abs() * 2.5e-7, "{i}: {a} vs {b}");
            }
            // A range decode equals the slice of a full decode.
            assert_eq!(decode_range(&bytes, 64, enc, 32, 32), back[32..].to_vec());
        }
    }

    #[test]
    fn f16_scale_is_rounded_up() {
        // 1/127 of a value whose f16 nearest scale rounds down would clip the maximum.
        let x: Vec<f32> = (0..32).map(|i| if i == 0 { 1.000_123 } else { 0.1 }).collect();
        let enc = Encoding { dtype: StoredDtype::Q8, block: 32, scale: ScaleDtype::F16 };
        let bytes = encode(&x, 32, enc).unwrap();
        let s = scales(&bytes, 32, enc)[0];
        assert!(s * 127.0 >= 1.000_123);
        let back = decode(&bytes, 32, enc);
        assert!((back[0] - x[0]).abs() <= s / 2.0 + x[0] * 2.5e-7);
    }

    #[test]
    fn zero_block_and_rejections() {
        let enc = Encoding { dtype: StoredDtype::Q8, block: 32, scale: ScaleDtype::F32 };
        let bytes = encode(&[0f32; 32], 32, enc).unwrap();
        assert!(decode(&bytes, 32, enc).iter().all(|&v| v == 0.0));
        assert!(encode(&[0f32; 48], 48, enc).unwrap_err().contains("multiple of the block"));
        assert!(encode(&[f32::NAN; 32], 32, enc).unwrap_err().contains("not finite"));
        assert!(encode(&[1e6], 1, Encoding::plain(StoredDtype::F16)).unwrap_err().contains("overflows f16"));
    }
}
