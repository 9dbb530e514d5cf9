//! The image / sentence API: `setImage` (decode, pre-process on the host, encode once and cache)
//! and `segment` (mask, heat map, predicted IoU, timings).

use crate::js::{bytes, error, ids, num, object};
use crate::pipeline::{decode_image, now_ms, ImageTimings, QueryTimings, Segmentation};
use crate::session::{current_image, current_model, set_current_image, AnyImage, AnySegmenter};
use wasm_bindgen::prelude::*;

fn image_timings(t: &ImageTimings) -> JsValue {
    object(&[("decode", num(t.decode)), ("preprocess", num(t.preprocess)), ("encode", num(t.encode))]).into()
}

fn query_timings(t: &QueryTimings) -> JsValue {
    object(&[
        ("text", num(t.text)),
        ("prompter", num(t.prompter)),
        ("decoder", num(t.decoder)),
        ("post", num(t.post)),
        ("total", num(t.text + t.prompter + t.decoder + t.post)),
    ])
    .into()
}

/// Decode an image file (PNG, JPEG, TIFF, BMP, WebP; at most 40 MB, 16384 px a side), pre-process
/// it on the host and encode it once with the loaded model; later `segment` calls reuse the
/// encoding. Resolves to `{width, height, backend, timings: {decode, preprocess, encode}}` (ms).
#[wasm_bindgen(js_name = setImage)]
pub async fn set_image(file: Vec<u8>) -> Result<JsValue, JsValue> {
    let model = current_model()?;
    set_current_image(None);
    let t0 = now_ms();
    let img = decode_image(&file).map_err(error)?;
    drop(file);
    let decode_ms = now_ms() - t0;
    let (image, timings, (h, w)) = match &model.seg {
        AnySegmenter::Gpu(s) => {
            let e = s.encode(&img, decode_ms).await.map_err(error)?;
            let (t, size) = (e.timings, e.size());
            (AnyImage::Gpu(e), t, size)
        }
        AnySegmenter::Cpu(s) => {
            let e = s.encode(&img, decode_ms).await.map_err(error)?;
            let (t, size) = (e.timings, e.size());
            (AnyImage::Cpu(e), t, size)
        }
    };
    set_current_image(Some(image));
    Ok(object(&[
        ("width", num(w as f64)),
        ("height", num(h as f64)),
        ("backend", model.kind.name().into()),
        ("timings", image_timings(&timings)),
    ])
    .into())
}

/// Segment the object `text` refers to in the current image. Resolves to
/// `{width, height, mask, heatWidth, heatHeight, heat, heatMin, heatMax, iou, area, tokens, note,
/// backend, timings}`:
/// `mask` is a `Uint8Array` of `width × height` (original size, row-major, 0 or 255), `heat` the
/// localization map as grayscale `Uint8Array` of `heatWidth × heatHeight` (the image as the model
/// saw it: long side = the model's input size) stretched over its own range, whose ends are the
/// probabilities `heatMin` and `heatMax`, `note` a warning or `null`, `iou` SAM's predicted IoU, `timings` ms per stage
/// (`text`, `prompter`, `decoder`, `post`, `total`). Empty or over-long sentences are errors.
#[wasm_bindgen]
pub async fn segment(text: String) -> Result<JsValue, JsValue> {
    let model = current_model()?;
    if text.trim().is_empty() {
        return Err(error("the sentence is empty: describe the object to segment, e.g. \"the largest storage tank\""));
    }
    let image = current_image().ok_or_else(|| error("no image: choose an image first"))?;
    let seg: Segmentation = match (&model.seg, image.as_ref()) {
        (AnySegmenter::Gpu(s), AnyImage::Gpu(e)) => s.segment(e, &text).await,
        (AnySegmenter::Cpu(s), AnyImage::Cpu(e)) => s.segment(e, &text).await,
        _ => return Err(error("the image was encoded by another model: set the image again")),
    }
    .map_err(error)?;
    Ok(object(&[
        ("width", num(seg.width as f64)),
        ("height", num(seg.height as f64)),
        ("mask", bytes(&seg.mask)),
        ("heatWidth", num(seg.heat_width as f64)),
        ("heatHeight", num(seg.heat_height as f64)),
        ("heat", bytes(&seg.heat)),
        ("heatMin", num(seg.heat_range.0 as f64)),
        ("heatMax", num(seg.heat_range.1 as f64)),
        ("note", seg.note.as_deref().map_or(JsValue::NULL, JsValue::from)),
        ("iou", num(seg.iou as f64)),
        ("area", num(seg.area as f64)),
        ("tokens", ids(&seg.token_ids)),
        ("backend", model.kind.name().into()),
        ("timings", query_timings(&seg.timings)),
    ])
    .into())
}
