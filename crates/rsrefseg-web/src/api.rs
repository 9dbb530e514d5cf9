//! The image / sentence API: `setImage` (decode, pre-process on the host, encode once and cache)
//! and `segment` (mask, heat map, predicted IoU, timings).

use crate::js::{error, from_js, to_js};
use crate::messages::{ImageInfo, SegmentRequest, SegmentResult};
use crate::session::{current_image, current_model, set_current_image, AnyImage, AnySegmenter};
use rsrefseg::segmenter::{decode_image, now_ms, Segmentation};
use wasm_bindgen::prelude::*;

/// Decode an image file (PNG, JPEG, TIFF, BMP, WebP; at most 40 MB, 16384 px a side), pre-process
/// it on the host and encode it once with the loaded model; later `segment` calls reuse the
/// encoding. Resolves to an [`ImageInfo`] (`{width, height, backend, timings: {decode,
/// preprocess, encode}}`, ms).
#[wasm_bindgen(js_name = setImage)]
pub async fn set_image(file: Vec<u8>) -> Result<JsValue, JsValue> {
    let model = current_model()?;
    set_current_image(None);
    let t0 = now_ms();
    let img = decode_image(&file).map_err(error)?;
    drop(file);
    let decode_ms = now_ms() - t0;
    let (image, timings, size) = match &model.seg {
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
    to_js(&ImageInfo::new(size, model.kind.name(), &timings))
}

/// Answer a [`SegmentRequest`] (`{text}`) on the current image: the object the sentence refers
/// to. Resolves to a [`SegmentResult`]: `mask` a `Uint8Array` of `width × height` (original size,
/// row-major, 0 or 255), `heat` the localization map as a grayscale `Uint8Array` of
/// `heatWidth × heatHeight` (the image as the model saw it: long side = the model's input size)
/// stretched over its own range, whose ends are the probabilities `heatMin` and `heatMax`,
/// `note` a warning or `null`, `iou` SAM's predicted IoU, `timings` ms per stage (`text`,
/// `prompter`, `decoder`, `post`, `total`). Empty or over-long sentences are errors.
#[wasm_bindgen]
pub async fn segment(request: JsValue) -> Result<JsValue, JsValue> {
    let SegmentRequest { text } = from_js(request, "segment expects {text}")?;
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
    to_js(&SegmentResult::new(seg, model.kind.name()))
}
