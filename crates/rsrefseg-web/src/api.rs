//! The image / sentence API: `setImage` (decode, pre-process on the host, encode once and cache)
//! and `segment` (mask, heat map, predicted IoU, timings).

use crate::js::{error, from_js, to_js};
use crate::messages::{ImageInfo, SegmentRequest, SegmentResult};
use crate::session::{cached_prompts, current_image, current_model, set_cached_prompts, set_current_image, AnyImage, AnyPrompts, AnySegmenter};
use burn::tensor::backend::Backend;
use rsrefseg::segmenter::{decode_image, now_ms, Corrections, EncodedImage, Segmentation, Segmenter, SentencePrompts};
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

/// Answer a [`SegmentRequest`] (`{text, clicks?, box?}`) on the current image: the object the
/// sentence refers to, corrected by the clicks and the box when given (pixels of the original
/// image; with corrections, the prompts of the last request with the same text are reused and
/// only SAM's decoder runs). Resolves to a [`SegmentResult`]: `mask` a `Uint8Array` of
/// `width × height` (original size, row-major, 0 or 255), `heat` the localization map as a
/// grayscale `Uint8Array` of `heatWidth × heatHeight` (the image as the model saw it: long side =
/// the model's input size) stretched over its own range, whose ends are the probabilities
/// `heatMin` and `heatMax`, `note` a warning or `null`, `iou` SAM's predicted IoU, `timings` ms
/// per stage (`text`, `prompter`, `decoder`, `post`, `total`). Empty or over-long sentences,
/// clicks outside the image and boxes without area are errors.
#[wasm_bindgen]
pub async fn segment(request: JsValue) -> Result<JsValue, JsValue> {
    let request: SegmentRequest = from_js(request, "segment expects {text, clicks?, box?}")?;
    let model = current_model()?;
    let text = request.text.clone();
    if text.trim().is_empty() {
        return Err(error("the sentence is empty: describe the object to segment, e.g. \"the largest storage tank\""));
    }
    let image = current_image().ok_or_else(|| error("no image: choose an image first"))?;
    let corrections = request.corrections();
    // A plain request runs the whole query; corrections reuse the sentence's prompts.
    let cached = if corrections.is_empty() { None } else { cached_prompts(&text) };
    let seg: Segmentation = match (&model.seg, image.as_ref(), cached.as_deref()) {
        (AnySegmenter::Gpu(s), AnyImage::Gpu(e), Some(AnyPrompts::Gpu(p))) => s.answer(e, p, &corrections, None).await,
        (AnySegmenter::Cpu(s), AnyImage::Cpu(e), Some(AnyPrompts::Cpu(p))) => s.answer(e, p, &corrections, None).await,
        (AnySegmenter::Gpu(s), AnyImage::Gpu(e), _) => {
            let (seg, p) = query(s, e, &text, &corrections).await.map_err(error)?;
            set_cached_prompts(&text, AnyPrompts::Gpu(p));
            Ok(seg)
        }
        (AnySegmenter::Cpu(s), AnyImage::Cpu(e), _) => {
            let (seg, p) = query(s, e, &text, &corrections).await.map_err(error)?;
            set_cached_prompts(&text, AnyPrompts::Cpu(p));
            Ok(seg)
        }
        _ => return Err(error("the image was encoded by another model: set the image again")),
    }
    .map_err(error)?;
    to_js(&SegmentResult::new(seg, model.kind.name()))
}

/// The whole query of `text` (its prompts are returned for later corrections).
async fn query<B: Backend>(
    s: &Segmenter<B>,
    image: &EncodedImage<B>,
    text: &str,
    corrections: &Corrections,
) -> Result<(Segmentation, SentencePrompts<B>), String> {
    let t0 = now_ms();
    let sentence = s.sentence(text)?;
    let prompts = s.prompts(image, &sentence, t0).await?;
    let seg = s.answer(image, &prompts, corrections, None).await?;
    Ok((seg, prompts))
}
