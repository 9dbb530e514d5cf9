//! The segmentation pipeline: the one path from an image file and a sentence to a mask, shared by
//! the command line tool (`rsrefseg segment`, `inspect`) and the page (through the web crate's
//! thin asynchronous adapter), so both apply the same limits and give the same answers.
//!
//! - [`decode_image`]: file bytes → RGB pixels, refusing empty, oversized, corrupt or too large
//!   images with a clear error ([`MAX_FILE_BYTES`] here, the side and area limits of
//!   [`crate::pre`] from the header, before decoding);
//! - [`Segmenter::encode`]: host pre-processing (keep-ratio resize, OpenCV-exact, then padding:
//!   no resampling kernel runs on the device) → SigLIP vision + SAM image encoder, once per image
//!   ([`EncodedImage`], kept by the caller);
//! - [`Segmenter::segment`]: sentence → tokens → text tower → prompter → SAM decoder →
//!   post-processing → [`Segmentation`] (mask at the original size, heat map, predicted IoU, the
//!   time of every stage);
//! - [`Segmenter::prompts`] then [`Segmenter::answer`]: the same in two steps, so that the user's
//!   corrections ([`Corrections`]: clicks and a box, beyond the paper) re-run only SAM's decoder
//!   on the sentence's cached prompts, with the previous answer as SAM's mask prompt.
//!
//! Every read from the device is `into_data_async().await`: a browser cannot wait synchronously,
//! and natively the futures complete at once ([`block_on`]). Stages are timed by awaiting one
//! element of each stage's output, so the timings are wall-clock milliseconds of finished work on
//! WebGPU too.

use crate::encoders::SiglipTextOutput;
use crate::encoders::tokenizer::TextTokenizer;
use crate::export::Bundle;
use crate::export::TokenTablePlacement;
use crate::model::{ImageEncoding, Refinement, RsRefSeg, RsRefSegOutput};
use crate::prompter::PrompterOutput;
use crate::sam::prompt_encoder::PointPrompts;
use crate::nn::interpolate::bilinear;
use crate::post::{binary_mask, logits_at_original_size};
use crate::pre::{to_x01, Geometry, RgbImage};
use burn::tensor::activation::sigmoid;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use std::rc::Rc;

/// Largest accepted image file.
pub const MAX_FILE_BYTES: usize = 40 * 1024 * 1024;

/// How a sentence's token ids reach the model's token table.
pub enum TokenLookup {
    /// The model holds the tokenizer's whole table: ids as they are.
    Direct,
    /// The model holds a table pruned to a corpus: ids through the bundle's vocabulary map.
    Pruned(Rc<Bundle>),
    /// The table stays in the bundle on the host; each query gathers (and dequantises) its rows
    /// and gives the model just those.
    Host(Rc<Bundle>),
}

impl TokenLookup {
    pub fn placement(&self) -> TokenTablePlacement {
        match self {
            TokenLookup::Host(_) => TokenTablePlacement::Host,
            _ => TokenTablePlacement::Device,
        }
    }
}

/// A model ready to segment: weights, tokenizer and the SAM input side.
pub struct Segmenter<B: Backend> {
    pub model: RsRefSeg<B>,
    /// `None` when sentences arrive as token ids only ([`Sentence::from_ids`]).
    pub tokenizer: Option<TextTokenizer>,
    /// SAM input side S (the pre-processing target).
    pub image_size: usize,
    /// How token ids reach the token table (whole on the device, pruned, or on the host).
    pub tokens: TokenLookup,
    pub device: B::Device,
}

/// Milliseconds spent on an image (serialised as the page's `timings` of an image).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
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

/// A tokenised sentence: ids and attention mask `[l]` of one sentence, and a note for the user
/// when the vocabulary does not know some of its words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sentence {
    pub ids: Vec<u32>,
    pub attention_mask: Vec<u32>,
    pub note: Option<String>,
}

impl Sentence {
    /// Token ids given as they are (all attended).
    pub fn from_ids(ids: Vec<u32>) -> Sentence {
        let attention_mask = vec![1; ids.len()];
        Sentence { ids, attention_mask, note: None }
    }
}

/// Most clicks one answer takes (each is one more prompt token for the decoder).
pub const MAX_CLICKS: usize = 32;

/// A click on the image at a position in the original image's pixel frame (pixel `(i, j)` spans
/// `[i, i + 1) × [j, j + 1)`): on the object (`positive`) or not.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Click {
    pub x: f32,
    pub y: f32,
    pub positive: bool,
}

/// The user's corrections of an answer, in pixels of the original image.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Corrections {
    pub clicks: Vec<Click>,
    /// `(x0, y0, x1, y1)`.
    pub bbox: Option<[f32; 4]>,
}

impl Corrections {
    pub fn is_empty(&self) -> bool {
        self.clicks.is_empty() && self.bbox.is_none()
    }

    /// Clear errors for clicks or a box outside the image, a box with no area, or too many clicks.
    pub fn check(&self, (height, width): (usize, usize)) -> Result<(), String> {
        if self.clicks.len() > MAX_CLICKS {
            return Err(format!("{} clicks; at most {MAX_CLICKS} are taken (reset the clicks)", self.clicks.len()));
        }
        let inside = |x: f32, y: f32| x.is_finite() && y.is_finite() && (0.0..=width as f32).contains(&x) && (0.0..=height as f32).contains(&y);
        if let Some(c) = self.clicks.iter().find(|c| !inside(c.x, c.y)) {
            return Err(format!("the click at ({}, {}) is outside the {width}×{height} image", c.x, c.y));
        }
        if let Some([x0, y0, x1, y1]) = self.bbox {
            if !inside(x0, y0) || !inside(x1, y1) {
                return Err(format!("the box ({x0}, {y0}, {x1}, {y1}) is not inside the {width}×{height} image"));
            }
            if x1 <= x0 || y1 <= y0 {
                return Err(format!("the box ({x0}, {y0}, {x1}, {y1}) has no area: give x0 < x1 and y0 < y1"));
            }
        }
        Ok(())
    }
}

/// A sentence's prompts on one encoded image (text tower and prompter outputs), kept so that
/// corrections re-run only the decoder.
pub struct SentencePrompts<B: Backend> {
    text: SiglipTextOutput<B>,
    prompter: PrompterOutput<B>,
    note: Option<String>,
    token_ids: Vec<u32>,
    /// Milliseconds of the text tower and the prompter.
    text_ms: f64,
    prompter_ms: f64,
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
    /// All zeros (and `heat_range` (0, 0)) for a model without a dense prompt.
    pub heat: Vec<u8>,
    /// The probabilities that `heat` 0 and 255 stand for.
    pub heat_range: (f32, f32),
    /// Set when the sentence has words the vocabulary does not know, or tokens the bundle has
    /// no embedding for (a pruned vocabulary).
    pub note: Option<String>,
    /// SAM's predicted IoU of the mask.
    pub iou: f32,
    /// SAM's object-score logit (> 0: the decoder thinks an object is there).
    pub object_score_logit: f32,
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
    use std::sync::OnceLock;
    use web_time::Instant;
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64() * 1e3
}

/// Refuse an empty file, or one above `max` bytes, naming the limit (`what`: "image", "scene").
pub fn check_file_size(len: usize, max: usize, what: &str) -> Result<(), String> {
    if len == 0 {
        return Err("the file is empty".into());
    }
    if len > max {
        return Err(format!(
            "the file is {:.1} MB; the largest accepted {what} file is {} MB",
            len as f64 / (1024.0 * 1024.0),
            max >> 20
        ));
    }
    Ok(())
}

/// Decode an image file with clear errors for empty, oversized, corrupt or unsupported files.
pub fn decode_image(bytes: &[u8]) -> Result<RgbImage, String> {
    check_file_size(bytes.len(), MAX_FILE_BYTES, "image")?;
    // The side and area limits (crate::pre) are checked from the header before decoding.
    RgbImage::decode(bytes).map_err(|e| e.to_string())
}

/// Wait until `t` has been computed (reads one element).
pub(crate) async fn fence<B: Backend, const D: usize>(t: &Tensor<B, D>) -> Result<(), String> {
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
    /// A model whose token table holds the tokenizer's whole vocabulary (weights loaded from a
    /// checkpoint, as the command line tool does).
    pub fn new(model: RsRefSeg<B>, tokenizer: Option<TextTokenizer>, image_size: usize, device: B::Device) -> Self {
        Segmenter { model, tokenizer, image_size, tokens: TokenLookup::Direct, device }
    }

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

    /// Tokenise `text`, with a note naming the words the vocabulary does not know.
    pub fn sentence(&self, text: &str) -> Result<Sentence, String> {
        let tokenizer = self.tokenizer.as_ref().ok_or("this model has no tokenizer: give token ids")?;
        let tokens = tokenizer.encode_batch(&[text]).map_err(|e| e.to_string())?;
        Ok(Sentence {
            ids: tokens.input_ids[0].clone(),
            attention_mask: tokens.attention_mask[0].clone(),
            note: tokenizer.vocabulary_note(text),
        })
    }

    /// Query stage 1, the text tower, with the token table reached as [`TokenLookup`] says; the
    /// sentence's note joined with any note of the lookup (tokens a pruned table lacks).
    pub fn encode_sentence(&self, sentence: &Sentence) -> (SiglipTextOutput<B>, Option<String>) {
        let l = sentence.ids.len();
        let mask: Vec<i64> = sentence.attention_mask.iter().map(|&m| m as i64).collect();
        let mask = Tensor::<B, 2, Int>::from_data(TensorData::new(mask, [1, l]), &self.device);
        let to_ids = |rows: &[u32]| {
            let ids: Vec<i64> = rows.iter().map(|&i| i as i64).collect();
            Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, l]), &self.device)
        };
        let (text, lookup_note) = match &self.tokens {
            TokenLookup::Direct => (self.model.encode_text(to_ids(&sentence.ids), Some(mask)), None),
            TokenLookup::Pruned(bundle) => {
                let mapped = bundle.map_ids(&sentence.ids);
                (self.model.encode_text(to_ids(&mapped.ids), Some(mask)), mapped.note)
            }
            TokenLookup::Host(bundle) => {
                // A shallow copy (parameters are shared handles) whose token table is only the
                // rows of this sentence.
                let mut model = self.model.clone();
                let mapped = bundle.install_token_rows(&mut model, &sentence.ids, &self.device);
                (model.encode_text(to_ids(&mapped.ids), Some(mask)), mapped.note)
            }
        };
        // Unknown words first: they change the answer more than a pruned-table detail.
        let note = match (sentence.note.clone(), lookup_note) {
            (Some(a), Some(b)) => Some(format!("{a} {b}")),
            (a, b) => a.or(b),
        };
        (text, note)
    }

    /// Every query stage of `sentence` on `image`, without reading anything back: the model's
    /// whole output (for `inspect`, which keeps every intermediate) and the note.
    pub fn query(&self, image: &EncodedImage<B>, sentence: &Sentence) -> (RsRefSegOutput<B>, Option<String>) {
        let (text, note) = self.encode_sentence(sentence);
        let prompter = self.model.prompt(&image.encoding, &text);
        (self.model.decode(&image.encoding, text, prompter, false), note)
    }

    /// The first two query stages of `sentence` (text tower, prompter), timed from `t0`
    /// ([`now_ms`], so that tokenising counts as text time).
    pub async fn prompts(&self, image: &EncodedImage<B>, sentence: &Sentence, t0: f64) -> Result<SentencePrompts<B>, String> {
        let (text, note) = self.encode_sentence(sentence);
        fence(&text.t_sent).await?;
        let t1 = now_ms();
        let prompter = self.model.prompt(&image.encoding, &text);
        fence(&prompter.sparse).await?;
        if let Some(d) = &prompter.dense {
            fence(d).await?;
        }
        let t2 = now_ms();
        Ok(SentencePrompts { text, prompter, note, token_ids: sentence.ids.clone(), text_ms: t1 - t0, prompter_ms: t2 - t1 })
    }

    /// Segment the object `text` refers to in an encoded image.
    pub async fn segment(&self, image: &EncodedImage<B>, text: &str) -> Result<Segmentation, String> {
        let t0 = now_ms();
        let sentence = self.sentence(text)?;
        self.segment_sentence(image, &sentence, t0).await
    }

    /// [`Self::segment`] for a sentence already tokenised; `t0` is when the query started
    /// ([`now_ms`], so that tokenising counts as text time).
    pub async fn segment_sentence(&self, image: &EncodedImage<B>, sentence: &Sentence, t0: f64) -> Result<Segmentation, String> {
        let prompts = self.prompts(image, sentence, t0).await?;
        self.answer(image, &prompts, &Corrections::default(), None).await
    }

    /// The last query stage (SAM's decoder) and post-processing on cached sentence prompts, with
    /// the user's corrections and, for an iterative refinement, the previous answer (its
    /// low-resolution logits become the mask prompt, as in SAM). The text and prompter times of
    /// the result are the cached prompts' when there is no correction, and 0 otherwise (they did
    /// not run).
    pub async fn answer(
        &self,
        image: &EncodedImage<B>,
        prompts: &SentencePrompts<B>,
        corrections: &Corrections,
        previous: Option<&Segmentation>,
    ) -> Result<Segmentation, String> {
        let g = image.geometry;
        corrections.check(g.original)?;
        let t2 = now_ms();
        let refinement = self.refinement(g, corrections, previous)?;
        let out = self.model.decode_refined(&image.encoding, prompts.text.clone(), prompts.prompter.clone(), refinement, false);
        fence(&out.mask_logits).await?;
        let t3 = now_ms();

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
        let object_score_logit = read(out.decoder.object_score_logits.clone()).await?[0];
        let low_res_size = out.mask_logits.dims()[3];
        let low_res_logits = read(out.mask_logits).await?;
        let t4 = now_ms();
        let area = mask.iter().filter(|&&m| m != 0).count();
        let (text_ms, prompter_ms) = if corrections.is_empty() && previous.is_none() { (prompts.text_ms, prompts.prompter_ms) } else { (0.0, 0.0) };
        Ok(Segmentation {
            height,
            width,
            mask,
            heat_height,
            heat_width,
            heat,
            heat_range,
            note: prompts.note.clone(),
            iou,
            object_score_logit,
            low_res_logits,
            low_res_size,
            token_ids: prompts.token_ids.clone(),
            area,
            timings: QueryTimings { text: text_ms, prompter: prompter_ms, decoder: t3 - t2, post: t4 - t3 },
        })
    }

    /// Corrections (original pixels) in the model's input frame, as SAM's prompts.
    fn refinement(&self, g: Geometry, c: &Corrections, previous: Option<&Segmentation>) -> Result<Refinement<B>, String> {
        let (h0, w0) = g.original;
        let (h1, w1) = g.resized;
        let (sx, sy) = (w1 as f32 / w0 as f32, h1 as f32 / h0 as f32);
        let points = (!c.clicks.is_empty()).then(|| {
            let n = c.clicks.len();
            // Continuous positions to SAM's pixel indices (its encoder adds the half pixel back).
            let coords: Vec<f32> = c.clicks.iter().flat_map(|k| [k.x * sx - 0.5, k.y * sy - 0.5]).collect();
            let labels: Vec<i64> = c.clicks.iter().map(|k| i64::from(k.positive)).collect();
            PointPrompts {
                coords: Tensor::from_data(TensorData::new(coords, [1, n, 2]), &self.device),
                labels: Tensor::from_data(TensorData::new(labels, [1, n]), &self.device),
            }
        });
        let boxes = c.bbox.map(|b| Tensor::from_data(TensorData::new(box_in_model_frame(b, g).to_vec(), [1, 4]), &self.device));
        let previous_mask = match previous {
            None => None,
            Some(p) => {
                let m = p.low_res_size;
                if p.low_res_logits.len() != m * m || (p.height, p.width) != g.original {
                    return Err("the previous answer belongs to another image: segment the sentence again".into());
                }
                Some(Tensor::from_data(TensorData::new(p.low_res_logits.clone(), [1, 1, m, m]), &self.device))
            }
        };
        Ok(Refinement { points, boxes, previous_mask })
    }
}

/// A box `(x0, y0, x1, y1)` in the original image's continuous coordinates as SAM's prompt
/// encoder takes it: scaled to the resized image, as pixel indices (the encoder adds the half
/// pixel back).
pub fn box_in_model_frame([x0, y0, x1, y1]: [f32; 4], g: Geometry) -> [f32; 4] {
    let ((h0, w0), (h1, w1)) = (g.original, g.resized);
    let (sx, sy) = (w1 as f32 / w0 as f32, h1 as f32 / h0 as f32);
    [x0 * sx - 0.5, y0 * sy - 0.5, x1 * sx - 0.5, y1 * sy - 0.5]
}

/// Drive a future to completion natively (the CPU backends never make it wait).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stretch_spans_the_range_and_keeps_a_flat_map_dark() {
        let (v, range) = stretch(&[0.25, 0.75, 0.5]);
        assert_eq!(v, vec![0, 255, 128]);
        assert_eq!(range, (0.25, 0.75));
        let (v, _) = stretch(&[0.5, 0.5]);
        assert_eq!(v, vec![0, 0]);
    }

    #[test]
    fn bad_files_are_refused_by_name() {
        assert_eq!(decode_image(&[]).unwrap_err(), "the file is empty");
        let big = vec![0u8; MAX_FILE_BYTES + 1];
        assert!(decode_image(&big).unwrap_err().contains("largest accepted image file is 40 MB"));
        assert!(decode_image(b"not an image").is_err());
    }
}
