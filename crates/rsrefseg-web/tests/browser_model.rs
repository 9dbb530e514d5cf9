//! The model in the browser (headless Chromium): the shipped nano bundle (`models/nano/nano.rsb`)
//! on the fixed input of `tests/common`, on WebGPU (SwiftShader) and on the CPU fallback (Flex),
//! compared with the host's
//! reference values (`tests/fixtures/nano_reference.json`, written and kept current by
//! `tests/native_reference.rs`): mask IoU ≥ 0.99, low-resolution mask logits within 1e-3.
//! Also the exported JavaScript API (`loadSyntheticModel`, `setImage`, `segment`) and its errors.

#![cfg(target_arch = "wasm32")]

use burn::backend::wgpu::WgpuDevice;
use burn::backend::WebGpu;
use burn::tensor::backend::Backend;
use js_sys::Reflect;
use rsrefseg_web::bundle::load_bundle;
use rsrefseg::segmenter::{now_ms, Segmentation};
use rsrefseg_web::synthetic::{self, TEST_SEED};
use serde_json::Value;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

mod common;
use common::{IMAGE_HW, SENTENCE};

const FIXTURE: &str = include_str!("fixtures/nano_reference.json");

fn fixture() -> Value {
    let f: Value = serde_json::from_str(FIXTURE).unwrap();
    assert_eq!(f["sentence"], SENTENCE);
    assert_eq!(f["image_hw"], serde_json::json!([IMAGE_HW.0, IMAGE_HW.1]));
    let hash = format!("{:016x}", rsrefseg::export::quantize::fnv1a64(common::BUNDLE));
    assert_eq!(f["bundle_fnv1a64"], hash.as_str(), "the fixture was written for another nano.rsb");
    f
}

fn decode_rle(runs: &[Value], n: usize) -> Vec<bool> {
    let mut out = Vec::with_capacity(n);
    for (i, r) in runs.iter().enumerate() {
        out.extend(std::iter::repeat_n(i % 2 == 1, r.as_u64().unwrap() as usize));
    }
    assert_eq!(out.len(), n, "mask RLE length");
    out
}

/// Run the pipeline on backend `B` and check it against the fixture. Returns
/// (load, encode, first query, second query) milliseconds.
async fn run_and_compare<B: Backend>(device: B::Device, name: &str) -> [f64; 4] {
    let f = fixture();
    let t0 = now_ms();
    let seg = load_bundle::<B>(common::BUNDLE.to_vec(), &device).unwrap().segmenter(device);
    let load = now_ms() - t0;
    let img = common::image();
    let enc = seg.encode(&img, 0.0).await.unwrap();
    let t1 = now_ms();
    let out: Segmentation = seg.segment(&enc, SENTENCE).await.unwrap();
    let first = now_ms() - t1;
    let t2 = now_ms();
    let again = seg.segment(&enc, SENTENCE).await.unwrap();
    let second = now_ms() - t2;

    // Token ids and sizes.
    let ids: Vec<u64> = f["token_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert_eq!(out.token_ids.iter().map(|&i| i as u64).collect::<Vec<_>>(), ids, "{name}: token ids");
    assert_eq!([out.height, out.width], [IMAGE_HW.0, IMAGE_HW.1], "{name}: mask size");
    assert_eq!(out.mask.len(), out.height * out.width);
    assert_eq!(out.heat.len(), out.heat_height * out.heat_width);

    // Logits within 1e-3.
    let m = out.low_res_size;
    let stride = f["low_res_stride"].as_u64().unwrap() as usize;
    assert_eq!(m as u64, f["low_res_size"].as_u64().unwrap());
    let want: Vec<f64> = f["low_res_logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let got: Vec<f64> = (0..m)
        .step_by(stride)
        .flat_map(|y| (0..m).step_by(stride).map(move |x| y * m + x))
        .map(|i| out.low_res_logits[i] as f64)
        .collect();
    assert_eq!(got.len(), want.len());
    let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(diff <= 1e-3, "{name}: low-resolution logits differ from the host by {diff}");
    let iou_diff = (out.iou as f64 - f["iou"].as_f64().unwrap()).abs();
    assert!(iou_diff <= 1e-3, "{name}: predicted IoU differs by {iou_diff}");

    // Mask IoU ≥ 0.99 against the host's mask.
    let reference = decode_rle(f["mask_rle"].as_array().unwrap(), out.mask.len());
    let (mut inter, mut union) = (0usize, 0usize);
    for (&a, &b) in out.mask.iter().zip(&reference) {
        let a = a != 0;
        inter += (a && b) as usize;
        union += (a || b) as usize;
    }
    let iou = if union == 0 { 1.0 } else { inter as f64 / union as f64 };
    assert!(iou >= 0.99, "{name}: mask IoU with the host is {iou}");
    let heat_mean = out.heat.iter().map(|&v| v as f64).sum::<f64>() / out.heat.len() as f64;
    assert!((heat_mean - f["heat_mean"].as_f64().unwrap()).abs() < 1.0, "{name}: heat map mean {heat_mean}");

    // The cached encoding answers the same again.
    assert_eq!(again.mask, out.mask, "{name}: re-query differs");

    let times = [load, enc.timings.encode, first, second];
    web_sys::console::log_1(
        &format!(
            "rsrefseg timing {name}: load {:.0} ms, preprocess {:.0} ms, encode {:.0} ms, first query {:.0} ms, re-query {:.0} ms \
             (text {:.0}, prompter {:.0}, decoder {:.0}, post {:.0}); mask IoU {iou:.4}, max logit diff {diff:.2e}",
            times[0], enc.timings.preprocess, times[1], times[2], times[3],
            again.timings.text, again.timings.prompter, again.timings.decoder, again.timings.post
        )
        .into(),
    );
    times
}

#[wasm_bindgen_test]
async fn nano_bundle_on_cpu_matches_host() {
    run_and_compare::<rsrefseg_web::CpuBackend>(burn_flex::FlexDevice, "cpu").await;
}

#[wasm_bindgen_test]
async fn nano_bundle_on_webgpu_matches_host() {
    assert!(
        rsrefseg_web::ensure_webgpu().await.expect("asking for a WebGPU adapter"),
        "no WebGPU adapter: Chromium needs --enable-unsafe-webgpu (see webdriver.json)"
    );
    run_and_compare::<WebGpu>(WgpuDevice::default(), "webgpu").await;
}

fn get(o: &JsValue, k: &str) -> JsValue {
    Reflect::get(o, &k.into()).unwrap()
}

/// A `segment` request as the page sends it (`{text}`, crate::messages::SegmentRequest).
fn request(text: &str) -> JsValue {
    let o = js_sys::Object::new();
    Reflect::set(&o, &"text".into(), &text.into()).unwrap();
    o.into()
}

fn err_text(e: JsValue) -> String {
    js_sys::Error::from(e).message().into()
}

/// The exported API on the CPU backend: errors for missing model / image, corrupt files, empty
/// and over-long sentences; a mask of the image's size.
#[wasm_bindgen_test]
async fn exported_api_and_its_errors() {
    let png = {
        let img = synthetic::test_image(24, 32);
        let mut out = Vec::new();
        image::RgbImage::from_raw(32, 24, img.data)
            .unwrap()
            .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    };
    assert_eq!(rsrefseg_web::init("cpu".into()).await.unwrap(), "cpu");
    // Not a bundle, an empty file, a truncated bundle: clear errors.
    let e = err_text(rsrefseg_web::load_model(b"not a model bundle at all".to_vec()).await.unwrap_err());
    assert!(e.contains("not an rsrefseg model bundle"), "{e}");
    let e = err_text(rsrefseg_web::load_model(Vec::new()).await.unwrap_err());
    assert!(e.contains("empty"), "{e}");
    let bundle = synthetic::bundle_bytes(TEST_SEED).unwrap();
    let e = err_text(rsrefseg_web::load_model(bundle[..bundle.len() / 2].to_vec()).await.unwrap_err());
    assert!(e.contains("truncated") || e.contains("invalid"), "{e}");
    assert!(!rsrefseg_web::model_loaded());
    let info = rsrefseg_web::load_model(bundle).await.unwrap();
    assert!(get(&info, "summary").as_string().unwrap().contains("q8"), "{:?}", get(&info, "summary"));
    let info = rsrefseg_web::load_synthetic_model(None).await.unwrap();
    assert_eq!(get(&info, "backend"), "cpu");
    assert_eq!(get(&info, "imageSize").as_f64(), Some(256.0));
    assert!(rsrefseg_web::model_loaded());

    let e = err_text(rsrefseg_web::segment(request("the ship"), None).await.unwrap_err());
    assert!(e.contains("no image"), "{e}");
    let e = err_text(rsrefseg_web::segment(JsValue::from_str("the ship"), None).await.unwrap_err());
    assert!(e.contains("segment expects {text"), "{e}");
    for (bytes, want) in [
        (Vec::new(), "empty"),
        (b"this is not an image".to_vec(), "unrecognised file format"),
        (png[..png.len() / 2].to_vec(), "image"),
        (vec![0u8; 41 * 1024 * 1024], "unrecognised file format"),
    ] {
        let e = err_text(rsrefseg_web::set_image(bytes).await.unwrap_err());
        assert!(e.contains(want), "expected {want:?} in {e:?}");
    }

    let r = rsrefseg_web::set_image(png).await.unwrap();
    assert_eq!((get(&r, "width").as_f64(), get(&r, "height").as_f64()), (Some(32.0), Some(24.0)));
    for (text, want) in [("", "empty"), ("   ", "empty"), (&"ship ".repeat(40)[..], "at most")] {
        let e = err_text(rsrefseg_web::segment(request(text), None).await.unwrap_err());
        assert!(e.contains(want), "expected {want:?} in {e:?}");
    }
    let out = rsrefseg_web::segment(request("the largest storage tank"), None).await.unwrap();
    let mask = js_sys::Uint8Array::from(get(&out, "mask"));
    assert_eq!(mask.length(), 32 * 24);
    assert!(mask.to_vec().iter().all(|&v| v == 0 || v == 255));
    let heat = js_sys::Uint8Array::from(get(&out, "heat"));
    assert_eq!(heat.length() as f64, get(&out, "heatWidth").as_f64().unwrap() * get(&out, "heatHeight").as_f64().unwrap());
    assert_eq!(get(&out, "backend"), "cpu");
    let iou = get(&out, "iou").as_f64().unwrap();
    assert!(iou.is_finite());
    let (lo, hi) = (get(&out, "heatMin").as_f64().unwrap(), get(&out, "heatMax").as_f64().unwrap());
    assert!((0.0..=hi).contains(&lo) && hi <= 1.0, "heat range {lo}..{hi}");
    assert!(get(&out, "note").is_null());
    for k in ["text", "prompter", "decoder", "post"] {
        assert!(get(&get(&out, "timings"), k).as_f64().unwrap() >= 0.0);
    }

    // Corrections: clicks and a box re-run the decoder only (text and prompter times 0); clicks
    // outside the image and boxes without area are refused by name.
    let corrected = |clicks: &str, bbox: &str| {
        let o = js_sys::JSON::parse(&format!(r#"{{"text": "the largest storage tank", "clicks": {clicks}, "box": {bbox}}}"#)).unwrap();
        rsrefseg_web::segment(o, None)
    };
    let out = corrected(r#"[{"x": 16, "y": 12, "positive": true}, {"x": 2, "y": 2, "positive": false}]"#, "[1, 1, 30, 20]").await.unwrap();
    assert_eq!(js_sys::Uint8Array::from(get(&out, "mask")).length(), 32 * 24);
    assert_eq!(get(&get(&out, "timings"), "text").as_f64(), Some(0.0));
    assert_eq!(get(&get(&out, "timings"), "prompter").as_f64(), Some(0.0));
    let e = err_text(corrected(r#"[{"x": 99, "y": 1, "positive": true}]"#, "null").await.unwrap_err());
    assert!(e.contains("outside"), "{e}");
    let e = err_text(corrected("[]", "[5, 5, 2, 2]").await.unwrap_err());
    assert!(e.contains("no area"), "{e}");

    // A whole scene: a small GeoTIFF is tiled (it is a map), every sentence reports its tiles'
    // progress, and the answer comes with the mask as a GeoTIFF and as GeoJSON.
    use rsrefseg::whole_scene::geotiff::{encode_rgb_geotiff, GeoReference};
    let data: Vec<u8> = (0..300 * 400 * 3).map(|i| ((i * 7) % 251) as u8).collect();
    let scene = rsrefseg::pre::RgbImage::new(300, 400, data).unwrap();
    let geo = GeoReference::north_up(500_000.0, 4_200_000.0, 0.5, 32633);
    let tif = encode_rgb_geotiff(&scene, Some(&geo)).unwrap();
    let info = rsrefseg_web::set_image(tif).await.unwrap();
    let s = get(&info, "scene");
    assert_eq!((get(&s, "rows").as_f64(), get(&s, "cols").as_f64()), (Some(2.0), Some(2.0)));
    assert_eq!(get(&s, "epsg").as_f64(), Some(32633.0));
    assert_eq!(js_sys::Uint8Array::from(get(&s, "preview")).length(), 400 * 300 * 3);
    let events = std::rc::Rc::new(std::cell::RefCell::new(Vec::<String>::new()));
    let sink = events.clone();
    let progress = wasm_bindgen::closure::Closure::<dyn FnMut(JsValue)>::new(move |p: JsValue| {
        sink.borrow_mut().push(get(&p, "phase").as_string().unwrap());
    });
    let f: js_sys::Function = progress.as_ref().clone().into();
    let out = rsrefseg_web::segment(request("the largest storage tank"), Some(f)).await.unwrap();
    assert_eq!(js_sys::Uint8Array::from(get(&out, "mask")).length(), 400 * 300);
    let sc = get(&out, "scene");
    assert_eq!(get(&sc, "tiles").dyn_into::<js_sys::Array>().unwrap().length(), 4);
    let answered = get(&sc, "tilesAnswered").as_f64().unwrap();
    assert!((1.0..=4.0).contains(&answered));
    let tif = js_sys::Uint8Array::from(get(&sc, "geotiff")).to_vec();
    let (_, back) = rsrefseg::whole_scene::decode_scene(&tif).unwrap();
    assert_eq!(back.unwrap().affine, geo.affine);
    assert!(get(&sc, "geojson").as_string().unwrap().contains("FeatureCollection"));
    let ev = events.borrow();
    assert_eq!(ev.iter().filter(|p| *p == "locate").count(), 4, "{ev:?}");
    assert_eq!(ev.iter().filter(|p| *p == "answer").count() as f64, answered, "{ev:?}");
    drop(ev);
    let e = err_text(corrected(r#"[{"x": 16, "y": 12, "positive": true}]"#, "null").await.unwrap_err());
    assert!(e.contains("whole scene"), "{e}");
}
