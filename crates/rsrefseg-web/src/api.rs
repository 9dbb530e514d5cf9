//! The image / sentence API: `setImage` (decode, pre-process on the host, encode once and cache)
//! and `segment` (mask, heat map, predicted IoU, timings).

use crate::js::{error, from_js, to_js};
use crate::messages::{ImageInfo, SceneInfo, SceneProgress, SegmentRequest, SegmentResult};
use crate::session::{cached_prompts, current_image, current_model, set_cached_prompts, set_current_image, AnyImage, AnyPrompts, AnySceneTokens, AnySegmenter};
use burn::tensor::backend::Backend;
use js_sys::Function;
use rsrefseg::pre::RgbImage;
use rsrefseg::segmenter::{now_ms, Corrections, EncodedImage, ImageTimings, Segmentation, Segmenter, SentencePrompts};
use rsrefseg::whole_scene::geotiff::encode_mask_geotiff;
use rsrefseg::whole_scene::grid::TileGrid;
use rsrefseg::whole_scene::{decode_scene, polygons, reduce, wants_tiling, SceneEvent, SceneOptions, SceneSegmentation, SceneTokens};
use wasm_bindgen::prelude::*;

/// Largest image or scene file the page takes: an uncompressed 8192² RGB GeoTIFF (192 MiB) fits;
/// the file is copied into the worker and the wasm memory, so it is held two or three times.
pub const MAX_PAGE_FILE_BYTES: usize = 256 * 1024 * 1024;

/// Long side of a scene's preview.
const PREVIEW_SIDE: usize = 2048;

/// Decode an image file (PNG, JPEG, TIFF / GeoTIFF, BMP, WebP; at most 16384 px a side and 67
/// megapixels), pre-process it on the host and encode it once with the loaded model; later
/// `segment` calls reuse the encoding. A whole scene (a GeoTIFF, or an image more than 4× the
/// model's input a side) is not encoded now: each sentence tiles it (`scene` in the result).
/// Resolves to an [`ImageInfo`] (`{width, height, backend, timings: {decode, preprocess,
/// encode}, scene?}`, ms).
#[wasm_bindgen(js_name = setImage)]
pub async fn set_image(file: Vec<u8>) -> Result<JsValue, JsValue> {
    let model = current_model()?;
    set_current_image(None);
    if file.len() > MAX_PAGE_FILE_BYTES {
        return Err(error(format!(
            "the file is {:.1} MB; the largest accepted image file is {} MB",
            file.len() as f64 / 1048576.0,
            MAX_PAGE_FILE_BYTES >> 20
        )));
    }
    let t0 = now_ms();
    let (img, geo) = decode_scene(&file).map_err(error)?;
    drop(file);
    let decode_ms = now_ms() - t0;
    if wants_tiling(img.width, img.height, model.image_size, geo.is_some()) {
        let options = SceneOptions::for_input(model.image_size);
        let grid = TileGrid::new(img.width, img.height, options.tile, options.overlap).map_err(error)?;
        let (preview, _) = reduce(&img, PREVIEW_SIDE);
        let scene = SceneInfo {
            rows: grid.rows(),
            cols: grid.cols(),
            tile: options.tile,
            overlap: options.overlap,
            georeferenced: geo.is_some(),
            epsg: geo.as_ref().and_then(|g| g.epsg),
            preview_width: preview.width,
            preview_height: preview.height,
            preview: preview.data,
        };
        let timings = ImageTimings { decode: decode_ms, preprocess: 0.0, encode: 0.0 };
        let info = ImageInfo { scene: Some(scene), ..ImageInfo::new((img.height, img.width), model.kind.name(), &timings) };
        set_current_image(Some(AnyImage::Scene { image: img, geo, options, tokens: Default::default() }));
        return to_js(&info);
    }
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
///
/// On a whole scene the sentence is answered tile by tile; `onProgress` (if given) is called
/// with a [`SceneProgress`] after every tile, and the result has `scene` (the tiles, the mask as
/// a GeoTIFF and as GeoJSON).
#[wasm_bindgen]
pub async fn segment(request: JsValue, on_progress: Option<Function>) -> Result<JsValue, JsValue> {
    let request: SegmentRequest = from_js(request, "segment expects {text, clicks?, box?}")?;
    let model = current_model()?;
    let text = request.text.clone();
    if text.trim().is_empty() {
        return Err(error("the sentence is empty: describe the object to segment, e.g. \"the largest storage tank\""));
    }
    let image = current_image().ok_or_else(|| error("no image: choose an image first"))?;
    let corrections = request.corrections();
    if let AnyImage::Scene { image, geo, options, tokens } = image.as_ref() {
        if !corrections.is_empty() {
            return Err(error("clicks and boxes correct one model input, not a whole scene: zoom into the object's tile and crop it to correct"));
        }
        let mut report = |e: &SceneEvent| {
            if let (Some(f), Ok(v)) = (on_progress.as_ref(), to_js(&SceneProgress::from(e))) {
                let _ = f.call1(&JsValue::NULL, &v);
            }
        };
        // The kept tile tokens are taken out for the query (no borrow across an await) and put
        // back after it; tokens of another backend are dropped.
        let kept = tokens.take();
        let (seg, ids) = match &model.seg {
            AnySegmenter::Gpu(s) => {
                let mut t = match kept {
                    AnySceneTokens::Gpu(t) => t,
                    _ => SceneTokens::default(),
                };
                let r = scene_query(s, image, &text, options, &mut t, &mut report).await;
                tokens.replace(AnySceneTokens::Gpu(t));
                r
            }
            AnySegmenter::Cpu(s) => {
                let mut t = match kept {
                    AnySceneTokens::Cpu(t) => t,
                    _ => SceneTokens::default(),
                };
                let r = scene_query(s, image, &text, options, &mut t, &mut report).await;
                tokens.replace(AnySceneTokens::Cpu(t));
                r
            }
        }
        .map_err(error)?;
        let geotiff = encode_mask_geotiff(&seg.mask, seg.width, seg.height, geo.as_ref()).map_err(error)?;
        let traced = polygons::trace(&seg.mask, seg.width, seg.height, geo.as_ref()).map_err(error)?;
        let geojson = polygons::to_geojson(&traced, &text, geo.as_ref());
        let n = traced.polygons.0.len();
        return to_js(&SegmentResult::from_scene(seg, ids, model.kind.name(), geotiff, geojson, n));
    }
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

/// `text` on a whole scene, and its token ids.
async fn scene_query<B: Backend>(
    s: &Segmenter<B>,
    image: &RgbImage,
    text: &str,
    options: &SceneOptions,
    tokens: &mut SceneTokens<B>,
    progress: &mut dyn FnMut(&SceneEvent),
) -> Result<(SceneSegmentation, Vec<u32>), String> {
    let sentence = s.sentence(text)?;
    let seg = s.segment_scene(image, &sentence, options, tokens, progress).await?;
    Ok((seg, sentence.ids))
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
