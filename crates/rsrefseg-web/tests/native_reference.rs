//! Host side of the browser parity tests: runs the web pipeline ([`rsrefseg_web::pipeline`]) on
//! burn's NdArray backend with the synthetic nano bundle and the fixed test input, and checks the
//! result against `tests/fixtures/nano_reference.json`, the file the browser tests
//! (`tests/browser_model.rs`, WebGPU and CPU in Chromium) compare against.
//!
//! The test FAILS when the fixture is stale (model code, pre/post-processing, the synthetic
//! weights or the input changed), so the browser comparison cannot silently compare against
//! old numbers. Regenerate it with
//! `UPDATE_FIXTURES=1 cargo test -p rsrefseg-web --test native_reference`.

#![cfg(not(target_arch = "wasm32"))]

use burn::backend::ndarray::NdArrayDevice;
use burn::backend::NdArray;
use rsrefseg_web::bundle::load_bundle;
use rsrefseg_web::pipeline::block_on;
use rsrefseg_web::synthetic::{self, TEST_IMAGE_HW, TEST_SEED, TEST_SENTENCE};
use serde_json::{json, Value};

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

fn compute() -> Value {
    let device = NdArrayDevice::Cpu;
    let bytes = synthetic::bundle_bytes(TEST_SEED).unwrap();
    let seg = load_bundle::<NdArray>(bytes, &device).unwrap().segmenter(device);
    let img = synthetic::test_image(TEST_IMAGE_HW.0, TEST_IMAGE_HW.1);
    let enc = block_on(seg.encode(&img, 0.0)).unwrap();
    let out = block_on(seg.segment(&enc, TEST_SENTENCE)).unwrap();
    let m = out.low_res_size;
    let sampled: Vec<f64> = (0..m)
        .step_by(STRIDE)
        .flat_map(|y| (0..m).step_by(STRIDE).map(move |x| y * m + x))
        .map(|i| round6(out.low_res_logits[i]))
        .collect();
    json!({
        "about": "rsrefseg-web parity reference: synthetic nano bundle (seed below), synthetic::test_image, \
                  NdArray on the host. Written by tests/native_reference.rs (UPDATE_FIXTURES=1); \
                  read by tests/browser_model.rs.",
        "seed": TEST_SEED,
        "image_hw": [TEST_IMAGE_HW.0, TEST_IMAGE_HW.1],
        "sentence": TEST_SENTENCE,
        "token_ids": out.token_ids,
        "iou": round6(out.iou),
        "mask_hw": [out.height, out.width],
        "mask_area": out.area,
        "mask_rle": rle(&out.mask),
        "heat_hw": [out.heat_height, out.heat_width],
        "heat_mean": (out.heat.iter().map(|&v| v as f64).sum::<f64>() / out.heat.len() as f64 * 1e3).round() / 1e3,
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
    let pixels = (TEST_IMAGE_HW.0 * TEST_IMAGE_HW.1) as u64;
    // A useful parity input: a mask that is neither empty nor everything.
    assert!(area > pixels / 50 && area < pixels - pixels / 50, "degenerate test mask: {area} of {pixels} pixels");

    if std::env::var_os("UPDATE_FIXTURES").is_some() {
        std::fs::write(FIXTURE, serde_json::to_string_pretty(&now).unwrap() + "\n").unwrap();
        eprintln!("wrote {FIXTURE}");
        return;
    }
    let stale = "is stale: regenerate it with `UPDATE_FIXTURES=1 cargo test -p rsrefseg-web --test native_reference` \
                 and commit it (the browser tests compare against it)";
    let text = std::fs::read_to_string(FIXTURE).unwrap_or_else(|e| panic!("{FIXTURE}: {e}"));
    let old: Value = serde_json::from_str(&text).unwrap();
    for key in ["seed", "image_hw", "sentence", "token_ids", "mask_hw", "heat_hw", "low_res_size", "low_res_stride"] {
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
