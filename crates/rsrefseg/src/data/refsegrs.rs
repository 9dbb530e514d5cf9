//! RefSegRS as released (reference §8.3): `output_phrase_{split}.txt` with lines
//! `"<id> <sentence…>"`, images `images/<id>.tif`, masks `masks/<id>.tif` (grayscale, non-zero =
//! target).

use super::jsonl::Record;
use super::{encode_record, read_id_sentence_list, DataError, MaskSource, RefSample};
use std::path::Path;

fn samples_with_ids(root: &Path, split: &str) -> Result<Vec<(String, RefSample)>, DataError> {
    let list = root.join(format!("output_phrase_{split}.txt"));
    Ok(read_id_sentence_list(&list)?
        .into_iter()
        .map(|(n, id, sent)| {
            let s = RefSample {
                image_path: root.join("images").join(format!("{id}.tif")),
                sentence: sent,
                mask: MaskSource::File(root.join("masks").join(format!("{id}.tif"))),
                category: None,
                tag: None,
                kind: None,
                split: split.to_string(),
                origin: format!("{}:{n}", list.display()),
            };
            (id, s)
        })
        .collect())
}

/// Samples of one split; the mask stays a file until [`RefSample::load_mask`].
pub fn read_samples(root: &Path, split: &str) -> Result<Vec<RefSample>, DataError> {
    Ok(samples_with_ids(root, split)?.into_iter().map(|(_, s)| s).collect())
}

/// The JSONL records the reference converter writes for this split: `image_id` = id,
/// `file_name` = `<id>.tif` (relative to `root/images`), the mask file RLE-encoded.
pub fn to_records(root: &Path, split: &str) -> Result<Vec<Record>, DataError> {
    samples_with_ids(root, split)?.iter().map(|(id, s)| encode_record(s, id, &format!("{id}.tif"))).collect()
}
