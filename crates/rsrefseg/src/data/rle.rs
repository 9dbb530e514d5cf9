//! Binary masks and COCO run-length encoding, bit-compatible with pycocotools (reference §8.5).
//!
//! The dataset files store every ground-truth mask as a *compressed* COCO RLE: the mask is
//! flattened **column-major** (index = x·h + y), cut into alternating runs of 0s and 1s that
//! start with a (possibly empty) 0-run, and the run lengths are written as a printable string.
//! Each count becomes little-endian 5-bit groups, one character (`48 + group`) per group, with
//! bit 0x20 set while more groups follow; the last group's bit 0x10 is the sign. From the fourth
//! count on (index > 2) the string stores the difference to the count two places earlier, which
//! is small because neighbouring columns of a blob have similar runs.
//!
//! [`Rle::from_string`] / [`Rle::to_string`] mirror pycocotools' `rleFrString` / `rleToString`
//! and [`Rle::encode`] / [`Rle::decode`] its `rleEncode` / `rleDecode`, so a string written here is
//! byte-identical to what `pycocotools.mask.encode` produces for the same mask. Unlike
//! pycocotools, malformed input is an error instead of undefined behaviour: counts must be
//! non-negative and sum to `h·w`.

use std::fmt;

/// A binary mask, row-major `height × width`, one byte per pixel, values 0 or 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mask {
    pub height: usize,
    pub width: usize,
    pub data: Vec<u8>,
}

/// Run-length encoded mask: alternating 0/1 runs over the column-major flattening, starting
/// with 0s. `counts` sums to `height · width`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rle {
    pub height: usize,
    pub width: usize,
    pub counts: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RleError {
    #[error("RLE string: character {pos} ({ch:?}) is outside the alphabet '0'..='o'")]
    BadChar { pos: usize, ch: char },
    #[error("RLE string ends inside a count (the last character has the continuation bit)")]
    Truncated,
    #[error("RLE string: count {index} does not fit in 32 bits")]
    Overflow { index: usize },
    #[error("RLE string: count {index} decodes to {value}, a negative run length")]
    Negative { index: usize, value: i64 },
    #[error("RLE counts sum to {sum}, but the mask is {height}×{width} = {} pixels", height * width)]
    SizeMismatch { sum: u64, height: usize, width: usize },
    #[error("mask data has {len} bytes, expected {height}×{width} = {}", height * width)]
    DataLength { len: usize, height: usize, width: usize },
}

impl Mask {
    /// A mask from row-major bytes; any non-zero value counts as foreground (RefSegRS stores
    /// 0/255, which its converter RLE-encodes as-is; the run structure is the same).
    pub fn from_nonzero(height: usize, width: usize, data: &[u8]) -> Result<Self, RleError> {
        if data.len() != height * width {
            return Err(RleError::DataLength { len: data.len(), height, width });
        }
        Ok(Mask { height, width, data: data.iter().map(|&v| (v != 0) as u8).collect() })
    }

    pub fn zeros(height: usize, width: usize) -> Self {
        Mask { height, width, data: vec![0; height * width] }
    }

    /// Number of foreground pixels.
    pub fn area(&self) -> u64 {
        self.data.iter().filter(|&&v| v != 0).count() as u64
    }

    pub fn get(&self, y: usize, x: usize) -> u8 {
        self.data[y * self.width + x]
    }
}

impl Rle {
    /// Run-length encode a mask (pycocotools `rleEncode`): a new run starts wherever the value
    /// changes, so non-binary values are treated by "differs from the previous pixel".
    /// [`Mask`] holds 0/1, for which this is the usual binary RLE.
    pub fn encode(mask: &Mask) -> Result<Rle, RleError> {
        let (h, w) = (mask.height, mask.width);
        if mask.data.len() != h * w {
            return Err(RleError::DataLength { len: mask.data.len(), height: h, width: w });
        }
        let mut counts = Vec::new();
        let mut prev = 0u8;
        let mut run = 0u32;
        // Column-major walk: x outer, y inner.
        for x in 0..w {
            for y in 0..h {
                let v = (mask.data[y * w + x] != 0) as u8;
                if v != prev {
                    counts.push(run);
                    run = 0;
                    prev = v;
                }
                run += 1;
            }
        }
        counts.push(run);
        Ok(Rle { height: h, width: w, counts })
    }

    /// Checked constructor from uncompressed counts (COCO's `{"counts": [..]}` form).
    pub fn from_counts(height: usize, width: usize, counts: Vec<u32>) -> Result<Rle, RleError> {
        let rle = Rle { height, width, counts };
        rle.check_size()?;
        Ok(rle)
    }

    /// Parse a compressed COCO RLE string (pycocotools `rleFrString`).
    pub fn from_string(s: &str, height: usize, width: usize) -> Result<Rle, RleError> {
        let bytes = s.as_bytes();
        let mut counts: Vec<u32> = Vec::with_capacity(bytes.len());
        let mut p = 0;
        while p < bytes.len() {
            let index = counts.len();
            let mut x: i64 = 0;
            let mut k = 0u32;
            loop {
                let Some(&b) = bytes.get(p) else { return Err(RleError::Truncated) };
                // 48 + 6 bits: '0' (48) ..= 'o' (111).
                if !(48..48 + 64).contains(&b) {
                    let ch = s[p..].chars().next().unwrap_or('\u{fffd}');
                    return Err(RleError::BadChar { pos: p, ch });
                }
                let c = (b - 48) as i64;
                // 13 groups already exceed 64 bits; real counts need at most 7.
                if k >= 12 {
                    return Err(RleError::Overflow { index });
                }
                x |= (c & 0x1f) << (5 * k);
                p += 1;
                k += 1;
                if c & 0x20 == 0 {
                    if c & 0x10 != 0 {
                        // Sign extension of the last group.
                        x |= -1i64 << (5 * k);
                    }
                    break;
                }
            }
            if index > 2 {
                x += counts[index - 2] as i64;
            }
            if x < 0 {
                return Err(RleError::Negative { index, value: x });
            }
            let v = u32::try_from(x).map_err(|_| RleError::Overflow { index })?;
            counts.push(v);
        }
        let rle = Rle { height, width, counts };
        rle.check_size()?;
        Ok(rle)
    }

    fn check_size(&self) -> Result<(), RleError> {
        let sum: u64 = self.counts.iter().map(|&c| c as u64).sum();
        if sum != (self.height as u64) * (self.width as u64) {
            return Err(RleError::SizeMismatch { sum, height: self.height, width: self.width });
        }
        Ok(())
    }

    /// The mask, row-major 0/1 (pycocotools `rleDecode`, transposed from its Fortran order).
    pub fn decode(&self) -> Mask {
        let (h, w) = (self.height, self.width);
        let mut data = vec![0u8; h * w];
        let mut idx = 0usize;
        for (j, &c) in self.counts.iter().enumerate() {
            let c = c as usize;
            if j % 2 == 1 {
                for i in idx..(idx + c).min(h * w) {
                    // Column-major index i = x·h + y.
                    let (x, y) = (i / h, i % h);
                    data[y * w + x] = 1;
                }
            }
            idx += c;
        }
        Mask { height: h, width: w, data }
    }

    /// Number of foreground pixels (sum of the 1-runs; pycocotools `area`).
    pub fn area(&self) -> u64 {
        self.counts.iter().skip(1).step_by(2).map(|&c| c as u64).sum()
    }

    /// Tight box of the foreground as inclusive pixel indices `[x_min, y_min, x_max, y_max]`;
    /// `None` for an empty mask.
    pub fn bbox_xyxy_inclusive(&self) -> Option<[usize; 4]> {
        let h = self.height;
        let mut idx = 0usize;
        let mut bb: Option<[usize; 4]> = None;
        for (j, &c) in self.counts.iter().enumerate() {
            let c = c as usize;
            if j % 2 == 1 && c > 0 {
                let (first, last) = (idx, idx + c - 1);
                let (x0, x1) = (first / h, last / h);
                // A run that spans a column boundary covers the bottom of one column and the
                // top of the next, hence the full height.
                let (y0, y1) = if x0 == x1 { (first % h, last % h) } else { (0, h - 1) };
                bb = Some(match bb {
                    None => [x0, y0, x1, y1],
                    Some([a, b, c, d]) => [a.min(x0), b.min(y0), c.max(x1), d.max(y1)],
                });
            }
            idx += c;
        }
        bb
    }

    /// pycocotools `toBbox`: `[x, y, w, h]` with exclusive extent (`w = x_max − x_min + 1`);
    /// all zeros for an empty mask.
    pub fn bbox_xywh(&self) -> [f64; 4] {
        match self.bbox_xyxy_inclusive() {
            None => [0.0; 4],
            Some([x0, y0, x1, y1]) => [x0 as f64, y0 as f64, (x1 - x0 + 1) as f64, (y1 - y0 + 1) as f64],
        }
    }
}

/// The compressed COCO RLE string (pycocotools `rleToString`).
impl fmt::Display for Rle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::with_capacity(self.counts.len() * 2);
        for (i, &c) in self.counts.iter().enumerate() {
            let mut x = c as i64;
            if i > 2 {
                x -= self.counts[i - 2] as i64;
            }
            loop {
                let mut c = (x & 0x1f) as u8;
                x >>= 5; // arithmetic shift, as C's `long >>=`
                let more = if c & 0x10 != 0 { x != -1 } else { x != 0 };
                if more {
                    c |= 0x20;
                }
                s.push((c + 48) as char);
                if !more {
                    break;
                }
            }
        }
        f.write_str(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tiny deterministic generator (xorshift64*) so the round trips need no extra crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn mask_from_rows(rows: &[&[u8]]) -> Mask {
        let h = rows.len();
        let w = rows[0].len();
        Mask { height: h, width: w, data: rows.iter().flat_map(|r| r.iter().copied()).collect() }
    }

    #[test]
    fn known_mask_matches_pycocotools() {
        // Column-major: col0 = [0,1,1], col1 = [0,0,0], col2 = [1,1,0], col3 = [0,0,1]
        // flat = 0 1 1 0 0 0 1 1 0 0 0 1 -> runs 1,2,3,2,3,1.
        let m = mask_from_rows(&[&[0, 0, 1, 0], &[1, 0, 1, 0], &[1, 0, 0, 1]]);
        let rle = Rle::encode(&m).unwrap();
        assert_eq!(rle.counts, vec![1, 2, 3, 2, 3, 1]);
        // Deltas from index 3 on: 2-2 = 0, 3-3 = 0, 1-2 = -1. A -1 is the single group 0x1f
        // (sign bit 0x10 set, nothing left after the shift): '0' + 31 = 'O'.
        assert_eq!(rle.to_string(), "12300O");
        let back = Rle::from_string("12300O", 3, 4).unwrap();
        assert_eq!(back, rle);
        assert_eq!(back.decode(), m);
        assert_eq!(rle.area(), 5);
        assert_eq!(rle.bbox_xyxy_inclusive(), Some([0, 0, 3, 2]));
        assert_eq!(rle.bbox_xywh(), [0.0, 0.0, 4.0, 3.0]);
    }

    #[test]
    fn large_counts_use_continuation_groups() {
        // One foreground pixel at the very end of a 300×300 mask: counts [89999, 1].
        let mut m = Mask::zeros(300, 300);
        *m.data.last_mut().unwrap() = 1;
        let rle = Rle::encode(&m).unwrap();
        assert_eq!(rle.counts, vec![89_999, 1]);
        let s = rle.to_string();
        assert_eq!(Rle::from_string(&s, 300, 300).unwrap(), rle);
        assert_eq!(rle.bbox_xyxy_inclusive(), Some([299, 299, 299, 299]));
    }

    #[test]
    fn first_pixel_set_starts_with_empty_zero_run() {
        let m = mask_from_rows(&[&[1, 1], &[1, 1]]);
        let rle = Rle::encode(&m).unwrap();
        assert_eq!(rle.counts, vec![0, 4]);
        assert_eq!(rle.to_string(), "04");
        assert_eq!(Rle::from_string("04", 2, 2).unwrap().decode(), m);
    }

    #[test]
    fn random_round_trips() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for case in 0..300 {
            let h = 1 + rng.below(40) as usize;
            let w = 1 + rng.below(40) as usize;
            // Mix of sparse noise and blobs so both long and short runs (and negative deltas) occur.
            let density = rng.below(100);
            let mut m = Mask::zeros(h, w);
            if case % 3 == 0 {
                let (cy, cx, r) = (rng.below(h as u64) as i64, rng.below(w as u64) as i64, 1 + rng.below(15) as i64);
                for y in 0..h {
                    for x in 0..w {
                        let (dy, dx) = (y as i64 - cy, x as i64 - cx);
                        m.data[y * w + x] = (dy * dy + dx * dx <= r * r) as u8;
                    }
                }
            } else {
                for v in m.data.iter_mut() {
                    *v = (rng.below(100) < density) as u8;
                }
            }
            let rle = Rle::encode(&m).unwrap();
            let s = rle.to_string();
            let back = Rle::from_string(&s, h, w).unwrap();
            assert_eq!(back, rle, "case {case}: {s}");
            assert_eq!(back.decode(), m, "case {case}");
            assert_eq!(rle.area(), m.area());
            // Brute-force box.
            let mut bb: Option<[usize; 4]> = None;
            for y in 0..h {
                for x in 0..w {
                    if m.get(y, x) == 1 {
                        bb = Some(match bb {
                            None => [x, y, x, y],
                            Some([a, b, c, d]) => [a.min(x), b.min(y), c.max(x), d.max(y)],
                        });
                    }
                }
            }
            assert_eq!(rle.bbox_xyxy_inclusive(), bb, "case {case}");
        }
    }

    #[test]
    fn malformed_strings_are_errors() {
        assert_eq!(Rle::from_string("04", 2, 3), Err(RleError::SizeMismatch { sum: 4, height: 2, width: 3 }));
        assert!(matches!(Rle::from_string("0 4", 2, 2), Err(RleError::BadChar { pos: 1, ch: ' ' })));
        // 'P' = 48 + 32: continuation bit set on the last character.
        assert_eq!(Rle::from_string("0P", 2, 2), Err(RleError::Truncated));
        // A negative first count ('O' = -1).
        assert!(matches!(Rle::from_string("O5", 2, 2), Err(RleError::Negative { index: 0, .. })));
        assert!(matches!(Rle::from_string(&"o".repeat(20), 2, 2), Err(RleError::Overflow { .. })));
        assert!(Rle::from_counts(2, 2, vec![1, 2]).is_err());
        assert_eq!(Rle::from_counts(2, 2, vec![1, 3]).unwrap().area(), 3);
    }

    #[test]
    fn empty_mask() {
        let m = Mask::zeros(5, 7);
        let rle = Rle::encode(&m).unwrap();
        assert_eq!(rle.counts, vec![35]);
        assert_eq!(rle.bbox_xyxy_inclusive(), None);
        assert_eq!(rle.bbox_xywh(), [0.0; 4]);
        assert_eq!(Rle::from_string(&rle.to_string(), 5, 7).unwrap().decode(), m);
    }
}
