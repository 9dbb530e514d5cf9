//! [`RefDataset`]: samples → host arrays with the reference data pipeline (reference §7.1).
//!
//! 1. Load the image (any format [`RgbImage::decode`] reads; RGB order — the reference loads BGR
//!    and swaps back later, and resizing is per channel, so the result is the same).
//! 2. Decode the ground truth to 0/1; if its size differs from the image's it is nearest-resized
//!    to the image size.
//! 3. Keep-ratio resize to long side `S` with OpenCV's `INTER_LINEAR` on u8
//!    ([`resize_linear_u8`], bit-exact). Training resizes the mask with it (nearest) and pads it
//!    with 255 (ignored) to `S×S`; evaluation keeps the mask at the original image size, where
//!    predictions are scored.
//! 4. [`Item::x01`] gives the `[3, S, S]` input in [0, 1], zero-padded bottom/right, exactly as
//!    [`crate::pre::to_x01`] builds it; per-branch normalisation happens in the model.
//!
//! No augmentation (the reference uses none). A sample that fails to load is an error naming
//! its index and origin; it is never replaced by another sample.

use super::rle::Mask;
use super::{jsonl, DataError, RefSample};
use crate::pre::{keep_ratio_size, resize_linear_u8, Geometry, RgbImage};
use std::path::Path;

/// Training (mask resized with the image and padded to `S×S`) or evaluation (mask at the
/// original size).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

/// Ground-truth value of padding pixels.
pub const PAD_LABEL: u8 = 255;

/// One pre-processed sample.
#[derive(Clone, Debug)]
pub struct Item {
    pub index: usize,
    pub sentence: String,
    pub category: Option<String>,
    pub tag: Option<String>,
    pub kind: Option<String>,
    /// The image after the keep-ratio resize, `resized.0 × resized.1 × 3`, not padded.
    pub image: RgbImage,
    pub geometry: Geometry,
    /// Ground truth, row-major: `S×S` with 0/1 inside the resized area and 255 elsewhere
    /// ([`Mode::Train`]), or `H0×W0` 0/1 ([`Mode::Eval`]).
    pub gt: Vec<u8>,
    /// `(height, width)` of `gt`.
    pub gt_size: (usize, usize),
}

impl Item {
    /// `[3, S, S]` channel-major values in [0, 1], zero-padded bottom/right (`pre::to_x01`).
    pub fn x01(&self) -> Vec<f32> {
        let s = self.geometry.padded;
        let (h1, w1) = self.geometry.resized;
        let mut chw = vec![0f32; 3 * s * s];
        for y in 0..h1 {
            for x in 0..w1 {
                for c in 0..3 {
                    chw[c * s * s + y * s + x] = self.image.data[(y * w1 + x) * 3 + c] as f32 / 255.0;
                }
            }
        }
        chw
    }
}

/// Referring-segmentation samples with the §7.1 pipeline.
#[derive(Clone, Debug)]
pub struct RefDataset {
    pub samples: Vec<RefSample>,
    /// Model input side `S` (1024 for the paper configuration).
    pub size: usize,
    pub mode: Mode,
}

impl RefDataset {
    pub fn new(samples: Vec<RefSample>, size: usize, mode: Mode) -> Self {
        RefDataset { samples, size, mode }
    }

    /// Samples of a JSONL file (images under `data_root`), optionally of one split only.
    pub fn from_jsonl(
        path: &Path,
        data_root: &Path,
        split: Option<&str>,
        size: usize,
        mode: Mode,
    ) -> Result<Self, DataError> {
        Ok(Self::new(jsonl::read_samples(path, data_root, split)?, size, mode))
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Load and pre-process sample `index`.
    pub fn get(&self, index: usize) -> Result<Item, DataError> {
        let sample = self.samples.get(index).ok_or_else(|| {
            DataError::new(format!("sample {index}"), format!("out of range ({} samples)", self.len()))
        })?;
        let origin = format!("sample {index} ({})", sample.origin);
        let err = |m: String| DataError::new(&origin, m);

        let path = &sample.image_path;
        let bytes = std::fs::read(path).map_err(|e| err(format!("image {}: {e}", path.display())))?;
        let image = RgbImage::decode(&bytes).map_err(|e| err(format!("image {}: {e}", path.display())))?;
        let (h0, w0) = (image.height, image.width);

        let mask = sample.load_mask().map_err(|e| err(e.message))?;
        // A mask of another size belongs to another image (or another crop of it): resizing it
        // would train on and score against a misplaced object, so the sample is refused.
        if (mask.height, mask.width) != (h0, w0) {
            return Err(err(format!(
                "the mask is {}×{} (width × height) but the image {} is {w0}×{h0}: a mask must have its image's size",
                mask.width,
                mask.height,
                path.display()
            )));
        }

        let (h1, w1) = keep_ratio_size(h0, w0, self.size);
        let resized = if (h1, w1) == (h0, w0) { image } else { resize_linear_u8(&image, h1, w1) };
        let geometry = Geometry { original: (h0, w0), resized: (h1, w1), padded: self.size };

        let (gt, gt_size) = match self.mode {
            Mode::Eval => (mask.data, (h0, w0)),
            Mode::Train => {
                let m = if (h1, w1) == (h0, w0) { mask } else { resize_nearest(&mask, h1, w1) };
                let s = self.size;
                let mut gt = vec![PAD_LABEL; s * s];
                for y in 0..h1 {
                    gt[y * s..y * s + w1].copy_from_slice(&m.data[y * w1..(y + 1) * w1]);
                }
                (gt, (s, s))
            }
        };
        Ok(Item {
            index,
            sentence: sample.sentence.clone(),
            category: sample.category.clone(),
            tag: sample.tag.clone(),
            kind: sample.kind.clone(),
            image: resized,
            geometry,
            gt,
            gt_size,
        })
    }
}

/// `cv2.resize(.., INTER_NEAREST)` (what mmcv's `nearest` calls): destination pixel `d` takes
/// source `min(floor(d · src/dst), src − 1)`, the scale computed in double as OpenCV does.
pub fn resize_nearest(mask: &Mask, h1: usize, w1: usize) -> Mask {
    let (h0, w0) = (mask.height, mask.width);
    let index = |src: usize, dst: usize| -> Vec<usize> {
        let inv = 1.0 / (dst as f64 / src as f64);
        (0..dst).map(|d| ((d as f64 * inv).floor() as usize).min(src - 1)).collect()
    };
    let (ys, xs) = (index(h0, h1), index(w0, w1));
    let mut data = vec![0u8; h1 * w1];
    for (y, &sy) in ys.iter().enumerate() {
        for (x, &sx) in xs.iter().enumerate() {
            data[y * w1 + x] = mask.data[sy * w0 + sx];
        }
    }
    Mask { height: h1, width: w1, data }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_resize_matches_opencv_indexing() {
        // 3 → 7 columns: floor(d·3/7) = 0,0,0,1,1,2,2.
        let m = Mask { height: 1, width: 3, data: vec![0, 1, 0] };
        assert_eq!(resize_nearest(&m, 1, 7).data, vec![0, 0, 0, 1, 1, 0, 0]);
        // 5 → 2 rows: floor(d·2.5) = 0, 2.
        let m = Mask { height: 5, width: 1, data: vec![1, 0, 0, 0, 0] };
        assert_eq!(resize_nearest(&m, 2, 1).data, vec![1, 0]);
        // 2× upscale repeats each pixel.
        let m = Mask { height: 1, width: 2, data: vec![1, 0] };
        assert_eq!(resize_nearest(&m, 1, 4).data, vec![1, 1, 0, 0]);
    }
}
