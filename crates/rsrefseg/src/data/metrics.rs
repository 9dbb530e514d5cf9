//! Referring-segmentation metrics exactly as `RefSegIoUMetric` computes them (reference §7.2).
//!
//! Per sample, pixels whose ground truth is 255 are dropped, then for class `c` (1 = target,
//! 0 = background) `I = |P=c ∧ G=c|`, `U = |P=c| + |G=c| − I`. Over the samples:
//!
//! * **gIoU** = mean of the per-sample `I/U`;
//! * **cIoU** = `ΣI / ΣU`;
//! * **Pr@X**, X ∈ {0.5, …, 0.9} = fraction of samples with IoU **strictly greater** than X
//!   (an IoU of exactly 0.5 does not count at 0.5);
//! * **per-category IoU** = mean sample IoU within each category (`none` when a sample has
//!   none), and **mean_iou** = the unweighted mean over categories.
//!
//! All values are ×100. The reference does the first three in float32 torch tensors — per-sample
//! IoU `f32(I)/f32(U)`, gIoU a sequential f32 sum divided in f32, cIoU sequential f32 sums of the
//! counts, X compared as f32 — and the per-category means in Python floats (f64); this module does
//! the same, so its numbers equal the reference's bit for bit. (For very large test sets the f32
//! sums of cIoU round once they pass 2^24 pixels; the exact totals are kept in
//! [`ClassMetrics::total_intersection`] / [`ClassMetrics::total_union`].)
//!
//! **NaN:** a sample whose union is 0 (empty prediction and empty ground truth) has IoU NaN, and
//! the reference lets it propagate: gIoU becomes NaN (JSON `null`), it counts as a miss for Pr@X,
//! cIoU is unaffected, and the per-category mean skips it (a category with only such samples is
//! NaN and is left out of `mean_iou`). This does not happen on the three public datasets, whose
//! every sample has a non-empty target.

use serde::Serialize;
use std::fmt;

/// The Pr@X thresholds.
pub const THRESHOLDS: [f64; 5] = [0.5, 0.6, 0.7, 0.8, 0.9];
/// Ground-truth value of ignored pixels (padding).
pub const IGNORE: u8 = 255;
/// Category of samples without one.
pub const NO_CATEGORY: &str = "none";

/// Pixel counts of one sample, indexed by class (0 = background, 1 = target).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SampleCounts {
    pub intersection: [u64; 2],
    pub union: [u64; 2],
    pub category: String,
}

impl SampleCounts {
    /// Count one (prediction, ground truth) pair of equal length. Pixels with `gt == 255` are
    /// ignored; as with the reference's histograms over {0, 1}, other values count in no class.
    pub fn count(pred: &[u8], gt: &[u8], category: Option<&str>) -> Result<Self, String> {
        if pred.len() != gt.len() {
            return Err(format!("prediction has {} pixels, ground truth {}", pred.len(), gt.len()));
        }
        let (mut inter, mut p, mut g) = ([0u64; 2], [0u64; 2], [0u64; 2]);
        for (&a, &b) in pred.iter().zip(gt) {
            if b == IGNORE {
                continue;
            }
            if a < 2 {
                p[a as usize] += 1;
            }
            if b < 2 {
                g[b as usize] += 1;
                if a == b {
                    inter[b as usize] += 1;
                }
            }
        }
        let union = [p[0] + g[0] - inter[0], p[1] + g[1] - inter[1]];
        Ok(SampleCounts { intersection: inter, union, category: category.unwrap_or(NO_CATEGORY).to_string() })
    }

    /// The reference's per-sample IoU of class `c` (float32; NaN when the union is 0).
    pub fn iou_f32(&self, c: usize) -> f32 {
        self.intersection[c] as f32 / self.union[c] as f32
    }
}

/// Metrics of one class, ×100.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassMetrics {
    /// Mean per-sample IoU; NaN (JSON `null`) if any sample has an empty union.
    pub giou: f64,
    /// Cumulative IoU `ΣI / ΣU`.
    pub ciou: f64,
    /// Pr@X for each of [`THRESHOLDS`].
    pub precision: [f64; 5],
    pub total_intersection: u64,
    pub total_union: u64,
}

/// The result of [`MetricsAccumulator::compute`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Metrics {
    pub num_samples: usize,
    /// Target class (the numbers papers report).
    pub target: ClassMetrics,
    /// Background class (the reference reports it as `*_0`).
    pub background: ClassMetrics,
    /// `(category, mean IoU ×100)` in order of first appearance.
    pub per_category: Vec<(String, f64)>,
    /// Unweighted mean of the per-category values that are not NaN.
    pub mean_iou: f64,
}

/// Collects per-sample counts; [`compute`](Self::compute) turns them into [`Metrics`].
#[derive(Clone, Debug, Default)]
pub struct MetricsAccumulator {
    pub samples: Vec<SampleCounts>,
}

impl MetricsAccumulator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a prediction (0/1) and its ground truth (0/1, 255 = ignore), both row-major and of the
    /// same size (the original image size: the reference evaluates there).
    pub fn add(&mut self, pred: &[u8], gt: &[u8], category: Option<&str>) -> Result<&SampleCounts, String> {
        self.samples.push(SampleCounts::count(pred, gt, category)?);
        Ok(self.samples.last().unwrap())
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The metrics; `None` without samples (the reference divides by zero there).
    pub fn compute(&self) -> Option<Metrics> {
        if self.samples.is_empty() {
            return None;
        }
        let (per_category, mean_iou) = self.per_category();
        Some(Metrics {
            num_samples: self.samples.len(),
            target: self.class_metrics(1),
            background: self.class_metrics(0),
            per_category,
            mean_iou,
        })
    }

    fn class_metrics(&self, c: usize) -> ClassMetrics {
        let n = self.samples.len();
        // float32 throughout, in sample order, as the reference's tensor arithmetic.
        let (mut si, mut su, mut sg) = (0f32, 0f32, 0f32);
        let mut hits = [0usize; 5];
        for s in &self.samples {
            si += s.intersection[c] as f32;
            su += s.union[c] as f32;
            let iou = s.iou_f32(c);
            sg += iou;
            for (h, &t) in hits.iter_mut().zip(&THRESHOLDS) {
                *h += (iou > t as f32) as usize;
            }
        }
        ClassMetrics {
            giou: (sg / n as f32) as f64 * 100.0,
            ciou: (si / su) as f64 * 100.0,
            precision: hits.map(|h| (h as f32 / n as f32) as f64 * 100.0),
            total_intersection: self.samples.iter().map(|s| s.intersection[c]).sum(),
            total_union: self.samples.iter().map(|s| s.union[c]).sum(),
        }
    }

    /// The reference's `compute_per_class_iou_by_image` (Python floats).
    fn per_category(&self) -> (Vec<(String, f64)>, f64) {
        let mut lists: Vec<(String, Vec<f64>)> = Vec::new();
        for s in &self.samples {
            let (i, u) = (s.intersection[1] as f64, s.union[1] as f64);
            let iou = if u > 0.0 { i / u } else { f64::NAN };
            match lists.iter_mut().find(|(c, _)| *c == s.category) {
                Some((_, l)) => l.push(iou),
                None => lists.push((s.category.clone(), vec![iou])),
            }
        }
        let per: Vec<(String, f64)> = lists
            .into_iter()
            .map(|(c, l)| {
                let valid: Vec<f64> = l.into_iter().filter(|x| !x.is_nan()).collect();
                let v = if valid.is_empty() { f64::NAN } else { py_sum(&valid) * 100.0 / valid.len() as f64 };
                (c, v)
            })
            .collect();
        let valid: Vec<f64> = per.iter().map(|(_, v)| *v).filter(|v| !v.is_nan()).collect();
        let mean = if valid.is_empty() { f64::NAN } else { py_sum(&valid) / valid.len() as f64 };
        (per, mean)
    }
}

/// Python's `sum`: left to right from 0.
fn py_sum(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |a, &b| a + b)
}

impl Metrics {
    /// The reference's flat result dict (`gIoU_1`, `cIoU_0`, `seg_acc_0.5_1`, per-category names,
    /// `mean_iou`); NaN becomes `null`.
    pub fn to_reference_json(&self) -> serde_json::Value {
        let num = |x: f64| serde_json::Number::from_f64(x).map_or(serde_json::Value::Null, serde_json::Value::Number);
        let mut m = serde_json::Map::new();
        for (c, v) in &self.per_category {
            m.insert(c.clone(), num(*v));
        }
        m.insert("mean_iou".into(), num(self.mean_iou));
        for (id, cm) in [(0, &self.background), (1, &self.target)] {
            m.insert(format!("cIoU_{id}"), num(cm.ciou));
            m.insert(format!("gIoU_{id}"), num(cm.giou));
        }
        for (k, t) in THRESHOLDS.iter().enumerate() {
            for (id, cm) in [(0, &self.background), (1, &self.target)] {
                m.insert(format!("seg_acc_{t}_{id}"), num(cm.precision[k]));
            }
        }
        serde_json::Value::Object(m)
    }
}

/// A plain-text table: one row per class, then the per-category IoU.
impl fmt::Display for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<12}{:>8}{:>8}", "class", "gIoU", "cIoU")?;
        for t in THRESHOLDS {
            write!(f, "{:>8}", format!("Pr@{t}"))?;
        }
        writeln!(f)?;
        for (name, cm) in [("background", &self.background), ("target", &self.target)] {
            write!(f, "{name:<12}{:>8.2}{:>8.2}", cm.giou, cm.ciou)?;
            for p in cm.precision {
                write!(f, "{p:>8.2}")?;
            }
            writeln!(f)?;
        }
        writeln!(f, "{} samples", self.num_samples)?;
        writeln!(f, "{:<28}{:>8}", "category", "IoU")?;
        for (c, v) in &self.per_category {
            writeln!(f, "{c:<28}{v:>8.2}")?;
        }
        write!(f, "{:<28}{:>8.2}", "mean over categories", self.mean_iou)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_ignore_255_and_follow_histograms() {
        let s = SampleCounts::count(&[1, 1, 0, 0, 1, 2], &[1, 0, 1, 0, 255, 1], None).unwrap();
        // pixel 4 ignored; pixel 5: pred 2 is in no class, gt 1 counts for the target.
        // background: |P|=2, |G|=2, I=1; target: |P|=2, |G|=3, I=1.
        assert_eq!(s.intersection, [1, 1]);
        assert_eq!(s.union, [3, 4]);
        assert_eq!(s.category, "none");
        assert!(SampleCounts::count(&[0], &[0, 0], None).is_err());
    }

    #[test]
    fn strict_thresholds_and_nan() {
        let mut acc = MetricsAccumulator::new();
        // IoU exactly 0.5, then an empty pair (NaN).
        acc.add(&[1, 1, 0, 0], &[1, 0, 0, 0], Some("a")).unwrap();
        acc.add(&[0, 0], &[0, 0], Some("b")).unwrap();
        let m = acc.compute().unwrap();
        assert_eq!(m.target.precision[0], 0.0);
        assert!(m.target.giou.is_nan());
        assert_eq!(m.target.ciou, 50.0);
        assert_eq!(m.per_category[0], ("a".into(), 50.0));
        assert!(m.per_category[1].1.is_nan());
        assert_eq!(m.mean_iou, 50.0);
        assert_eq!(m.to_reference_json()["gIoU_1"], serde_json::Value::Null);
        let table = m.to_string();
        assert!(table.contains("target") && table.contains("Pr@0.9"), "{table}");
        assert!(MetricsAccumulator::new().compute().is_none());
    }
}
