//! RRSIS-D as released (reference §8.2): `rrsisd/instances.json` (COCO-like annotations with RLE
//! masks) and `rrsisd/refs(unc).p` (a pickled list of refs), joined by `ann_id`; images in
//! `images/rrsisd/JPEGImages/`.
//!
//! This reproduces `tools_RSRefSeg2/data_tools/rrsisd-convert_data_to_jsonl.py` field by field,
//! including its checks: exactly one sentence per ref, and the ref's `category_id` / `image_id`
//! equal to its annotation's (the annotation spells the field `categories_id`). The pickle is read
//! by the checkpoint reader's interpreter, which runs no pickled code.

use super::jsonl::{Id, Record, Segmentation};
use super::{DataError, RefSample};
use crate::checkpoint::torch_zip::{read_plain_pickle, PlainValue};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Paths inside the dataset root (`RRSIS-D/`).
pub const INSTANCES: &str = "rrsisd/instances.json";
pub const REFS: &str = "rrsisd/refs(unc).p";
pub const IMAGES: &str = "images/rrsisd/JPEGImages";

#[derive(Deserialize)]
struct Instances {
    annotations: Vec<Annotation>,
    categories: Vec<Category>,
}

#[derive(Deserialize)]
struct Annotation {
    id: i64,
    image_id: i64,
    #[serde(alias = "category_id")]
    categories_id: i64,
    segmentation: Segmentation,
    #[serde(default)]
    bbox: Option<Vec<serde_json::Number>>,
    #[serde(default)]
    area: Option<serde_json::Number>,
}

#[derive(Deserialize)]
struct Category {
    id: i64,
    name: String,
}

/// The JSONL records of every split, in `refs(unc).p` order (what the reference converter writes,
/// before it splits them into `rrsisd_{split}.jsonl`).
pub fn read_records(root: &Path) -> Result<Vec<Record>, DataError> {
    let inst_path = root.join(INSTANCES);
    let refs_path = root.join(REFS);
    let origin_i = inst_path.display().to_string();
    let text = std::fs::read_to_string(&inst_path).map_err(|e| DataError::new(&origin_i, e.to_string()))?;
    let inst: Instances = serde_json::from_str(&text).map_err(|e| DataError::new(&origin_i, e.to_string()))?;
    let categories: HashMap<i64, &str> = inst.categories.iter().map(|c| (c.id, c.name.as_str())).collect();
    let mut anns: HashMap<i64, &Annotation> = HashMap::new();
    for a in &inst.annotations {
        // Python's dict comprehension keeps the last annotation of a repeated id.
        anns.insert(a.id, a);
    }

    let origin_r = refs_path.display().to_string();
    let bytes = std::fs::read(&refs_path).map_err(|e| DataError::new(&origin_r, e.to_string()))?;
    let refs = read_plain_pickle(&bytes).map_err(|e| DataError::new(&origin_r, e))?;
    let PlainValue::List(refs) = refs else {
        return Err(DataError::new(&origin_r, format!("expected a list of refs, found a {}", refs.type_name())));
    };

    let mut out = Vec::with_capacity(refs.len());
    for (i, r) in refs.iter().enumerate() {
        let origin = format!("{origin_r}[#{i}]");
        let err = |m: String| DataError::new(&origin, m);
        let split = get_str(r, "split").map_err(err)?;
        let image_id = get_int(r, "image_id").map_err(err)?;
        let file_name = get_str(r, "file_name").map_err(err)?;
        let category_id = get_int(r, "category_id").map_err(err)?;
        let ann_id = get_int(r, "ann_id").map_err(err)?;
        let sent = match r.get("sentences") {
            Some(PlainValue::List(s)) if s.len() == 1 => {
                get_str(&s[0], "sent").map_err(|m| err(format!("sentences[0]: {m}")))?
            }
            Some(PlainValue::List(s)) => {
                return Err(err(format!("{} sentences; the reference expects exactly 1", s.len())))
            }
            Some(v) => return Err(err(format!("`sentences` is a {}, expected a list", v.type_name()))),
            None => return Err(err("no `sentences`".into())),
        };
        let ann = anns.get(&ann_id).ok_or_else(|| err(format!("ann_id {ann_id} is not in {INSTANCES}")))?;
        if ann.categories_id != category_id {
            return Err(err(format!(
                "category_id {category_id} differs from annotation {ann_id}'s categories_id {}",
                ann.categories_id
            )));
        }
        if ann.image_id != image_id {
            return Err(err(format!(
                "image_id {image_id} differs from annotation {ann_id}'s image_id {}",
                ann.image_id
            )));
        }
        let category_name = categories
            .get(&category_id)
            .ok_or_else(|| err(format!("category_id {category_id} is not in the categories")))?;
        let rec = Record {
            split,
            image_id: Id::Int(image_id),
            sent,
            file_name,
            segmentation: ann.segmentation.clone(),
            category_id: Some(category_id),
            category_name: Some(category_name.to_string()),
            ann_id: Some(ann_id),
            bbox: ann.bbox.clone(),
            area: ann.area.clone(),
            tag: None,
            kind: None,
            extra: Default::default(),
        };
        rec.rle().map_err(|m| err(format!("annotation {ann_id}: {m}")))?;
        out.push(rec);
    }
    Ok(out)
}

/// Samples of one split (`train`, `val`, `test`), images under `root/images/rrsisd/JPEGImages`.
pub fn read_samples(root: &Path, split: &str) -> Result<Vec<RefSample>, DataError> {
    let images: PathBuf = root.join(IMAGES);
    let refs = root.join(REFS).display().to_string();
    read_records(root)?
        .iter()
        .enumerate()
        .filter(|(_, r)| r.split == split)
        .map(|(i, r)| r.to_sample(&images, format!("{refs}[#{i}]")))
        .collect()
}

fn get_str(v: &PlainValue, key: &str) -> Result<String, String> {
    match v.get(key) {
        Some(PlainValue::Str(s)) => Ok(s.clone()),
        Some(o) => Err(format!("`{key}` is a {}, expected a string", o.type_name())),
        None => Err(format!("no `{key}`")),
    }
}

fn get_int(v: &PlainValue, key: &str) -> Result<i64, String> {
    match v.get(key) {
        Some(PlainValue::Int(i)) => Ok(*i),
        Some(o) => Err(format!("`{key}` is a {}, expected an integer", o.type_name())),
        None => Err(format!("no `{key}`")),
    }
}
