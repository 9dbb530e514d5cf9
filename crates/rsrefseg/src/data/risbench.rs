//! RISBench as released (reference §8.4): a list of `"<file> <sentence…>"` lines per split,
//! images `img_rgb/<file>`, masks `mask/<file>` (grayscale, non-zero = target). The list is
//! `output_phrase_{split}.txt` (what the reference converter opens) or `{split}.txt`.

use super::jsonl::Record;
use super::{encode_record, read_id_sentence_list, DataError, MaskSource, RefSample};
use std::path::{Path, PathBuf};

/// The split's list file: `output_phrase_{split}.txt`, else `{split}.txt`.
pub fn list_path(root: &Path, split: &str) -> Result<PathBuf, DataError> {
    let candidates = [root.join(format!("output_phrase_{split}.txt")), root.join(format!("{split}.txt"))];
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        DataError::new(
            root.display().to_string(),
            format!(
                "no list for split {split:?} (looked for {} and {})",
                candidates[0].display(),
                candidates[1].display()
            ),
        )
    })
}

/// Samples of one split; the mask stays a file until [`RefSample::load_mask`].
pub fn read_samples(root: &Path, split: &str) -> Result<Vec<RefSample>, DataError> {
    let list = list_path(root, split)?;
    Ok(read_id_sentence_list(&list)?
        .into_iter()
        .map(|(n, file, sent)| RefSample {
            image_path: root.join("img_rgb").join(&file),
            sentence: sent,
            mask: MaskSource::File(root.join("mask").join(&file)),
            category: None,
            tag: None,
            kind: None,
            split: split.to_string(),
            origin: format!("{}:{n}", list.display()),
        })
        .collect())
}

/// The JSONL records the reference converter writes: `image_id` = `file_name` = the file name
/// (relative to `root/img_rgb`), the mask file RLE-encoded.
pub fn to_records(root: &Path, split: &str) -> Result<Vec<Record>, DataError> {
    read_samples(root, split)?
        .iter()
        .map(|s| {
            let file = s.image_path.file_name().unwrap_or_default().to_string_lossy().to_string();
            encode_record(s, &file, &file)
        })
        .collect()
}
