//! Datasets, annotations and metrics (reference §7, §8).
//!
//! - [`rle`]: binary masks and the compressed COCO RLE the annotation files store.

pub mod rle;
