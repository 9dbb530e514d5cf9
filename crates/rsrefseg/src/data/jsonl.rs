//! The common JSONL annotation schema (reference §8.1): one JSON object per line,
//!
//! ```text
//! {"split": "test", "image_id": "test_0_0.png", "sent": "the ship …", "file_name": "test_0_0.png",
//!  "segmentation": {"size": [512, 512], "counts": "lTf12240…"}}
//! ```
//!
//! RRSIS-D lines add `category_id`, `category_name`, `ann_id`, `bbox`, `area`, and may hold
//! `segmentation` as a one-element list (the reference takes element 0). `tag` is our own optional
//! label (the synthetic benchmark writes `simple` / `relational`). Unknown fields are kept and
//! written back. The image is `data_root/file_name`.
//!
//! Reading checks every line (valid JSON object, required fields, a decodable RLE whose counts
//! sum to `h·w`) and reports *all* malformed lines with file and line number; nothing is skipped.

use super::rle::{Rle, RleError};
use super::{many_errors, DataError, MaskSource, RefSample};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

/// An id that the datasets write either as a number (RRSIS-D) or a string (RISBench file name).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Id {
    Int(i64),
    Str(String),
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Id::Int(i) => write!(f, "{i}"),
            Id::Str(s) => f.write_str(s),
        }
    }
}

/// COCO RLE `counts`: the compressed string, or (COCO's uncompressed form) a list of runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Counts {
    Compressed(String),
    Runs(Vec<u32>),
}

/// `{"size": [h, w], "counts": …}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RleJson {
    pub size: [usize; 2],
    pub counts: Counts,
}

impl RleJson {
    pub fn to_rle(&self) -> Result<Rle, RleError> {
        let [h, w] = self.size;
        match &self.counts {
            Counts::Compressed(s) => Rle::from_string(s, h, w),
            Counts::Runs(r) => Rle::from_counts(h, w, r.clone()),
        }
    }

    /// The compressed form (what the converters write).
    pub fn from_rle(rle: &Rle) -> Self {
        RleJson { size: [rle.height, rle.width], counts: Counts::Compressed(rle.to_string()) }
    }
}

/// `segmentation` as found in the files: an object, or a list whose element 0 is used.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Segmentation {
    One(RleJson),
    List(Vec<RleJson>),
}

impl Segmentation {
    /// Element 0 of a list, as the reference loader does; an empty list is an error.
    pub fn first(&self) -> Option<&RleJson> {
        match self {
            Segmentation::One(r) => Some(r),
            Segmentation::List(l) => l.first(),
        }
    }
}

/// One line of a JSONL annotation file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub split: String,
    pub image_id: Id,
    pub sent: String,
    pub file_name: String,
    pub segmentation: Segmentation,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ann_id: Option<i64>,
    /// Copied from RRSIS-D `instances.json`, unused by the model. JSON numbers keep their
    /// integer/float form so that a rewritten file matches the original.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bbox: Option<Vec<serde_json::Number>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub area: Option<serde_json::Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Our own optional finer label (the synthetic benchmark writes the expression's form:
    /// `category`, `colour`, `superlative`, `region`, `ordinal`, `relation`, `between`, `between-pair`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Any other fields, kept so that a read → write round trip loses nothing.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Record {
    /// A record with the required fields only.
    pub fn new(split: &str, image_id: Id, sent: &str, file_name: &str, rle: &Rle) -> Self {
        Record {
            split: split.into(),
            image_id,
            sent: sent.into(),
            file_name: file_name.into(),
            segmentation: Segmentation::One(RleJson::from_rle(rle)),
            category_id: None,
            category_name: None,
            ann_id: None,
            bbox: None,
            area: None,
            tag: None,
            kind: None,
            extra: Default::default(),
        }
    }

    /// The decoded-and-checked RLE of `segmentation` (element 0 of a list).
    pub fn rle(&self) -> Result<Rle, String> {
        let r = self.segmentation.first().ok_or("`segmentation` is an empty list")?;
        r.to_rle().map_err(|e| format!("`segmentation`: {e}"))
    }

    /// The sample, with the image at `data_root/file_name`.
    pub fn to_sample(&self, data_root: &Path, origin: String) -> Result<RefSample, DataError> {
        let rle = self.rle().map_err(|m| DataError::new(&origin, m))?;
        Ok(RefSample {
            image_path: data_root.join(&self.file_name),
            sentence: self.sent.clone(),
            mask: MaskSource::Rle(rle),
            category: self.category_name.clone(),
            tag: self.tag.clone(),
            kind: self.kind.clone(),
            split: self.split.clone(),
            origin,
        })
    }

    /// One JSON line (no trailing newline).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("a Record always serialises")
    }
}

/// Parse one line; the error says what is wrong (without the position, which the caller adds).
pub fn parse_line(line: &str) -> Result<Record, String> {
    if line.trim().is_empty() {
        return Err("empty line".into());
    }
    let rec: Record = serde_json::from_str(line).map_err(|e| e.to_string())?;
    rec.rle()?;
    Ok(rec)
}

/// Read every record of a JSONL file; line numbers start at 1.
pub fn read_records(path: &Path) -> Result<Vec<(usize, Record)>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::new(path.display().to_string(), e.to_string()))?;
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match parse_line(line) {
            Ok(r) => out.push((i + 1, r)),
            Err(m) => bad.push(format!("{}:{}: {m}", path.display(), i + 1)),
        }
    }
    if !bad.is_empty() {
        return Err(many_errors(path, bad));
    }
    Ok(out)
}

/// Read a JSONL file as samples (images under `data_root`); each sample's origin is
/// `file:line`. `split`, when given, keeps only records of that split.
pub fn read_samples(path: &Path, data_root: &Path, split: Option<&str>) -> Result<Vec<RefSample>, DataError> {
    read_records(path)?
        .into_iter()
        .filter(|(_, r)| split.is_none_or(|s| r.split == s))
        .map(|(n, r)| r.to_sample(data_root, format!("{}:{n}", path.display())))
        .collect()
}

/// Write records, one per line, each line ending with `\n`.
pub fn write_records<'a>(path: &Path, records: impl IntoIterator<Item = &'a Record>) -> Result<(), DataError> {
    let err = |e: std::io::Error| DataError::new(path.display().to_string(), e.to_string());
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).map_err(err)?);
    for r in records {
        f.write_all(r.to_line().as_bytes()).map_err(err)?;
        f.write_all(b"\n").map_err(err)?;
    }
    f.flush().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::rle::Mask;
    use crate::data::test_util::temp_dir;

    const RISBENCH: &str = r#"{"split": "test", "image_id": "test_1_0.png", "sent": "The ship that is closest to the top edge of the image.", "file_name": "test_1_0.png", "segmentation": {"size": [512, 512], "counts": "TQc44l?3L2O1N2O0O100O10O0100O10O0100O0100O01000O010O010O10O010O10O010O0100O0100O0100O010O0100O10O01O1O2O0O1O2N3L^oa2"}}"#;
    const RRSISD: &str = r#"{"split": "val", "image_id": 6000, "sent": "the vehicle on the left", "file_name": "06000.jpg", "category_id": 18, "category_name": "vehicle", "ann_id": 6000, "bbox": [1, 1, 2, 2], "segmentation": [{"size": [4, 3], "counts": "534"}], "area": 3, "extra_field": [1, 2]}"#;

    #[test]
    fn reads_both_schemas() {
        let r = parse_line(RISBENCH).unwrap();
        assert_eq!(r.image_id, Id::Str("test_1_0.png".into()));
        assert_eq!(r.rle().unwrap().area(), 711);
        assert_eq!(r.category_name, None);

        let r = parse_line(RRSISD).unwrap();
        assert_eq!(r.image_id, Id::Int(6000));
        assert_eq!(r.category_name.as_deref(), Some("vehicle"));
        assert_eq!(serde_json::to_string(&r.bbox).unwrap(), "[1,1,2,2]");
        assert_eq!(r.area, Some(3.into()));
        let rle = r.rle().unwrap();
        assert_eq!(rle.counts, vec![5, 3, 4]);
        assert_eq!(r.extra["extra_field"], serde_json::json!([1, 2]));
        // Round trip through the writer keeps every field.
        let again = parse_line(&r.to_line()).unwrap();
        assert_eq!(again, r);
    }

    #[test]
    fn every_malformed_line_is_reported_with_its_number() {
        let dir = temp_dir("jsonl-bad");
        let p = dir.join("a.jsonl");
        let lines = [
            RISBENCH,
            "",
            "{not json",
            r#"{"split": "x", "image_id": 1, "sent": "s", "file_name": "f"}"#,
            r#"{"split": "x", "image_id": 1, "sent": "s", "file_name": "f", "segmentation": {"size": [2, 2], "counts": "05"}}"#,
            r#"{"split": "x", "image_id": 1, "sent": "s", "file_name": "f", "segmentation": []}"#,
            RRSISD,
        ];
        std::fs::write(&p, lines.join("\n") + "\n").unwrap();
        let e = read_records(&p).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("5 malformed line(s)"), "{msg}");
        for n in [2, 3, 4, 5, 6] {
            assert!(msg.contains(&format!("a.jsonl:{n}: ")), "line {n} missing in {msg}");
        }
        assert!(msg.contains("a.jsonl:2: empty line"));
        assert!(msg.contains("missing field `segmentation`"), "{msg}");
        assert!(msg.contains("sum to 5"), "{msg}");
        assert!(msg.contains("empty list"), "{msg}");
        assert!(!msg.contains("a.jsonl:1:") && !msg.contains("a.jsonl:7:"));
    }

    #[test]
    fn write_then_read_samples() {
        let dir = temp_dir("jsonl-rt");
        let p = dir.join("b.jsonl");
        let mut m = Mask::zeros(3, 5);
        m.data[7] = 1;
        let rle = Rle::encode(&m).unwrap();
        let mut a = Record::new("train", Id::Int(3), "the red roof", "img/3.png", &rle);
        a.tag = Some("relational".into());
        let b = Record::new("test", Id::Str("x.png".into()), "a road", "x.png", &rle);
        write_records(&p, [&a, &b]).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(!text.lines().next().unwrap().contains("category"), "absent optional fields are omitted");
        let s = read_samples(&p, Path::new("/data"), Some("train")).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].image_path, Path::new("/data/img/3.png"));
        assert_eq!(s[0].tag.as_deref(), Some("relational"));
        assert_eq!(s[0].origin, format!("{}:1", p.display()));
        assert_eq!(s[0].load_mask().unwrap(), m);
        assert_eq!(read_samples(&p, Path::new("/data"), None).unwrap().len(), 2);
    }
}
