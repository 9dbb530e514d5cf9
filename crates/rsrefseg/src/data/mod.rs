//! Datasets, annotations and metrics (reference §7, §8).
//!
//! - [`rle`]: binary masks and the compressed COCO RLE the annotation files store;
//! - [`jsonl`]: the common one-object-per-line annotation schema (read and write);
//! - [`rrsisd`], [`refsegrs`], [`risbench`]: readers of the three datasets as released;
//! - [`dataset`]: [`dataset::RefDataset`], the §7.1 pipeline (load, resize, pad) on host arrays;
//! - [`metrics`]: gIoU, cIoU, Pr@X and per-category IoU as the reference computes them.
//!
//! Every reader produces [`RefSample`]s. Every error names the sample it comes from (file and
//! line, or file and index): a broken sample is never skipped or replaced by another one (the
//! reference dataset silently substitutes a random sample for any that fails to load).

pub mod clicks;
pub mod dataset;
pub mod jsonl;
pub mod metrics;
pub mod refsegrs;
pub mod risbench;
pub mod rle;
pub mod rrsisd;

use rle::{Mask, Rle};
use std::path::{Path, PathBuf};

/// An error in a dataset file or sample; `origin` names the file and line (or index).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct DataError {
    pub origin: String,
    pub message: String,
}

impl DataError {
    pub fn new(origin: impl Into<String>, message: impl Into<String>) -> Self {
        DataError { origin: origin.into(), message: message.into() }
    }
}

/// Where the ground-truth mask of a sample comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum MaskSource {
    /// Decoded from the annotation (JSONL, RRSIS-D `instances.json`).
    Rle(Rle),
    /// A grayscale mask image; any non-zero pixel is the target (RefSegRS, RISBench).
    File(PathBuf),
}

/// One referring expression: an image, a sentence and the mask of the object it refers to.
#[derive(Clone, Debug, PartialEq)]
pub struct RefSample {
    pub image_path: PathBuf,
    pub sentence: String,
    pub mask: MaskSource,
    /// RRSIS-D category name (per-category IoU); `None` elsewhere.
    pub category: Option<String>,
    /// Free label for grouping results (`simple`, `relational`, … in the synthetic benchmark).
    pub tag: Option<String>,
    /// A finer free label (the synthetic benchmark's expression form: `ordinal`, `relation`, …).
    pub kind: Option<String>,
    pub split: String,
    /// Where the sample was read from (`file:line`, `file[#index]`), for error messages.
    pub origin: String,
}

impl RefSample {
    /// The ground-truth mask at its stored size (0/1).
    pub fn load_mask(&self) -> Result<Mask, DataError> {
        match &self.mask {
            MaskSource::Rle(r) => Ok(r.decode()),
            MaskSource::File(p) => read_mask_file(p).map_err(|m| DataError::new(&self.origin, m)),
        }
    }
}

/// Read a mask image as the reference converters do (`cv2.imread(.., IMREAD_GRAYSCALE)`, then
/// non-zero = target). Colour masks are reduced to luma first; a colour pixel whose luma rounds
/// to 0 (only near-black ones) is background, as with OpenCV up to rounding differences.
pub fn read_mask_file(path: &Path) -> Result<Mask, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("mask {}: {e}", path.display()))?;
    let img = image::load_from_memory(&bytes).map_err(|e| format!("mask {}: cannot decode: {e}", path.display()))?;
    let luma = img.to_luma8();
    let (w, h) = (luma.width() as usize, luma.height() as usize);
    Mask::from_nonzero(h, w, luma.as_raw()).map_err(|e| format!("mask {}: {e}", path.display()))
}

/// A file-mask sample as a JSONL record (mask read and RLE-encoded), as the reference converters
/// build it.
pub(crate) fn encode_record(s: &RefSample, image_id: &str, file_name: &str) -> Result<jsonl::Record, DataError> {
    let mask = s.load_mask()?;
    let rle = Rle::encode(&mask).map_err(|e| DataError::new(&s.origin, e.to_string()))?;
    let mut r = jsonl::Record::new(&s.split, jsonl::Id::Str(image_id.into()), &s.sentence, file_name, &rle);
    r.tag = s.tag.clone();
    r.kind = s.kind.clone();
    Ok(r)
}

/// Reader of a `"<id> <sentence words…>"` list (RefSegRS, RISBench): the reference strips the
/// line, splits at single spaces, takes the first piece as id and joins the rest with single
/// spaces — i.e. everything after the first space. Returns `(line number, id, sentence)`.
/// Empty lines and lines without a sentence are errors (the reference would crash on them).
pub(crate) fn read_id_sentence_list(path: &Path) -> Result<Vec<(usize, String, String)>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::new(path.display().to_string(), e.to_string()))?;
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        match line.split_once(' ') {
            Some((id, sent)) if !id.is_empty() && !sent.trim().is_empty() => {
                out.push((n, id.to_string(), sent.to_string()))
            }
            _ if line.is_empty() => bad.push(format!("{}:{n}: empty line", path.display())),
            _ => bad.push(format!("{}:{n}: expected \"<id> <sentence>\", found {line:?}", path.display())),
        }
    }
    if !bad.is_empty() {
        return Err(many_errors(path, bad));
    }
    Ok(out)
}

/// One error naming every bad line (the first 20 in full).
pub(crate) fn many_errors(path: &Path, lines: Vec<String>) -> DataError {
    let n = lines.len();
    let mut msg = format!("{n} malformed line(s):");
    for l in lines.iter().take(20) {
        msg.push_str("\n  ");
        msg.push_str(l);
    }
    if n > 20 {
        msg.push_str(&format!("\n  … and {} more", n - 20));
    }
    DataError::new(path.display().to_string(), msg)
}

#[cfg(test)]
pub(crate) mod test_util {
    use std::path::PathBuf;

    /// A fresh empty directory under the system temp dir, unique per test name and process.
    pub fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rsrefseg-data-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
