//! The browser's segmentation pipeline, generic over the burn backend.
//!
//! - [`Segmenter::encode`]: image → host pre-processing (keep-ratio resize, OpenCV-exact, then
//!   padding: no resampling kernel runs on the device) → SigLIP vision + SAM image encoder, once
//!   per image ([`EncodedImage`] is cached by the caller);
//! - [`Segmenter::segment`]: sentence → tokens → text tower → prompter → SAM decoder →
//!   post-processing → [`Segmentation`] (mask at the original size, heat map, predicted IoU).
//!
//! Every read from the device is `into_data_async().await` (synchronous reads panic in a
//! browser); stages are timed by awaiting one element of each stage's output, so the timings
//! are wall-clock milliseconds of finished work on WebGPU too.

use burn::tensor::activation::sigmoid;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use crate::bundle::TokenLookup;
use rsrefseg::encoders::tokenizer::TextTokenizer;
use rsrefseg::model::{ImageEncoding, RsRefSeg};
use rsrefseg::nn::interpolate::bilinear;
use rsrefseg::post::{binary_mask, logits_at_original_size};
use rsrefseg::pre::{to_x01, Geometry, RgbImage};

/// Largest accepted image file.
pub const MAX_FILE_BYTES: usize = 40 * 1024 * 1024;

/// A model ready to segment: weights, tokenizer and the SAM input side.
pub struct Segmenter<B: Backend> {
    pub model: RsRefSeg<B>,
    pub tokenizer: TextTokenizer,
    /// SAM input side S (the pre-processing target).
    pub image_size: usize,
    /// How token ids reach the token table (whole on the device, pruned, or on the host).
    pub tokens: crate::bundle::TokenLookup,
    pub device: B::Device,
}

/// Milliseconds spent on an image.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ImageTimings {
    /// File → RGB pixels.
    pub decode: f64,
    /// Host pre-processing (resize, scale, pad) and upload.
    pub preprocess: f64,
    /// SigLIP vision tower + SAM image encoder.
    pub encode: f64,
}

/// Milliseconds spent on a sentence.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct QueryTimings {
    /// Tokenisation + SigLIP text tower.
    pub text: f64,
    pub prompter: f64,
    /// SAM prompt encoder (dense prompt) + mask decoder.
    pub decoder: f64,
    /// Up-sampling to the original size, threshold, heat map, read-back.
    pub post: f64,
}

/// An image encoded once, for any number of sentences.
pub struct EncodedImage<B: Backend> {
    pub encoding: ImageEncoding<B>,
    pub geometry: Geometry,
    pub timings: ImageTimings,
}

impl<B: Backend> EncodedImage<B> {
    /// Original `(height, width)`.
    pub fn size(&self) -> (usize, usize) {
        self.geometry.original
    }
}

/// The answer to one sentence.
#[derive(Clone, Debug)]
pub struct Segmentation {
    /// Original image size.
    pub height: usize,
    pub width: usize,
    /// `height × width`, row-major, 255 = object, 0 = background.
    pub mask: Vec<u8>,
    /// Size of the heat map: the image as the model saw it (keep-ratio resized so that the long
    /// side is S, e.g. 256 for nano), padding cropped. Scale it to the image for display.
    pub heat_height: usize,
    pub heat_width: usize,
    /// The dense localization map: the prompter's dense prompt (its first channel, the map the
    /// dense head predicts) as probabilities, stretched so that its lowest value over the image
    /// is 0 and its highest 255. A trained model's map is small everywhere after the sigmoid, so
    /// the raw probabilities would show an almost black picture; `heat_range` keeps them.
    pub heat: Vec<u8>,
    /// The probabilities that `heat` 0 and 255 stand for.
    pub heat_range: (f32, f32),
    /// Set when the sentence has tokens the bundle has no embedding for (a pruned vocabulary).
    pub note: Option<String>,
    /// SAM's predicted IoU of the mask.
    pub iou: f32,
    /// SAM's low-resolution mask logits `m × m` (before up-sampling; for tests).
    pub low_res_logits: Vec<f32>,
    pub low_res_size: usize,
    /// Token ids of the sentence.
    pub token_ids: Vec<u32>,
    /// Object pixels in `mask`.
    pub area: usize,
    pub timings: QueryTimings,
}

/// Milliseconds on a monotonic clock (`performance.now()` in a browser).
pub fn now_ms() -> f64 {
    #[cfg(target_arch = "wasm32")]
    {
        let perf = js_sys::Reflect::get(&js_sys::global(), &"performance".into()).ok();
        let now = perf.as_ref().and_then(|p| js_sys::Reflect::get(p, &"now".into()).ok());
        match (perf, now) {
            (Some(p), Some(f)) if f.is_function() => js_sys::Function::from(f)
                .call0(&p)
                .ok()
                .and_then(|v| v.as_f64())
                .unwrap_or_else(js_sys::Date::now),
            _ => js_sys::Date::now(),
        }
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        use std::sync::OnceLock;
        use std::time::Instant;
        static START: OnceLock<Instant> = OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_secs_f64() * 1e3
    }
}

/// Decode an image file with clear errors for empty, oversized, corrupt or unsupported files.
pub fn decode_image(bytes: &[u8]) -> Result<RgbImage, String> {
    if bytes.is_empty() {
        return Err("the file is empty".into());
    }
    if bytes.len() > MAX_FILE_BYTES {
        return Err(format!(
            "the file is {:.1} MB; the largest accepted image file is {} MB",
            bytes.len() as f64 / (1024.0 * 1024.0),
            MAX_FILE_BYTES >> 20
        ));
    }
    // The side and area limits (rsrefseg::pre) are checked from the header before decoding.
    RgbImage::decode(bytes).map_err(|e| e.to_string())
}

/// Wait until `t` has been computed (reads one element).
async fn fence<B: Backend, const D: usize>(t: &Tensor<B, D>) -> Result<(), String> {
    let ranges: [std::ops::Range<usize>; D] = std::array::from_fn(|_| 0..1);
    read(t.clone().slice(ranges)).await.map(|_| ())
}

/// Read a tensor back as f32 values, asynchronously.
pub async fn read<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<Vec<f32>, String> {
    t.into_data_async()
        .await
        .map_err(|e| format!("reading a result from the device: {e:?}"))?
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| format!("reading a result from the device: {e:?}"))
}

fn to_u8(v: &[f32], scale: f32) -> Vec<u8> {
    v.iter().map(|&x| (x * scale).round().clamp(0.0, 255.0) as u8).collect()
}

/// Probabilities → 0..=255 over their own range, and that range. A flat map stays 0.
fn stretch(v: &[f32]) -> (Vec<u8>, (f32, f32)) {
    let lo = v.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if v.is_empty() || hi - lo <= f32::EPSILON {
        return (vec![0; v.len()], (lo.min(hi), hi.max(lo)));
    }
    let scale = 255.0 / (hi - lo);
    (v.iter().map(|&x| ((x - lo) * scale).round().clamp(0.0, 255.0) as u8).collect(), (lo, hi))
}

impl<B: Backend> Segmenter<B> {
    /// Pre-process (on the host) and encode an image once.
    pub async fn encode(&self, img: &RgbImage, decode_ms: f64) -> Result<EncodedImage<B>, String> {
        let t0 = now_ms();
        let (x01, geometry) = to_x01::<B>(img, self.image_size, &self.device);
        let t1 = now_ms();
        let encoding = self.model.encode_image(x01);
        fence(&encoding.v).await?;
        fence(&encoding.sam.image_embed).await?;
        let t2 = now_ms();
        Ok(EncodedImage {
            encoding,
            geometry,
            timings: ImageTimings { decode: decode_ms, preprocess: t1 - t0, encode: t2 - t1 },
        })
    }

    /// Segment the object `text` refers to in an encoded image.
    pub async fn segment(&self, image: &EncodedImage<B>, text: &str) -> Result<Segmentation, String> {
        let t0 = now_ms();
        let tokens = self.tokenizer.encode_batch(&[text]).map_err(|e| e.to_string())?;
        let token_ids = tokens.input_ids[0].clone();
        let l = token_ids.len();
        let mask: Vec<i64> = tokens.attention_mask[0].iter().map(|&m| m as i64).collect();
        let mask = Tensor::<B, 2, Int>::from_data(TensorData::new(mask, [1, l]), &self.device);
        let to_ids = |rows: &[u32]| {
            let ids: Vec<i64> = rows.iter().map(|&i| i as i64).collect();
            Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, l]), &self.device)
        };
        let (text_out, note) = match &self.tokens {
            TokenLookup::Direct => (self.model.encode_text(to_ids(&token_ids), Some(mask)), None),
            TokenLookup::Pruned(bundle) => {
                let mapped = bundle.map_ids(&token_ids);
                (self.model.encode_text(to_ids(&mapped.ids), Some(mask)), mapped.note)
            }
            TokenLookup::Host(bundle) => {
                // A shallow copy (parameters are shared handles) whose token table is only the
                // rows of this sentence.
                let mut model = self.model.clone();
                let mapped = bundle.install_token_rows(&mut model, &token_ids, &self.device);
                (model.encode_text(to_ids(&mapped.ids), Some(mask)), mapped.note)
            }
        };
        // Unknown words first: they change the answer more than a pruned-table detail.
        let note = match (self.tokenizer.vocabulary_note(text), note) {
            (Some(a), Some(b)) => Some(format!("{a} {b}")),
            (a, b) => a.or(b),
        };
        fence(&text_out.t_sent).await?;
        let t1 = now_ms();
        let prompter = self.model.prompt(&image.encoding, &text_out);
        fence(&prompter.sparse).await?;
        if let Some(d) = &prompter.dense {
            fence(d).await?;
        }
        let t2 = now_ms();
        let out = self.model.decode(&image.encoding, text_out, prompter, false);
        fence(&out.mask_logits).await?;
        let t3 = now_ms();

        let g = image.geometry;
        let (height, width) = g.original;
        let logits = logits_at_original_size(out.mask_logits.clone(), g);
        let mask = to_u8(&read(binary_mask(logits).float()).await?, 255.0);
        let (heat_height, heat_width) = g.resized;
        let (heat, heat_range) = match out.localization() {
            Some(dense) => {
                let [b, _, _, _] = dense.dims();
                let padded = bilinear(dense.slice([0..b, 0..1]), [g.padded, g.padded], false);
                let cropped = padded.slice([0..b, 0..1, 0..heat_height, 0..heat_width]);
                stretch(&read(sigmoid(cropped)).await?)
            }
            None => (vec![0; heat_height * heat_width], (0.0, 0.0)),
        };
        let iou = read(out.iou.clone()).await?[0];
        let low_res_size = out.mask_logits.dims()[3];
        let low_res_logits = read(out.mask_logits).await?;
        let t4 = now_ms();
        let area = mask.iter().filter(|&&m| m != 0).count();
        Ok(Segmentation {
            height,
            width,
            mask,
            heat_height,
            heat_width,
            heat,
            heat_range,
            note,
            iou,
            low_res_logits,
            low_res_size,
            token_ids,
            area,
            timings: QueryTimings { text: t1 - t0, prompter: t2 - t1, decoder: t3 - t2, post: t4 - t3 },
        })
    }
}

/// Drive a future to completion on the host (tests; the CPU backend never waits).
#[cfg(not(target_arch = "wasm32"))]
pub fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};
    fn noop(_: *const ()) {}
    fn clone(p: *const ()) -> RawWaker {
        RawWaker::new(p, &VTABLE)
    }
    static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, noop, noop, noop);
    // SAFETY: the vtable's functions do nothing with the data pointer.
    let waker = unsafe { Waker::from_raw(RawWaker::new(std::ptr::null(), &VTABLE)) };
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}
