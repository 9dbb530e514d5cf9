//! `rsrefseg eval`: run a model on every sample of a split (evaluation mode: ground truth and
//! predictions at the original image size) and report gIoU, cIoU, Pr@X, per-category and
//! per-tag results. [`evaluate`] is shared with the validation passes of `rsrefseg train`.

use crate::backend::{dispatch, BackendArgs, BackendJob};
use anyhow::{anyhow, bail, Context, Result};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use clap::Args;
use rsrefseg::checkpoint::{read_tensors, LoadOptions};
use rsrefseg::config::RsRefSegConfig;
use rsrefseg::data::dataset::{Mode, RefDataset};
use rsrefseg::data::metrics::{Metrics, MetricsAccumulator, THRESHOLDS};
use rsrefseg::encoders::tokenizer::Padding;
use rsrefseg::encoders::TextTokenizer;
use rsrefseg::model::{load_rsrefseg_tensors, RsRefSeg};
use rsrefseg::data::clicks::corrective_click;
use rsrefseg::post::{binary_mask, logits_at_original_size};
use rsrefseg::segmenter::{block_on, box_in_model_frame, now_ms, Corrections, EncodedImage, Segmenter, Sentence, SentencePrompts};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Model configuration: a preset name (paper, browser, reference-dev, nano) or a model.json
    /// (e.g. RUN_DIR/config.json written by `rsrefseg train`).
    #[arg(long)]
    pub config: String,
    /// Full-model weights (e.g. RUN_DIR/best.safetensors, or a released state dict).
    #[arg(long)]
    pub weights: PathBuf,
    /// Dataset directory holding `<split>.jsonl` and the images it names.
    #[arg(long)]
    pub data: PathBuf,
    /// Which split to evaluate.
    #[arg(long, value_enum, default_value = "test")]
    pub split: Split,
    /// `tokenizer.json` (default: `tokenizer.json` next to the --config file).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// SAM's stability fallback for the selected mask (default: as the configuration says).
    #[arg(long, value_enum)]
    pub stability_fallback: Option<OnOff>,
    /// Write the metrics as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Evaluate only the first N samples (quick checks).
    #[arg(long)]
    pub limit: Option<usize>,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Also answer each sample after 1..=N simulated corrective clicks (each at the interior of
    /// the largest error, positive on a miss, negative on a false alarm; the previous answer is
    /// the mask prompt) and report gIoU after each number of clicks.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=20))]
    pub clicks: u32,
    /// The mask prompt of the corrected answers: the sentence's dense prompt (what the shipped
    /// nano answers best with) or the previous answer's logits (SAM's iterative recipe).
    #[arg(long, value_enum, default_value = "dense")]
    pub click_mask_prompt: ClickMaskPrompt,
    /// Also answer each sample from its referent's ground-truth box and report those metrics
    /// (a diagnosis, not a result): `with-sentence` adds the box to the sentence's prompts (what
    /// a user drawing a perfect box gets); `alone` gives SAM the box and nothing else, i.e. the
    /// model's segmenter under a perfect identification of the referent.
    #[arg(long, value_enum)]
    pub oracle_box: Option<OracleBox>,
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// Answers beyond the sentence's own: simulated corrective clicks, the ground-truth box.
#[derive(Clone, Copy, Debug)]
pub struct ExtraAnswers {
    pub clicks: usize,
    pub click_mask_prompt: ClickMaskPrompt,
    pub oracle_box: Option<OracleBox>,
}

impl ExtraAnswers {
    pub const NONE: Self = Self { clicks: 0, click_mask_prompt: ClickMaskPrompt::Dense, oracle_box: None };
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OracleBox {
    WithSentence,
    Alone,
}

impl OracleBox {
    pub fn name(self) -> &'static str {
        match self {
            OracleBox::WithSentence => "with-sentence",
            OracleBox::Alone => "alone",
        }
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClickMaskPrompt {
    Dense,
    Previous,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Test,
    Val,
    Train,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Test => "test",
            Split::Val => "val",
            Split::Train => "train",
        }
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnOff {
    On,
    Off,
}

/// A preset by name, or a model.json file.
pub fn resolve_config(spec: &str) -> Result<RsRefSegConfig> {
    let preset = match spec.to_ascii_lowercase().replace('_', "-").as_str() {
        "paper" => Some(RsRefSegConfig::paper()),
        "browser" => Some(RsRefSegConfig::browser()),
        "reference-dev" => Some(RsRefSegConfig::reference_dev()),
        "nano" => Some(RsRefSegConfig::nano()),
        _ => None,
    };
    if let Some(c) = preset {
        return Ok(c);
    }
    let path = Path::new(spec);
    if !path.exists() {
        bail!("--config {spec}: neither a preset (paper, browser, reference-dev, nano) nor an existing model.json");
    }
    let json = std::fs::read_to_string(path).with_context(|| format!("cannot read the model configuration {spec}"))?;
    RsRefSegConfig::from_json(&json).map_err(|e| anyhow!("{spec}: {e}"))
}

/// The tokenizer with the configuration's policy; batches always need padding, so a policy
/// without it pads to the batch's longest sentence.
pub fn load_tokenizer(path: &Path, config: &RsRefSegConfig) -> Result<TextTokenizer> {
    let json = std::fs::read(path).with_context(|| format!("cannot read the tokenizer {}", path.display()))?;
    let mut tc = config.tokenizer.clone();
    if tc.padding == Padding::None {
        tc.padding = Padding::Longest;
    }
    TextTokenizer::from_bytes(&json, tc).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// Token ids and mask of a batch of sentences as `[b, l]` tensors, checked against the
/// vocabulary and position table of the text tower.
pub fn token_tensors<B: Backend>(
    tokenizer: &TextTokenizer,
    config: &RsRefSegConfig,
    sentences: &[&str],
    device: &B::Device,
) -> Result<(Tensor<B, 2, Int>, Tensor<B, 2, Int>)> {
    rsrefseg::train::stages::tokens(tokenizer, config, sentences, device).map_err(|e| anyhow!("{sentences:?}: {e}"))
}

/// Metrics over a split: overall and per `tag`.
pub struct EvalResult {
    pub overall: Metrics,
    pub per_tag: BTreeMap<String, Metrics>,
    /// Per expression form (`kind`, where the data names it: the synthetic benchmark does).
    pub per_kind: BTreeMap<String, Metrics>,
    /// Different-object pairs of one image answered with different masks.
    pub sensitivity: Sensitivity,
    /// Pearson r between the predicted IoU (SAM's IoU head) and the true IoU of each sample.
    pub iou_pearson: Option<f64>,
    /// Metrics after 0, 1, … simulated corrective clicks (empty unless asked for).
    pub click_curve: Vec<Metrics>,
    /// Metrics of the answers from the referent's ground-truth box (`--oracle-box`: alone, or
    /// added to the sentence's prompts).
    pub oracle_box: Option<(OracleBox, Metrics)>,
    /// Masks compared with those of a reference model (the f32 one, under `--precision int8`).
    pub agreement: Option<Agreement>,
}

/// How closely one model's masks follow another's on the same samples.
#[derive(Debug, Clone, Copy)]
pub struct Agreement {
    pub samples: usize,
    /// Σ and minimum of the per-sample mask IoU (two empty masks agree fully).
    pub iou_sum: f64,
    pub iou_min: f64,
}

impl Agreement {
    fn add(&mut self, a: &[u8], b: &[u8]) {
        let iou = mask_iou(a, b);
        self.samples += 1;
        self.iou_sum += iou;
        self.iou_min = self.iou_min.min(iou);
    }

    pub fn mean(&self) -> f64 {
        self.iou_sum / self.samples.max(1) as f64
    }
}

/// Run `model` on every sample of `dataset` (which must be in [`Mode::Eval`]), post-process to
/// the original size and score. Consecutive samples of one image share one image encoding.
/// `progress` is called after each sample with (done, total). With a `reference` model, each
/// sample is also answered by it and the two masks compared ([`EvalResult::agreement`]).
#[allow(clippy::too_many_arguments)]
pub fn evaluate<B: Backend>(
    model: &RsRefSeg<B>,
    reference: Option<&RsRefSeg<B>>,
    config: &RsRefSegConfig,
    dataset: &RefDataset,
    tokenizer: &TextTokenizer,
    device: &B::Device,
    limit: Option<usize>,
    extra: ExtraAnswers,
    mut progress: impl FnMut(usize, usize),
) -> Result<EvalResult> {
    assert_eq!(dataset.mode, Mode::Eval, "evaluation scores at the original size");
    let n = limit.map_or(dataset.len(), |l| l.min(dataset.len()));
    if n == 0 {
        bail!("no samples to evaluate");
    }
    let s = dataset.size;
    let mut overall = MetricsAccumulator::new();
    let mut per_tag: BTreeMap<String, MetricsAccumulator> = BTreeMap::new();
    let mut per_kind: BTreeMap<String, MetricsAccumulator> = BTreeMap::new();
    let mut sensitivity = Sensitivity::default();
    let mut iou_pairs: Vec<(f64, f64)> = Vec::new();
    let clicks = extra.clicks;
    let mut curve: Vec<MetricsAccumulator> = (0..=clicks).map(|_| MetricsAccumulator::new()).collect();
    let mut boxed = MetricsAccumulator::new();
    // Corrections go through the segmentation pipeline (decoder only, on cached prompts).
    let segmenter = (clicks > 0 || extra.oracle_box.is_some()).then(|| Segmenter::new(model.clone(), None, s, device.clone()));
    // The current image: its path, encoding and the (prediction, ground truth) of its samples.
    let mut current: Option<(std::path::PathBuf, rsrefseg::model::ImageEncoding<B>)> = None;
    let mut reference_image: Option<rsrefseg::model::ImageEncoding<B>> = None;
    let mut agreement = reference.map(|_| Agreement { samples: 0, iou_sum: 0.0, iou_min: 1.0 });
    let mut answers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for i in 0..n {
        let item = dataset.get(i)?;
        let path = &dataset.samples[i].image_path;
        if current.as_ref().map(|(p, _)| p) != Some(path) {
            sensitivity.add_image(&answers);
            answers.clear();
            let x = Tensor::<B, 4>::from_data(TensorData::new(item.x01(), [1, 3, s, s]), device);
            reference_image = reference.map(|r| r.encode_image(x.clone()));
            current = Some((path.clone(), model.encode_image(x)));
        }
        let image = &current.as_ref().expect("encoded above").1;
        // One sentence at a time: the result does not depend on what it is batched with.
        let (ids, mask) = token_tensors::<B>(tokenizer, config, &[item.sentence.as_str()], device)?;
        let out = model.query(image, ids.clone(), Some(mask.clone()), false);
        let predicted_iou = out.iou.clone().into_data().convert::<f32>().to_vec::<f32>().map_err(|e| anyhow!("{e:?}"))?[0];
        let logits = logits_at_original_size(out.mask_logits, item.geometry);
        let pred = mask_bytes(logits)?;
        if let (Some(r), Some(image), Some(agreement)) = (reference, &reference_image, &mut agreement) {
            let out = r.query(image, ids, Some(mask), false);
            agreement.add(&pred, &mask_bytes(logits_at_original_size(out.mask_logits, item.geometry))?);
        }
        let category = item.category.as_deref();
        let counts = overall.add(&pred, &item.gt, category).map_err(|e| anyhow!("sample {i}: {e}"))?;
        iou_pairs.push((predicted_iou as f64, counts.iou_f32(1) as f64));
        if let Some(tag) = &item.tag {
            per_tag.entry(tag.clone()).or_default().add(&pred, &item.gt, category).map_err(|e| anyhow!("sample {i}: {e}"))?;
        }
        if let Some(kind) = &item.kind {
            per_kind.entry(kind.clone()).or_default().add(&pred, &item.gt, category).map_err(|e| anyhow!("sample {i}: {e}"))?;
        }
        if let Some(segmenter) = &segmenter {
            let encoded = EncodedImage { encoding: image.clone(), geometry: item.geometry, timings: Default::default() };
            let tokens = tokenizer.encode_batch(&[item.sentence.as_str()]).map_err(|e| anyhow!("sample {i}: {e}"))?;
            let sentence = Sentence { ids: tokens.input_ids[0].clone(), attention_mask: tokens.attention_mask[0].clone(), note: None };
            let prompts = block_on(segmenter.prompts(&encoded, &sentence, now_ms())).map_err(|e| anyhow!("sample {i}: {e}"))?;
            if clicks > 0 {
                click_rounds(segmenter, &encoded, &prompts, &item.gt, category, extra.click_mask_prompt, &mut curve)
                    .map_err(|e| anyhow!("sample {i}: {e}"))?;
            }
            if let Some(oracle) = extra.oracle_box {
                let pred = match oracle {
                    OracleBox::WithSentence => boxed_answer(segmenter, &encoded, &prompts, &item.gt).map_err(|e| anyhow!("sample {i}: {e}"))?,
                    OracleBox::Alone => box_alone_answer(model, image, item.geometry, &item.gt, device)?,
                };
                boxed.add(&pred, &item.gt, category).map_err(|e| anyhow!("sample {i}: {e}"))?;
            }
        }
        answers.push((pred, item.gt));
        progress(i + 1, n);
    }
    sensitivity.add_image(&answers);
    Ok(EvalResult {
        overall: overall.compute().expect("non-empty"),
        per_tag: per_tag.into_iter().filter_map(|(t, a)| a.compute().map(|m| (t, m))).collect(),
        per_kind: per_kind.into_iter().filter_map(|(t, a)| a.compute().map(|m| (t, m))).collect(),
        sensitivity,
        iou_pearson: pearson(&iou_pairs),
        click_curve: if clicks > 0 { curve.into_iter().filter_map(|a| a.compute()).collect() } else { Vec::new() },
        oracle_box: extra.oracle_box.zip(boxed.compute()),
        agreement,
    })
}

/// One sample answered, then corrected click by click (`curve[k]`: after k clicks).
fn click_rounds<B: Backend>(
    segmenter: &Segmenter<B>,
    image: &EncodedImage<B>,
    prompts: &SentencePrompts<B>,
    gt: &[u8],
    category: Option<&str>,
    mask_prompt: ClickMaskPrompt,
    curve: &mut [MetricsAccumulator],
) -> std::result::Result<(), String> {
    let (h, w) = image.geometry.original;
    let mut corrections = Corrections::default();
    let mut answer = block_on(segmenter.answer(image, prompts, &corrections, None))?;
    let rounds = curve.len();
    for (k, acc) in curve.iter_mut().enumerate() {
        let pred: Vec<u8> = answer.mask.iter().map(|&m| u8::from(m != 0)).collect();
        acc.add(&pred, gt, category).map_err(|e| e.to_string())?;
        if k + 1 == rounds {
            break;
        }
        // An exact answer keeps its clicks (none is needed).
        if let Some(click) = corrective_click(&pred, gt, h, w) {
            corrections.clicks.push(click);
        }
        let previous = (mask_prompt == ClickMaskPrompt::Previous).then_some(&answer);
        answer = block_on(segmenter.answer(image, prompts, &corrections, previous))?;
    }
    Ok(())
}

/// The sentence's answer with the ground truth's bounding box added to its prompts (an empty
/// ground truth gets the sentence's own answer).
fn boxed_answer<B: Backend>(
    segmenter: &Segmenter<B>,
    image: &EncodedImage<B>,
    prompts: &SentencePrompts<B>,
    gt: &[u8],
) -> std::result::Result<Vec<u8>, String> {
    let (h, w) = image.geometry.original;
    let corrections = Corrections { clicks: Vec::new(), bbox: pixel_box(gt, h, w) };
    let answer = block_on(segmenter.answer(image, prompts, &corrections, None))?;
    Ok(answer.mask.iter().map(|&m| u8::from(m != 0)).collect())
}

/// SAM's answer from the ground truth's bounding box alone (no sentence, no dense prompt: SAM's
/// "no mask" embedding), mapped to the model's input frame as the segmenter maps a user's box.
/// An empty ground truth gets an empty answer.
fn box_alone_answer<B: Backend>(
    model: &RsRefSeg<B>,
    image: &rsrefseg::model::ImageEncoding<B>,
    geometry: rsrefseg::pre::Geometry,
    gt: &[u8],
    device: &B::Device,
) -> Result<Vec<u8>> {
    let (h0, w0) = geometry.original;
    let Some(bbox) = pixel_box(gt, h0, w0) else {
        return Ok(vec![0; gt.len()]);
    };
    let boxes = Tensor::<B, 2>::from_data(TensorData::new(box_in_model_frame(bbox, geometry).to_vec(), [1, 4]), device);
    let prompts = model.sam.sam_prompt_encoder.forward(None, Some(boxes), None, 1);
    let out = model.sam.decode(&image.sam, prompts.sparse, prompts.dense, false, false);
    mask_bytes(logits_at_original_size(out.masks, geometry))
}

/// The box through the centres of a mask's outermost pixels, as the promptable stage draws
/// boxes (`x0, y0, x1, y1` in continuous image coordinates; a one-pixel-wide side is widened
/// to one pixel so that the box has an area). `None` for an empty mask.
pub fn pixel_box(mask: &[u8], h: usize, w: usize) -> Option<[f32; 4]> {
    let mask = rsrefseg::data::rle::Mask::from_nonzero(h, w, mask).ok()?;
    let [x0, y0, x1, y1] = rsrefseg::data::rle::Rle::encode(&mask).ok()?.bbox_xyxy_inclusive()?;
    let side = |a: usize, b: usize| (a as f32 + 0.5, if b > a { b as f32 + 0.5 } else { a as f32 + 1.0 });
    let ((x0, x1), (y0, y1)) = (side(x0, x1), side(y0, y1));
    Some([x0, y0, x1, y1])
}

/// A binary mask (logits > 0) as 0/1 bytes.
fn mask_bytes<B: Backend>(logits: Tensor<B, 4>) -> Result<Vec<u8>> {
    // Through an integer tensor: the bool storage differs between backends.
    Ok(binary_mask(logits)
        .int()
        .into_data()
        .convert::<i32>()
        .into_vec::<i32>()
        .map_err(|e| anyhow!("{e:?}"))?
        .into_iter()
        .map(|v| u8::from(v != 0))
        .collect())
}

/// IoU of two 0/1 masks (two empty masks: 1, they are the same answer).
pub fn mask_iou(a: &[u8], b: &[u8]) -> f64 {
    let (mut inter, mut union) = (0usize, 0usize);
    for (&x, &y) in a.iter().zip(b) {
        inter += usize::from(x != 0 && y != 0);
        union += usize::from(x != 0 || y != 0);
    }
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

/// IoU below which two predictions count as different answers.
pub const SENSITIVITY_IOU: f64 = 0.3;

/// Sentence sensitivity: over pairs of expressions of one image that refer to different objects
/// (ground truths overlapping with IoU < 0.5), how often the two predicted masks are different
/// answers (IoU < [`SENSITIVITY_IOU`]).
#[derive(Clone, Debug, Default)]
pub struct Sensitivity {
    pub pairs: usize,
    pub distinct: usize,
    pub iou_sum: f64,
}

impl Sensitivity {
    /// Add every pair of one image's (prediction, ground truth).
    pub fn add_image(&mut self, answers: &[(Vec<u8>, Vec<u8>)]) {
        for i in 0..answers.len() {
            for j in i + 1..answers.len() {
                if mask_iou(&answers[i].1, &answers[j].1) >= 0.5 {
                    continue;
                }
                let iou = mask_iou(&answers[i].0, &answers[j].0);
                self.pairs += 1;
                self.distinct += usize::from(iou < SENSITIVITY_IOU);
                self.iou_sum += iou;
            }
        }
    }

    /// Fraction of pairs answered with different masks (`None` without pairs).
    pub fn fraction(&self) -> Option<f64> {
        (self.pairs > 0).then(|| self.distinct as f64 / self.pairs as f64)
    }
}

/// Pearson correlation of `(x, y)` pairs (`None` with fewer than 2 or a constant side).
pub fn pearson(pairs: &[(f64, f64)]) -> Option<f64> {
    let pairs: Vec<(f64, f64)> = pairs.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
    let n = pairs.len() as f64;
    if pairs.len() < 2 {
        return None;
    }
    let (mx, my) = (pairs.iter().map(|p| p.0).sum::<f64>() / n, pairs.iter().map(|p| p.1).sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for &(x, y) in &pairs {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx) * (x - mx);
        syy += (y - my) * (y - my);
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

/// Scores of [`evaluate_scenes`].
pub struct SceneScores {
    /// Mean IoU over expressions (gIoU) at the scenes' size.
    pub giou: f64,
    pub relational_giou: f64,
    /// Fraction of different-object pairs answered with different masks.
    pub sensitivity: f64,
}

/// gIoU and sentence sensitivity on generated scenes (already at the model's input side; the
/// validation of the referring stage). One encoding per scene, all its expressions at once.
pub fn evaluate_scenes<B: Backend>(
    model: &RsRefSeg<B>,
    config: &RsRefSegConfig,
    tokenizer: &TextTokenizer,
    scenes: &[rsrefseg::synth::StreamSample],
    device: &B::Device,
) -> Result<SceneScores> {
    let (mut sum, mut count, mut rel_sum, mut rel_count) = (0.0, 0usize, 0.0, 0usize);
    let mut sensitivity = Sensitivity::default();
    for sample in scenes {
        let scene = &sample.scene;
        if sample.expressions.is_empty() {
            continue;
        }
        let size = scene.width;
        let x = rsrefseg::train::stages::scenes_x01::<B>(std::slice::from_ref(sample), device);
        let image = model.encode_image(x);
        let sentences: Vec<&str> = sample.expressions.iter().map(|e| e.sent.as_str()).collect();
        let (ids, mask) = token_tensors::<B>(tokenizer, config, &sentences, device)?;
        let out = model.query(&image, ids, Some(mask), false);
        let geometry = rsrefseg::pre::Geometry { original: (size, size), resized: (size, size), padded: size };
        let all = mask_bytes(logits_at_original_size(out.mask_logits, geometry))?;
        let mut answers = Vec::new();
        for (k, e) in sample.expressions.iter().enumerate() {
            let pred = all[k * size * size..(k + 1) * size * size].to_vec();
            let gt = scene.objects[e.target].mask.clone();
            let iou = mask_iou(&pred, &gt);
            // An empty prediction of a non-empty target is 0 (mask_iou gives 1 only for two empties).
            sum += iou;
            count += 1;
            if e.tag == rsrefseg::synth::Tag::Relational {
                rel_sum += iou;
                rel_count += 1;
            }
            answers.push((pred, gt));
        }
        sensitivity.add_image(&answers);
    }
    Ok(SceneScores {
        giou: sum / count.max(1) as f64,
        relational_giou: rel_sum / rel_count.max(1) as f64,
        sensitivity: sensitivity.fraction().unwrap_or(0.0),
    })
}

fn num(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// The target-class summary of one group of samples; fractions in [0, 1].
fn summary(m: &Metrics) -> Value {
    let mut precision = serde_json::Map::new();
    for (t, p) in THRESHOLDS.iter().zip(m.target.precision) {
        precision.insert(format!("{t}"), num(p / 100.0));
    }
    json!({
        "num_samples": m.num_samples,
        "giou": num(m.target.giou / 100.0),
        "ciou": num(m.target.ciou / 100.0),
        "precision": precision,
    })
}

impl EvalResult {
    /// Fractions in [0, 1] at the top level, the reference's flat ×100 dictionary under
    /// `reference`, per category and per tag.
    pub fn to_json(&self) -> Value {
        let mut v = summary(&self.overall);
        let per_category: serde_json::Map<String, Value> =
            self.overall.per_category.iter().map(|(c, x)| (c.clone(), num(x / 100.0))).collect();
        v["per_category"] = Value::Object(per_category);
        v["mean_iou"] = num(self.overall.mean_iou / 100.0);
        v["per_tag"] = Value::Object(self.per_tag.iter().map(|(t, m)| (t.clone(), summary(m))).collect());
        if !self.per_kind.is_empty() {
            v["per_kind"] = Value::Object(self.per_kind.iter().map(|(t, m)| (t.clone(), summary(m))).collect());
        }
        v["reference"] = self.overall.to_reference_json();
        v["sentence_sensitivity"] = json!({
            "pairs": self.sensitivity.pairs,
            "fraction_distinct": self.sensitivity.fraction().map_or(Value::Null, num),
            "mean_pair_iou": if self.sensitivity.pairs > 0 { num(self.sensitivity.iou_sum / self.sensitivity.pairs as f64) } else { Value::Null },
            "threshold_iou": SENSITIVITY_IOU,
        });
        v["predicted_iou_pearson_r"] = self.iou_pearson.map_or(Value::Null, num);
        if let Some(a) = &self.agreement {
            v["agreement_with_f32"] = json!({ "samples": a.samples, "mean_mask_iou": num(a.mean()), "min_mask_iou": num(a.iou_min) });
        }
        if !self.click_curve.is_empty() {
            v["click_curve"] = Value::Array(
                self.click_curve.iter().enumerate().map(|(k, m)| {
                    let mut x = summary(m);
                    x["clicks"] = json!(k);
                    x
                }).collect(),
            );
        }
        if let Some((oracle, m)) = &self.oracle_box {
            let mut x = summary(m);
            x["prompts"] = json!(oracle.name());
            x["per_category"] = Value::Object(m.per_category.iter().map(|(c, x)| (c.clone(), num(x / 100.0))).collect());
            v["oracle_box"] = x;
        }
        v
    }

    /// The metrics table plus one line per tag and per kind.
    pub fn table(&self) -> String {
        let mut s = self.overall.to_string();
        for (label, groups) in [("tag", &self.per_tag), ("kind", &self.per_kind)] {
            if groups.is_empty() {
                continue;
            }
            s.push_str(&format!("\n{label:<14}{:>8}{:>8}{:>8}{:>8}", "samples", "gIoU", "cIoU", "Pr@0.5"));
            for (t, m) in groups {
                s.push_str(&format!(
                    "\n{t:<14}{:>8}{:>8.2}{:>8.2}{:>8.2}",
                    m.num_samples, m.target.giou, m.target.ciou, m.target.precision[0]
                ));
            }
        }
        match self.sensitivity.fraction() {
            Some(f) => s.push_str(&format!(
                "\nsentence sensitivity: {:.1} % of {} pairs of expressions naming different objects of one image get \
                 different masks (IoU < {SENSITIVITY_IOU})",
                100.0 * f,
                self.sensitivity.pairs
            )),
            None => s.push_str("\nsentence sensitivity: no image with two expressions naming different objects"),
        }
        if let Some(r) = self.iou_pearson {
            s.push_str(&format!("\npredicted IoU vs true IoU: Pearson r = {r:.3}"));
        }
        if let Some(a) = &self.agreement {
            s.push_str(&format!(
                "\nmasks vs the f32 model's: mean IoU {:.4} over {} samples (lowest {:.4})",
                a.mean(),
                a.samples,
                a.iou_min
            ));
        }
        if !self.click_curve.is_empty() {
            s.push_str(&format!("\n{:<14}{:>8}{:>8}{:>8}", "clicks", "gIoU", "cIoU", "Pr@0.5"));
            for (k, m) in self.click_curve.iter().enumerate() {
                s.push_str(&format!("\n{k:<14}{:>8.2}{:>8.2}{:>8.2}", m.target.giou, m.target.ciou, m.target.precision[0]));
            }
        }
        if let Some((oracle, m)) = &self.oracle_box {
            s.push_str(&format!(
                "\nfrom the ground-truth box (--oracle-box {}): gIoU {:.2}, cIoU {:.2}, Pr@0.5 {:.2}, Pr@0.9 {:.2}",
                oracle.name(),
                m.target.giou, m.target.ciou, m.target.precision[0], m.target.precision[THRESHOLDS.len() - 1]
            ));
            let cats: Vec<String> = m.per_category.iter().map(|(c, x)| format!("{c} {x:.1}")).collect();
            s.push_str(&format!("\n  per category: {}", cats.join(", ")));
        }
        s
    }
}

pub fn run(args: EvalArgs) -> Result<()> {
    crate::configure_threads(args.threads)?;
    let BackendArgs { backend, precision } = args.backend.clone();
    dispatch(backend, precision, None, Eval(args))
}

struct Eval(EvalArgs);

impl BackendJob for Eval {
    type Output = ();
    fn run<AB: AutodiffBackend>(self, devices: Vec<AB::Device>) -> Result<()> {
        eval::<AB::InnerBackend>(self.0, &devices[0])
    }
}

fn eval<B: Backend>(args: EvalArgs, device: &B::Device) -> Result<()> {
    let device = device.clone();
    let mut config = resolve_config(&args.config)?;
    if let Some(f) = args.stability_fallback {
        config.sam.dynamic_multimask_via_stability = f == OnOff::On;
    }
    let tok_path = match &args.tokenizer {
        Some(p) => p.clone(),
        None if Path::new(&args.config).is_file() => Path::new(&args.config).with_file_name("tokenizer.json"),
        None => bail!("--config {} is a preset: pass --tokenizer tokenizer.json", args.config),
    };
    let tokenizer = load_tokenizer(&tok_path, &config)?;
    let split = args.split.name();
    let jsonl = args.data.join(format!("{split}.jsonl"));
    let dataset = RefDataset::from_jsonl(&jsonl, &args.data, None, config.image_size(), Mode::Eval)
        .map_err(|e| anyhow!("{e}"))?;
    let tensors = read_tensors(&args.weights).map_err(|e| anyhow!("{e}"))?;
    let (model, _) = load_rsrefseg_tensors::<B>(tensors, &config, &device, LoadOptions::default())
        .map_err(|e| anyhow!("{}: {e}", args.weights.display()))?;
    // Under int8 the f32 model answers every sample too, and the masks are compared.
    let reference = (args.backend.precision == crate::backend::Precision::Int8).then(|| model.clone());
    let model = args.backend.precision.prepare(model);

    let start = std::time::Instant::now();
    let result = evaluate(&model, reference.as_ref(), &config, &dataset, &tokenizer, &device, args.limit, ExtraAnswers { clicks: args.clicks as usize, click_mask_prompt: args.click_mask_prompt, oracle_box: args.oracle_box }, |done, total| {
        if done % 50 == 0 || done == total {
            eprintln!("{done}/{total} samples");
        }
    })?;
    println!("{split} split ({}):\n{}", jsonl.display(), result.table());
    eprintln!("{:.1} s", start.elapsed().as_secs_f64());
    if let Some(path) = &args.json {
        let mut v = result.to_json();
        v["split"] = json!(split);
        v["weights"] = json!(args.weights.display().to_string());
        std::fs::write(path, serde_json::to_string_pretty(&v)?).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixel_box_runs_through_the_outermost_pixel_centres() {
        // 5 × 4 image, object on columns 1..=3 of rows 1..=2.
        let mut m = vec![0u8; 20];
        for y in 1..=2 {
            for x in 1..=3 {
                m[y * 5 + x] = 1;
            }
        }
        assert_eq!(pixel_box(&m, 4, 5), Some([1.5, 1.5, 3.5, 2.5]));
        // One pixel: widened to one pixel on each side, so the box has an area.
        let mut one = vec![0u8; 20];
        one[2 * 5 + 4] = 1;
        assert_eq!(pixel_box(&one, 4, 5), Some([4.5, 2.5, 5.0, 3.0]));
        assert_eq!(pixel_box(&[0u8; 20], 4, 5), None);
        // A mask of the wrong size gives no box rather than one outside the image.
        assert_eq!(pixel_box(&m, 5, 5), None);
    }

    #[test]
    fn pearson_of_known_pairs() {
        let r = pearson(&[(1.0, 2.0), (2.0, 4.0), (3.0, 6.5)]).unwrap();
        assert!(r > 0.99 && r <= 1.0, "{r}");
        let r = pearson(&[(1.0, 3.0), (2.0, 2.0), (3.0, 1.0)]).unwrap();
        assert!((r + 1.0).abs() < 1e-12, "{r}");
        assert_eq!(pearson(&[(1.0, 1.0), (1.0, 2.0)]), None, "constant side");
        assert_eq!(pearson(&[(1.0, f64::NAN)]), None);
    }

    #[test]
    fn sensitivity_counts_pairs_of_different_objects_only() {
        let a = vec![1u8, 1, 0, 0];
        let b = vec![0u8, 0, 1, 1];
        let mut s = Sensitivity::default();
        // Two sentences naming different objects (a, b): answered a and b (distinct), and a
        // third naming `a` again, answered like the first (same object: not a pair).
        s.add_image(&[(a.clone(), a.clone()), (b.clone(), b.clone()), (a.clone(), a.clone())]);
        assert_eq!((s.pairs, s.distinct), (2, 2));
        // The same mask for two different objects: not distinct.
        s.add_image(&[(a.clone(), a.clone()), (a.clone(), b.clone())]);
        assert_eq!((s.pairs, s.distinct), (3, 2));
        assert!((s.fraction().unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(mask_iou(&[0, 0], &[0, 0]), 1.0);
        assert_eq!(mask_iou(&a, &b), 0.0);
    }
}
