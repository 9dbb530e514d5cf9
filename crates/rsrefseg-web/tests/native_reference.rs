//! Host side of the browser parity tests: runs the web pipeline ([`rsrefseg_web::pipeline`]) on
//! burn's Flex CPU backend (`rsrefseg_web::CpuBackend`) with the shipped nano bundle (`models/nano/nano.rsb`) and the fixed
//! input of `tests/common`, and checks the result against `tests/fixtures/nano_reference.json`,
//! the file the browser tests (`tests/browser_model.rs`, WebGPU and CPU in Chromium) compare
//! against.
//!
//! The test FAILS when the fixture is stale (model code, pre/post-processing, the shipped
//! bundle or the input changed), so the browser comparison cannot silently compare against
//! old numbers. Regenerate it with
//! `UPDATE_FIXTURES=1 cargo test -p rsrefseg-web --test native_reference`.
//!
//! Also: a bundle whose token table stays on the host (what large vocabularies use) answers
//! exactly as one whose table is on the device.

#![cfg(not(target_arch = "wasm32"))]

use rsrefseg::export::TokenTablePlacement;
use rsrefseg_web::bundle::{load_bundle, load_bundle_with};
use rsrefseg::segmenter::{block_on, Segmentation};
use serde_json::{json, Value};

mod common;
use common::{IMAGE_HW, SENTENCE};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/nano_reference.json");
/// The low-resolution logits are stored at every `STRIDE`-th row and column.
const STRIDE: usize = 2;

fn round6(v: f32) -> f64 {
    (v as f64 * 1e6).round() / 1e6
}

/// Row-major run lengths of a 0/255 mask, starting with a run of zeros.
fn rle(mask: &[u8]) -> Vec<usize> {
    let mut runs = Vec::new();
    let (mut cur, mut n) = (0u8, 0usize);
    for &m in mask {
        let m = (m != 0) as u8;
        if m != cur {
            runs.push(n);
            cur = m;
            n = 0;
        }
        n += 1;
    }
    runs.push(n);
    runs
}

fn run(placement: Option<TokenTablePlacement>) -> Segmentation {
    let device = burn_flex::FlexDevice;
    let seg = load_bundle_with::<rsrefseg_web::CpuBackend>(common::BUNDLE.to_vec(), &device, placement).unwrap().segmenter(device);
    let enc = block_on(seg.encode(&common::image(), 0.0)).unwrap();
    block_on(seg.segment(&enc, SENTENCE)).unwrap()
}

fn compute() -> Value {
    let out = run(None);
    let m = out.low_res_size;
    let sampled: Vec<f64> = (0..m)
        .step_by(STRIDE)
        .flat_map(|y| (0..m).step_by(STRIDE).map(move |x| y * m + x))
        .map(|i| round6(out.low_res_logits[i]))
        .collect();
    json!({
        "about": "rsrefseg-web parity reference: the shipped nano bundle (models/nano/nano.rsb, its FNV-1a \
                  below), web/samples/synth-tanks.png cropped to image_hw, Flex on the host. Written by \
                  tests/native_reference.rs (UPDATE_FIXTURES=1); read by tests/browser_model.rs.",
        "bundle_fnv1a64": format!("{:016x}", rsrefseg::export::quantize::fnv1a64(common::BUNDLE)),
        "image_hw": [IMAGE_HW.0, IMAGE_HW.1],
        "sentence": SENTENCE,
        "token_ids": out.token_ids,
        "iou": round6(out.iou),
        "mask_hw": [out.height, out.width],
        "mask_area": out.area,
        "mask_rle": rle(&out.mask),
        "heat_hw": [out.heat_height, out.heat_width],
        "heat_mean": (out.heat.iter().map(|&v| v as f64).sum::<f64>() / out.heat.len() as f64 * 1e3).round() / 1e3,
        "heat_range": [round6(out.heat_range.0), round6(out.heat_range.1)],
        "low_res_size": m,
        "low_res_stride": STRIDE,
        "low_res_logits": sampled,
    })
}

fn max_diff(a: &Value, b: &Value) -> f64 {
    let (a, b) = (a.as_array().unwrap(), b.as_array().unwrap());
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    a.iter().zip(b).map(|(x, y)| (x.as_f64().unwrap() - y.as_f64().unwrap()).abs()).fold(0.0, f64::max)
}

#[test]
fn native_reference_fixture_is_current() {
    let now = compute();
    let area = now["mask_area"].as_u64().unwrap();
    let pixels = (IMAGE_HW.0 * IMAGE_HW.1) as u64;
    // A useful parity input: a mask that is neither empty nor everything.
    assert!(area > pixels / 500 && area < pixels / 2, "degenerate test mask: {area} of {pixels} pixels");

    if std::env::var_os("UPDATE_FIXTURES").is_some() {
        std::fs::write(FIXTURE, serde_json::to_string_pretty(&now).unwrap() + "\n").unwrap();
        eprintln!("wrote {FIXTURE}");
        return;
    }
    let stale = "is stale: regenerate it with `UPDATE_FIXTURES=1 cargo test -p rsrefseg-web --test native_reference` \
                 and commit it (the browser tests compare against it)";
    let text = std::fs::read_to_string(FIXTURE).unwrap_or_else(|e| panic!("{FIXTURE}: {e}"));
    let old: Value = serde_json::from_str(&text).unwrap();
    for key in ["bundle_fnv1a64", "image_hw", "sentence", "token_ids", "mask_hw", "heat_hw", "low_res_size", "low_res_stride"] {
        assert_eq!(old[key], now[key], "{FIXTURE} {stale} ({key})");
    }
    assert_eq!(old["mask_rle"], now["mask_rle"], "{FIXTURE} {stale} (mask)");
    let d = max_diff(&old["low_res_logits"], &now["low_res_logits"]);
    assert!(d <= 1e-4, "{FIXTURE} {stale} (logits differ by {d})");
    let d = (old["iou"].as_f64().unwrap() - now["iou"].as_f64().unwrap()).abs();
    assert!(d <= 1e-4, "{FIXTURE} {stale} (iou differs by {d})");
    let d = (old["heat_mean"].as_f64().unwrap() - now["heat_mean"].as_f64().unwrap()).abs();
    assert!(d <= 0.01, "{FIXTURE} {stale} (heat map mean differs by {d})");
}

#[test]
fn heat_map_spans_its_range() {
    let out = run(None);
    let (lo, hi) = out.heat_range;
    assert!(0.0 <= lo && lo < hi && hi <= 1.0, "heat range {lo}..{hi}");
    assert_eq!(out.heat.iter().min(), Some(&0));
    assert_eq!(out.heat.iter().max(), Some(&255));
}

#[test]
fn token_table_on_the_host_answers_as_on_the_device() {
    let device = run(Some(TokenTablePlacement::Device));
    let host = run(Some(TokenTablePlacement::Host));
    assert_eq!(host.token_ids, device.token_ids);
    assert_eq!(host.mask, device.mask);
    let d = host.low_res_logits.iter().zip(&device.low_res_logits).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(d <= 1e-5, "logits differ by {d}");
    assert!((host.iou - device.iou).abs() <= 1e-5);
    // The default: the table stays on the host (the page never uploads it whole).
    let bytes = common::BUNDLE.to_vec();
    let loaded = load_bundle::<rsrefseg_web::CpuBackend>(bytes, &burn_flex::FlexDevice).unwrap();
    assert_eq!(loaded.tokens.placement(), TokenTablePlacement::Host);
    assert!(loaded.summary.contains("token table on the host"));
    let [rows, _] = loaded.model.siglip.text_model.embeddings.token_embedding.weight.dims();
    assert_eq!(rows, 1, "the model holds a one-row placeholder table until a query");
}
