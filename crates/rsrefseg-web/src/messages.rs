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
//! | `segment` | [`SegmentRequest`] (`{text, clicks?, box?}`) | [`SegmentResult`] |
//!
//! Besides results the worker sends `{type: "panic", message}` (the wasm panicked: the page
//! restarts the worker), `{type: "ready"}` and `{type: "failed", error}` (the wasm module loaded
//! or not). Image and bundle bytes travel as typed arrays, not through serde: they are the large
//! inputs, handed over without a conversion.

use rsrefseg::segmenter::{Click, Corrections, ImageTimings, QueryTimings, Segmentation};
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
}

impl ImageInfo {
    pub fn new((height, width): (usize, usize), backend: &str, t: &ImageTimings) -> Self {
        ImageInfo {
            width,
            height,
            backend: backend.into(),
            timings: *t,
        }
    }
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
}
