//! The messages of the page's worker API, one definition each: what `loadModel`,
//! `loadModelUrl`, `loadSyntheticModel`, `modelInfo`, `setImage` and `segment` take and resolve
//! to. They cross into JavaScript with `serde-wasm-bindgen` (field names in camelCase; `None` is
//! `null` unless a field says it is left out; byte buffers are `Uint8Array`s), so the shapes
//! below are the whole protocol between the wasm module and `web/worker.js` / `web/app.js`.
//!
//! Worker protocol (page → worker `{id, op, args}`, worker → page `{type: "result", id, ok,
//! result | error}`), per `op`:
//!
//! | op | args | result |
//! | --- | --- | --- |
//! | `init` | `{backend: "webgpu" \| "cpu"}` | `{backend, version}` |
//! | `loadModel` | `{bytes: ArrayBuffer}` | [`ModelInfo`] |
//! | `loadModelUrl` | `{url}` | [`ModelInfo`] with `downloadMs`, `bytes` (and `{type: "progress", id, loaded, total}` messages) |
//! | `loadSynthetic` | `{seed?}` | [`ModelInfo`] |
//! | `setImage` | `{bytes: ArrayBuffer}` | [`ImageInfo`] |
//! | `segment` | [`SegmentRequest`] (`{text, clicks?, box?}`) | [`SegmentResult`] (on a whole scene with `scene`, and `{type: "progress", id, scene: `[`SceneProgress`]`}` after every tile) |
//!
//! Besides results the worker sends `{type: "panic", message}` (the wasm panicked: the page
//! restarts the worker), `{type: "ready"}` and `{type: "failed", error}` (the wasm module loaded
//! or not). Image and bundle bytes travel as typed arrays, not through serde: they are the large
//! inputs, handed over without a conversion.

use rsrefseg::segmenter::{Click, Corrections, ImageTimings, QueryTimings, Segmentation};
use rsrefseg::whole_scene::grid::Tile;
use rsrefseg::whole_scene::{SceneEvent, SceneSegmentation, TileReport, TileSelection};
use serde::{Deserialize, Serialize};

/// A loaded model.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelInfo {
    /// `"webgpu"` or `"cpu"`.
    pub backend: String,
    /// One line: parameters, storage, bundle size, input size.
    pub summary: String,
    /// SAM input side (256 for nano).
    pub image_size: usize,
    /// The longest sentence in tokens.
    pub max_tokens: usize,
    pub load_ms: f64,
    /// `loadModelUrl` only: the download's milliseconds and bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<usize>,
}

/// An image set and encoded.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageInfo {
    pub width: usize,
    pub height: usize,
    pub backend: String,
    /// `{decode, preprocess, encode}`.
    pub timings: ImageTimings,
    /// Set when the image is a whole scene (a GeoTIFF, or more than 4× the model's input a
    /// side): it is not encoded now but tiled by every sentence; left out otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scene: Option<SceneInfo>,
}

impl ImageInfo {
    pub fn new((height, width): (usize, usize), backend: &str, t: &ImageTimings) -> Self {
        ImageInfo {
            width,
            height,
            backend: backend.into(),
            timings: *t,
            scene: None,
        }
    }
}

/// How a whole scene will be tiled.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SceneInfo {
    pub rows: usize,
    pub cols: usize,
    /// Tile side and overlap in scene pixels.
    pub tile: usize,
    pub overlap: usize,
    pub georeferenced: bool,
    /// The scene's EPSG code, when its GeoTIFF keys name one.
    pub epsg: Option<u16>,
    /// The scene reduced to at most 2048 pixels a side, RGB (a `Uint8Array` of `previewWidth ×
    /// previewHeight × 3`): what the page shows when the browser cannot decode the file (TIFF).
    pub preview_width: usize,
    pub preview_height: usize,
    #[serde(with = "serde_bytes")]
    pub preview: Vec<u8>,
}

/// One tile of a whole scene: where it is, its localization score, and SAM's answer on it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TileMessage {
    pub row: usize,
    pub col: usize,
    pub x0: usize,
    pub y0: usize,
    pub width: usize,
    pub height: usize,
    pub score: Option<f32>,
    pub answered: bool,
    pub predicted_iou: Option<f32>,
}

impl From<&TileReport> for TileMessage {
    fn from(t: &TileReport) -> Self {
        let Tile { row, col, x0, y0, width, height } = t.tile;
        TileMessage {
            row,
            col,
            x0,
            y0,
            width,
            height,
            score: t.score,
            answered: t.answered,
            predicted_iou: t.predicted_iou,
        }
    }
}

/// Progress of a whole scene after one tile: `phase` `"locate"` (the localization map) or
/// `"answer"` (SAM), tiles `done` of `total`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SceneProgress {
    pub phase: String,
    pub done: usize,
    pub total: usize,
    pub tile: TileMessage,
}

impl From<&SceneEvent<'_>> for SceneProgress {
    fn from(e: &SceneEvent) -> Self {
        SceneProgress { phase: e.phase.into(), done: e.done, total: e.total, tile: e.tile.into() }
    }
}

/// What a whole scene's answer adds: the tiles, and the mask as a GeoTIFF (with the scene's
/// georeferencing) and as GeoJSON polygons (in the scene's coordinates) for download.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SceneResult {
    pub rows: usize,
    pub cols: usize,
    /// `"all"` or `"localize"`.
    pub selection: String,
    pub tiles: Vec<TileMessage>,
    pub tiles_answered: usize,
    #[serde(with = "serde_bytes")]
    pub geotiff: Vec<u8>,
    pub geojson: String,
    pub polygons: usize,
    /// Milliseconds: `text`, `locate`, `answer`, `merge`, `total`.
    pub timings: rsrefseg::whole_scene::SceneTimings,
}

/// A sentence to answer on the current image, with the user's corrections (beyond the paper):
/// clicks and a box in pixels of the original image. With corrections, the sentence's prompts
/// of the last request with the same text on this image are reused and only SAM's decoder runs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SegmentRequest {
    pub text: String,
    #[serde(default)]
    pub clicks: Vec<ClickMessage>,
    /// `[x0, y0, x1, y1]`.
    #[serde(default, rename = "box")]
    pub bbox: Option<[f32; 4]>,
}

/// A click: on the object (`positive`) or not.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct ClickMessage {
    pub x: f32,
    pub y: f32,
    pub positive: bool,
}

impl SegmentRequest {
    pub fn corrections(&self) -> Corrections {
        Corrections {
            clicks: self.clicks.iter().map(|c| Click { x: c.x, y: c.y, positive: c.positive }).collect(),
            bbox: self.bbox,
        }
    }
}

/// Milliseconds per stage of a sentence.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct QueryTimes {
    pub text: f64,
    pub prompter: f64,
    pub decoder: f64,
    pub post: f64,
    pub total: f64,
}

/// The answer to a sentence.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SegmentResult {
    /// The original image size.
    pub width: usize,
    pub height: usize,
    /// `width × height`, row-major, 0 or 255 (a `Uint8Array`).
    #[serde(with = "serde_bytes")]
    pub mask: Vec<u8>,
    /// The localization map as the model saw the image (long side = the model's input size),
    /// grayscale, stretched over its own range (a `Uint8Array` of `heatWidth × heatHeight`).
    pub heat_width: usize,
    pub heat_height: usize,
    #[serde(with = "serde_bytes")]
    pub heat: Vec<u8>,
    /// The probabilities that `heat` 0 and 255 stand for.
    pub heat_min: f32,
    pub heat_max: f32,
    /// A warning for the user (unknown words), or `null`.
    pub note: Option<String>,
    /// SAM's predicted IoU of the mask.
    pub iou: f32,
    /// Object pixels.
    pub area: usize,
    /// The sentence's token ids.
    pub tokens: Vec<u32>,
    pub backend: String,
    pub timings: QueryTimes,
    /// A whole scene's tiles and exports; left out for a single input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scene: Option<SceneResult>,
}

impl SegmentResult {
    pub fn new(seg: Segmentation, backend: &str) -> Self {
        let t: QueryTimings = seg.timings;
        SegmentResult {
            width: seg.width,
            height: seg.height,
            mask: seg.mask,
            heat_width: seg.heat_width,
            heat_height: seg.heat_height,
            heat: seg.heat,
            heat_min: seg.heat_range.0,
            heat_max: seg.heat_range.1,
            note: seg.note,
            iou: seg.iou,
            area: seg.area,
            tokens: seg.token_ids,
            backend: backend.into(),
            timings: QueryTimes {
                text: t.text,
                prompter: t.prompter,
                decoder: t.decoder,
                post: t.post,
                total: t.text + t.prompter + t.decoder + t.post,
            },
            scene: None,
        }
    }

    /// A whole scene's answer. The heat map is the localization map at one cell per tile
    /// (`cols × rows`, the tiles' scores stretched over their range; flat when every tile was
    /// answered without one); `iou` is the best predicted IoU of the answered tiles; the stage
    /// times are the scene's (`prompter` = the localization map, `decoder` = SAM on the chosen
    /// tiles, `post` = merging).
    pub fn from_scene(seg: SceneSegmentation, tokens: Vec<u32>, backend: &str, geotiff: Vec<u8>, geojson: String, polygons: usize) -> Self {
        let scores: Vec<f32> = seg.tiles.iter().map(|t| t.score.unwrap_or(f32::NAN)).collect();
        let lo = scores.iter().copied().filter(|v| v.is_finite()).fold(f32::INFINITY, f32::min);
        let hi = scores.iter().copied().filter(|v| v.is_finite()).fold(f32::NEG_INFINITY, f32::max);
        let heat: Vec<u8> = scores
            .iter()
            .map(|&v| if v.is_finite() && hi > lo { ((v - lo) / (hi - lo) * 255.0).round() as u8 } else { 0 })
            .collect();
        let sigmoid = |x: f32| if x.is_finite() { 1.0 / (1.0 + (-x).exp()) } else { 0.0 };
        let iou = seg.tiles.iter().filter_map(|t| t.predicted_iou).fold(0.0, f32::max);
        let t = seg.timings;
        SegmentResult {
            width: seg.width,
            height: seg.height,
            heat_width: seg.cols,
            heat_height: seg.rows,
            heat,
            heat_min: sigmoid(lo),
            heat_max: sigmoid(hi),
            note: seg.note.clone(),
            iou,
            area: seg.area,
            tokens,
            backend: backend.into(),
            timings: QueryTimes { text: t.text, prompter: t.locate, decoder: t.answer, post: t.merge, total: t.total },
            scene: Some(SceneResult {
                rows: seg.rows,
                cols: seg.cols,
                selection: match seg.options.selection {
                    TileSelection::All => "all".into(),
                    TileSelection::Localize { .. } => "localize".into(),
                },
                tiles_answered: seg.tiles.iter().filter(|t| t.answered).count(),
                tiles: seg.tiles.iter().map(TileMessage::from).collect(),
                geotiff,
                geojson,
                polygons,
                timings: t,
            }),
            mask: seg.mask,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn keys(v: &Value) -> Vec<&str> {
        let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        k.sort_unstable();
        k
    }

    /// The field names are the protocol `web/app.js` reads: a rename here must be one there.
    #[test]
    fn field_names_are_the_documented_protocol() {
        let info = ModelInfo {
            backend: "cpu".into(),
            summary: "s".into(),
            image_size: 256,
            max_tokens: 32,
            load_ms: 1.0,
            download_ms: None,
            bytes: None,
        };
        assert_eq!(keys(&serde_json::to_value(&info).unwrap()), ["backend", "imageSize", "loadMs", "maxTokens", "summary"]);
        let with_download = ModelInfo { download_ms: Some(2.0), bytes: Some(3), ..info };
        let v = serde_json::to_value(&with_download).unwrap();
        assert_eq!((v["downloadMs"].as_f64(), v["bytes"].as_u64()), (Some(2.0), Some(3)));

        let image = ImageInfo::new((24, 32), "cpu", &ImageTimings { decode: 1.0, preprocess: 2.0, encode: 3.0 });
        let v = serde_json::to_value(&image).unwrap();
        assert_eq!(v, json!({"width": 32, "height": 24, "backend": "cpu", "timings": {"decode": 1.0, "preprocess": 2.0, "encode": 3.0}}));

        let r: SegmentRequest = serde_json::from_value(json!({"text": "the ship"})).unwrap();
        assert_eq!(r.text, "the ship");
        assert!(r.corrections().is_empty());
        let r: SegmentRequest = serde_json::from_value(
            json!({"text": "the ship", "clicks": [{"x": 3.5, "y": 4.0, "positive": false}], "box": [1.0, 2.0, 30.0, 40.0]}),
        )
        .unwrap();
        let c = r.corrections();
        assert_eq!(c.clicks, [Click { x: 3.5, y: 4.0, positive: false }]);
        assert_eq!(c.bbox, Some([1.0, 2.0, 30.0, 40.0]));
        assert!(serde_json::from_value::<SegmentRequest>(json!({"text": "t", "clicks": [{"x": 1}]})).is_err(), "a click needs x, y, positive");
        assert!(serde_json::from_value::<SegmentRequest>(json!({})).is_err(), "text is required");

        let seg = Segmentation {
            height: 2,
            width: 3,
            mask: vec![0, 255, 0, 0, 0, 0],
            heat_height: 1,
            heat_width: 2,
            heat: vec![0, 255],
            heat_range: (0.25, 0.5),
            note: None,
            iou: 0.5,
            object_score_logit: 1.0,
            low_res_logits: vec![],
            low_res_size: 0,
            token_ids: vec![2, 7, 1],
            area: 1,
            timings: QueryTimings { text: 1.0, prompter: 2.0, decoder: 3.0, post: 4.0 },
        };
        let v = serde_json::to_value(SegmentResult::new(seg, "webgpu")).unwrap();
        assert_eq!(
            keys(&v),
            [
                "area", "backend", "heat", "heatHeight", "heatMax", "heatMin", "heatWidth", "height", "iou", "mask", "note",
                "timings", "tokens", "width"
            ]
        );
        assert!(v["note"].is_null());
        assert_eq!(v["timings"]["total"].as_f64(), Some(10.0));
        assert_eq!(v["tokens"], json!([2, 7, 1]));
    }

    /// A whole scene: the image says how it will be tiled, the answer carries the tiles (the
    /// page draws their progress), the localization map at one cell per tile and the exports.
    #[test]
    fn whole_scene_messages_carry_tiles_and_exports() {
        use rsrefseg::whole_scene::{SceneOptions, SceneTimings};
        let scene = SceneInfo {
            rows: 2,
            cols: 3,
            tile: 256,
            overlap: 64,
            georeferenced: true,
            epsg: Some(32633),
            preview_width: 1,
            preview_height: 1,
            preview: vec![1, 2, 3],
        };
        let image = ImageInfo { scene: Some(scene), ..ImageInfo::new((400, 600), "cpu", &ImageTimings::default()) };
        let v = serde_json::to_value(&image).unwrap();
        assert_eq!(
            v["scene"],
            json!({"rows": 2, "cols": 3, "tile": 256, "overlap": 64, "georeferenced": true, "epsg": 32633,
                   "previewWidth": 1, "previewHeight": 1, "preview": [1, 2, 3]})
        );

        let tile = |col: usize, score: f32, answered: bool| TileReport {
            tile: Tile { row: 0, col, x0: col * 192, y0: 0, width: 256, height: 256 },
            score: Some(score),
            answered,
            predicted_iou: answered.then_some(0.75),
            object_score_logit: None,
            mask_pixels: 0,
        };
        let seg = SceneSegmentation {
            width: 640,
            height: 256,
            mask: vec![0; 640 * 256],
            area: 0,
            rows: 1,
            cols: 3,
            tiles: vec![tile(0, -2.0, false), tile(1, 2.0, true), tile(2, 0.0, false)],
            options: SceneOptions::for_input(256),
            note: None,
            timings: SceneTimings { text: 1.0, locate: 2.0, answer: 3.0, merge: 4.0, total: 10.0 },
            merger_bytes: 0,
        };
        let r = SegmentResult::from_scene(seg, vec![2, 9], "cpu", vec![1, 2, 3], "{}".into(), 0);
        assert_eq!((r.heat_width, r.heat_height, r.heat.clone()), (3, 1, vec![0, 255, 128]));
        assert_eq!(r.iou, 0.75);
        let v = serde_json::to_value(&r).unwrap();
        let scene = &v["scene"];
        assert_eq!(
            keys(scene),
            ["cols", "geojson", "geotiff", "polygons", "rows", "selection", "tiles", "tilesAnswered", "timings"]
        );
        assert_eq!(scene["selection"], "localize");
        assert_eq!(scene["tilesAnswered"], 1);
        assert_eq!(scene["tiles"][1]["predictedIou"].as_f64(), Some(0.75));
        assert_eq!(scene["timings"]["locate"].as_f64(), Some(2.0));
        assert_eq!(v["timings"]["prompter"].as_f64(), Some(2.0));
        let p = SceneProgress::from(&SceneEvent { phase: "locate", done: 1, total: 3, tile: &tile(0, 1.0, false) });
        assert_eq!(serde_json::to_value(&p).unwrap()["tile"]["x0"], 0);
    }
}
