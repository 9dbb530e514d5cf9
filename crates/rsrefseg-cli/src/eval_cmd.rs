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
use rsrefseg::post::{binary_mask, logits_at_original_size};
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
    #[command(flatten)]
    pub backend: BackendArgs,
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
    let t = tokenizer.encode_batch(sentences).map_err(|e| anyhow!("{e}: {:?}", sentences))?;
    let tc = &config.siglip.text_config;
    let (b, l) = (t.input_ids.len(), t.len());
    if l > tc.max_position_embeddings {
        bail!("{:?} has {l} tokens but the text tower has {} positions", sentences, tc.max_position_embeddings);
    }
    let ids: Vec<i64> = t.input_ids.iter().flatten().map(|&x| x as i64).collect();
    if let Some(bad) = ids.iter().find(|&&id| id as usize >= tc.vocab_size) {
        bail!("token id {bad} of {sentences:?} is outside the model's vocabulary (0..{})", tc.vocab_size);
    }
    let mask: Vec<i64> = t.attention_mask.iter().flatten().map(|&x| x as i64).collect();
    Ok((
        Tensor::from_data(TensorData::new(ids, [b, l]), device),
        Tensor::from_data(TensorData::new(mask, [b, l]), device),
    ))
}

/// Metrics over a split: overall and per `tag`.
pub struct EvalResult {
    pub overall: Metrics,
    pub per_tag: BTreeMap<String, Metrics>,
}

/// Run `model` on every sample of `dataset` (which must be in [`Mode::Eval`]), post-process to
/// the original size and score. `progress` is called after each sample with (done, total).
pub fn evaluate<B: Backend>(
    model: &RsRefSeg<B>,
    config: &RsRefSegConfig,
    dataset: &RefDataset,
    tokenizer: &TextTokenizer,
    device: &B::Device,
    limit: Option<usize>,
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
    for i in 0..n {
        let item = dataset.get(i)?;
        // One sample at a time: every sample keeps its own geometry and sentence length, so the
        // result does not depend on what it is batched with.
        let x = Tensor::<B, 4>::from_data(TensorData::new(item.x01(), [1, 3, s, s]), device);
        let (ids, mask) = token_tensors::<B>(tokenizer, config, &[item.sentence.as_str()], device)?;
        let out = model.forward(x, ids, Some(mask), false);
        let logits = logits_at_original_size(out.mask_logits, item.geometry);
        // Through an integer tensor: the bool storage differs between backends.
        let pred: Vec<u8> = binary_mask(logits)
            .int()
            .into_data()
            .convert::<i32>()
            .into_vec::<i32>()
            .map_err(|e| anyhow!("{e:?}"))?
            .into_iter()
            .map(|v| u8::from(v != 0))
            .collect();
        let category = item.category.as_deref();
        overall.add(&pred, &item.gt, category).map_err(|e| anyhow!("sample {i}: {e}"))?;
        if let Some(tag) = &item.tag {
            per_tag.entry(tag.clone()).or_default().add(&pred, &item.gt, category).map_err(|e| anyhow!("sample {i}: {e}"))?;
        }
        progress(i + 1, n);
    }
    Ok(EvalResult {
        overall: overall.compute().expect("non-empty"),
        per_tag: per_tag.into_iter().filter_map(|(t, a)| a.compute().map(|m| (t, m))).collect(),
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
        v["reference"] = self.overall.to_reference_json();
        v
    }

    /// The metrics table plus one line per tag.
    pub fn table(&self) -> String {
        let mut s = self.overall.to_string();
        if !self.per_tag.is_empty() {
            s.push_str(&format!("\n{:<12}{:>8}{:>8}{:>8}", "tag", "samples", "gIoU", "cIoU"));
            for (t, m) in &self.per_tag {
                s.push_str(&format!("\n{t:<12}{:>8}{:>8.2}{:>8.2}", m.num_samples, m.target.giou, m.target.ciou));
            }
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

    let start = std::time::Instant::now();
    let result = evaluate(&model, &config, &dataset, &tokenizer, &device, args.limit, |done, total| {
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
