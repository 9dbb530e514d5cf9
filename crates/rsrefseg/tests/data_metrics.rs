//! `RefSegIoUMetric` parity: every number of `metrics_io.json` (per-pair intersections and
//! unions, the metric dict including per-category IoU, and the NaN case) reproduced exactly.

use rsrefseg::data::metrics::MetricsAccumulator;
use serde_json::Value;
use std::path::PathBuf;

fn metrics_io() -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/reference/metrics_io.json");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

fn flat(rows: &Value) -> Vec<u8> {
    rows.as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u8))
        .collect()
}

fn run(pairs: &Value) -> MetricsAccumulator {
    let mut acc = MetricsAccumulator::new();
    for p in pairs.as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        let s = acc.add(&flat(&p["pred"]), &flat(&p["gt"]), p["category"].as_str()).unwrap().clone();
        for c in 0..2 {
            assert_eq!(s.intersection[c] as f64, p["area_intersect"][c].as_f64().unwrap(), "{name}: I[{c}]");
            assert_eq!(s.union[c] as f64, p["area_union"][c].as_f64().unwrap(), "{name}: U[{c}]");
        }
        match p["iou_class1"].as_f64() {
            Some(want) => assert_eq!(s.iou_f32(1) as f64, want, "{name}: IoU"),
            None => assert!(s.iou_f32(1).is_nan(), "{name}: IoU should be NaN"),
        }
    }
    acc
}

fn assert_same_dict(got: &Value, want: &Value) {
    let (g, w) = (got.as_object().unwrap(), want.as_object().unwrap());
    for (k, v) in w {
        let Some(x) = g.get(k) else { panic!("missing metric {k}") };
        match (x.as_f64(), v.as_f64()) {
            (Some(a), Some(b)) => assert_eq!(a, b, "{k}: got {a}, reference {b}"),
            _ => assert_eq!(x, v, "{k}"),
        }
    }
    let extra: Vec<_> = g.keys().filter(|k| !w.contains_key(*k)).collect();
    assert!(extra.is_empty(), "metrics the reference does not report: {extra:?}");
}

#[test]
fn reproduces_reference_metrics() {
    let io = metrics_io();
    let acc = run(&io["pairs"]);
    let m = acc.compute().unwrap();
    assert_same_dict(&m.to_reference_json(), &io["metrics"]);
    // Category order is that of first appearance, as in the reference dict.
    let cats: Vec<&str> = m.per_category.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(cats, ["ship", "vehicle", "tank", "none"]);
    println!("{m}");
    // The serialisable struct carries the same numbers.
    let j = serde_json::to_value(&m).unwrap();
    assert_eq!(j["target"]["giou"], io["metrics"]["gIoU_1"]);
    assert_eq!(j["num_samples"], 7);
}

#[test]
fn reproduces_reference_nan_case() {
    let io = metrics_io();
    let nan = &io["nan_case"];
    let m = run(&nan["pairs"]).compute().unwrap();
    assert!(m.target.giou.is_nan());
    assert_same_dict(&m.to_reference_json(), &nan["metrics"]);
    // NaN serialises as null.
    assert_eq!(serde_json::to_value(&m).unwrap()["target"]["giou"], Value::Null);
}
