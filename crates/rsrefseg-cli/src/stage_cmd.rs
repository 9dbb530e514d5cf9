//! `rsrefseg stage`: one stage of the nano model's staged recipe ([`rsrefseg::train::stages`]) on
//! scenes generated on the fly.
//!
//! `--out DIR` receives `weights.safetensors` (the whole model, in this crate's names, loadable
//! with `--init` by the next stage and with `--weights` by `eval` / `segment`), `metrics.jsonl`
//! (one line per logged step and per validation), `checkpoint/` (weights, AdamW state and the
//! step, atomic; `--resume` continues from it) and `plots/` (loss terms and validation curves,
//! PNG and SVG).

use crate::backend::{dispatch, BackendJob, BackendKind, Precision};
use crate::plots::{svg_chart, NamedSeries};
use anyhow::{anyhow, bail, Context, Result};
use burn::tensor::backend::{AutodiffBackend, Backend};
use clap::Args;
use rsrefseg::checkpoint::{read_tensors, LoadOptions};
use rsrefseg::config::RsRefSegConfig;
use rsrefseg::encoders::TextTokenizer;
use rsrefseg::loss::{LossWeights, RefSegLoss};
use rsrefseg::model::{load_rsrefseg_tensors, RsRefSeg};
use rsrefseg::synth::{SceneStream, StreamSample};
use rsrefseg::train::stages::{self, Stage, StageConfig, StageRunner};
use rsrefseg::train::{SplitMix64, TrainModel};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StageArg {
    /// 1: SigLIP's sigmoid loss, words ↔ regions and patches.
    VisionLanguage,
    /// 2: SAM from points, boxes and coarse masks, with a correction click.
    Promptable,
    /// 3: RSRefSeg 2's referring loss with the encoders frozen.
    Referring,
}

impl From<StageArg> for Stage {
    fn from(s: StageArg) -> Self {
        match s {
            StageArg::VisionLanguage => Stage::VisionLanguage,
            StageArg::Promptable => Stage::Promptable,
            StageArg::Referring => Stage::Referring,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct StageArgs {
    /// Which stage.
    #[arg(long, value_enum)]
    pub stage: StageArg,
    /// Run directory (created).
    #[arg(long)]
    pub out: PathBuf,
    /// Weights to start from (the previous stage's `weights.safetensors`); without it the model
    /// starts from random weights drawn with --seed.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Take the SigLIP towers (every `siglip.*` tensor) from this file instead of --init (stage 3
    /// joins the vision-language stage's SigLIP with the promptable stage's SAM, which can be
    /// trained side by side).
    #[arg(long, requires = "init")]
    pub siglip_from: Option<PathBuf>,
    /// Referring stage: keep the prompter of --init (a further cycle of stage 3 on new scenes)
    /// instead of starting it from random weights.
    #[arg(long, requires = "init")]
    pub keep_prompter: bool,
    /// Model configuration: a preset name or a model.json.
    #[arg(long, default_value = "nano")]
    pub config: String,
    /// `tokenizer.json` (default: the nano model's, built in).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Optimizer steps of the stage.
    #[arg(long)]
    pub steps: usize,
    /// Scenes generated per step (stage 3 answers every expression of each).
    #[arg(long, default_value_t = 8)]
    pub scenes_per_step: usize,
    /// Expressions written per scene.
    #[arg(long, default_value_t = 6)]
    pub expressions_per_scene: usize,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 50)]
    pub warmup_steps: usize,
    #[arg(long, default_value_t = 0.05)]
    pub weight_decay: f64,
    /// Global-norm gradient clipping.
    #[arg(long, default_value_t = 3.0)]
    pub grad_clip: f64,
    /// Stage 3: fine-tune SAM's image encoder (Hiera + FPN) too. Each scene is still encoded
    /// once per step.
    #[arg(long)]
    pub tune_sam_encoder: bool,
    /// Stage 3: fine-tune SigLIP's vision tower too (frozen by default, keeping stage 1's
    /// alignment).
    #[arg(long)]
    pub tune_siglip_vision: bool,
    /// Stage 3: answer every expression a second time with one simulated correction click at
    /// the interior of the first answer's largest error (positive on a miss, negative on a false
    /// alarm), both answers in the loss: the decoder learns to follow clicks.
    #[arg(long)]
    pub correction_clicks: bool,
    /// Stage 3: weight of a loss on the dense prompt itself (BCE + Dice against the referent's
    /// coverage of SAM's mask-input cells), so that the prompter hands SAM the coarse mask of
    /// its object that stage 2 taught SAM to follow. 0 = RSRefSeg 2's loss alone.
    #[arg(long, default_value_t = 0.0)]
    pub dense_loss: f64,
    /// Preference weight of the ranking forms ("the second ship from the left", "the largest
    /// tank") among the simple expressions of the training stream: 1 is the benchmark's mix;
    /// more asks more of the forms a small model learns last. Held-out scenes keep 1.
    #[arg(long, default_value_t = 1.0)]
    pub ranking_weight: f32,
    /// Stage 3: weight of stage 2's interactive loss (points, noisy boxes, coarse masks, a
    /// correction click) on the same scenes, so that the decoder keeps following a user's boxes
    /// and clicks while it learns the prompter's prompts. 0 = none.
    #[arg(long, default_value_t = 0.0)]
    pub promptable_loss: f64,
    /// Seed of the training scene stream (held-out scenes use another stream).
    #[arg(long, default_value_t = 1)]
    pub data_seed: u64,
    /// Seed of the initial weights (without --init).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Save a checkpoint every N steps (and at the end).
    #[arg(long, default_value_t = 100)]
    pub checkpoint_every: usize,
    /// Validate on held-out scenes every N steps (and at the end).
    #[arg(long, default_value_t = 200)]
    pub val_every: usize,
    /// Held-out scenes per validation.
    #[arg(long, default_value_t = 24)]
    pub val_scenes: usize,
    /// Seed of the held-out scene stream (never a training stream).
    #[arg(long, default_value_t = 999)]
    pub val_seed: u64,
    /// Continue the run in --out from its checkpoint.
    #[arg(long)]
    pub resume: bool,
    #[arg(long, value_enum, default_value = "cpu")]
    pub backend: BackendKind,
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: Precision,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn run(args: StageArgs) -> Result<()> {
    args.precision.check_trainable()?;
    crate::configure_threads(args.threads)?;
    for (name, v) in [
        ("--steps", args.steps),
        ("--scenes-per-step", args.scenes_per_step),
        ("--expressions-per-scene", args.expressions_per_scene),
        ("--checkpoint-every", args.checkpoint_every),
        ("--val-every", args.val_every),
        ("--val-scenes", args.val_scenes),
    ] {
        if v == 0 {
            bail!("{name} must be at least 1");
        }
    }
    if !(args.lr.is_finite() && args.lr >= 0.0) {
        bail!("--lr must be a finite number ≥ 0, not {}", args.lr);
    }
    if !(args.weight_decay.is_finite() && args.weight_decay >= 0.0) {
        bail!("--weight-decay must be a finite number ≥ 0, not {}", args.weight_decay);
    }
    if !(args.grad_clip.is_finite() && args.grad_clip > 0.0) {
        bail!("--grad-clip must be a finite number > 0, not {}", args.grad_clip);
    }
    if !(args.dense_loss.is_finite() && args.dense_loss >= 0.0) {
        bail!("--dense-loss must be a finite number ≥ 0, not {}", args.dense_loss);
    }
    if args.dense_loss > 0.0 && args.stage != StageArg::Referring {
        bail!("--dense-loss weighs a stage-3 term; it needs --stage referring");
    }
    if !(args.promptable_loss.is_finite() && (0.0..=100.0).contains(&args.promptable_loss)) {
        bail!("--promptable-loss must be a number in [0, 100], not {}", args.promptable_loss);
    }
    if args.promptable_loss > 0.0 && args.stage != StageArg::Referring {
        bail!("--promptable-loss weighs a stage-3 term; it needs --stage referring (stage 2 is --stage promptable)");
    }
    if !(args.ranking_weight.is_finite() && args.ranking_weight > 0.0 && args.ranking_weight <= 100.0) {
        bail!("--ranking-weight must be a number in (0, 100], not {}", args.ranking_weight);
    }
    if args.scenes_per_step > 64 || args.expressions_per_scene > 32 {
        bail!("at most 64 scenes per step and 32 expressions per scene (memory grows with both)");
    }
    if args.val_seed == args.data_seed {
        bail!("--val-seed must differ from --data-seed (held-out scenes are never trained on)");
    }
    dispatch(args.backend, args.precision, None, Job(args))
}

struct Job(StageArgs);

impl BackendJob for Job {
    type Output = ();
    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Result<()> {
        train::<B>(self.0, &devices[0])
    }
}

fn tokenizer_for(args: &StageArgs, config: &RsRefSegConfig) -> Result<TextTokenizer> {
    let json = match &args.tokenizer {
        Some(p) => std::fs::read(p).with_context(|| format!("cannot read the tokenizer {}", p.display()))?,
        None => rsrefseg::synth::tokenizer::tokenizer_json().into_bytes(),
    };
    TextTokenizer::from_bytes(&json, config.tokenizer.clone()).map_err(|e| anyhow!("tokenizer: {e}"))
}

fn train<B: AutodiffBackend>(args: StageArgs, device: &B::Device) -> Result<()> {
    let config = crate::eval_cmd::resolve_config(&args.config)?;
    let tokenizer = tokenizer_for(&args, &config)?;
    let stage: Stage = args.stage.into();
    let size = config.image_size();
    let stream = SceneStream::new(args.data_seed, size, args.expressions_per_scene).with_ranking_weight(args.ranking_weight);
    let held_out = SceneStream::new(args.val_seed, size, args.expressions_per_scene).batch(0, args.val_scenes);
    let ckpt = args.out.join("checkpoint");
    // Created if needed and held for this run; leftovers of a killed write are cleared under the lock.
    let _lock = rsrefseg::train::checkpoint_io::lock_dir(&args.out).map_err(anyhow::Error::msg)?;
    rsrefseg::train::checkpoint_io::remove_stale_temporaries(&ckpt);

    B::seed(device, args.seed);
    let model: RsRefSeg<B> = match &args.init {
        Some(path) => {
            let mut tensors = read_tensors(path).map_err(|e| anyhow!("{e}"))?;
            if let Some(from) = &args.siglip_from {
                let other = read_tensors(from).map_err(|e| anyhow!("{e}"))?;
                let mut replaced = 0;
                for (k, v) in other.into_iter().filter(|(k, _)| k.starts_with("siglip.")) {
                    if tensors.insert(k.clone(), v).is_none() {
                        bail!("{}: {k} is not in {}", from.display(), path.display());
                    }
                    replaced += 1;
                }
                if replaced == 0 {
                    bail!("{} has no siglip.* tensors", from.display());
                }
            }
            // Stages 1-2 never train the prompter: the referring stage starts it from random
            // weights (seeded by --seed), so that a prompter ablation starts from the same
            // encoders as the full model (--keep-prompter continues a finished referring
            // stage instead). Every other tensor must be in the file.
            let fresh_prompter = stage == Stage::Referring && !args.keep_prompter;
            if fresh_prompter {
                tensors.retain(|k, _| !k.starts_with("prompter."));
            }
            let (model, report) =
                load_rsrefseg_tensors::<B>(tensors, &config, device, LoadOptions { allow_partial: fresh_prompter })
                    .map_err(|e| anyhow!("{}: {e}", path.display()))?;
            if let Some((name, _)) = report.missing.iter().find(|(n, _)| !n.starts_with("prompter.")) {
                bail!("{}: {name} is missing", path.display());
            }
            model
        }
        None => config.init::<B>(device).map_err(|e| anyhow!("{e}"))?,
    };
    let stage_config = StageConfig {
        stage,
        steps: args.steps,
        scenes_per_step: args.scenes_per_step,
        lr: args.lr,
        warmup_steps: args.warmup_steps,
        weight_decay: args.weight_decay,
        grad_clip: args.grad_clip,
        data_seed: args.data_seed,
        tune_sam_encoder: args.tune_sam_encoder,
        tune_siglip_vision: args.tune_siglip_vision,
        correction_clicks: args.correction_clicks,
        dense_loss: args.dense_loss,
        ranking_weight: args.ranking_weight,
        promptable_loss: args.promptable_loss,
    };
    let mut runner = StageRunner::new(TrainModel::from_model(model, None, device), stage_config);
    if args.resume {
        if ckpt.join("state.json").is_file() {
            runner = runner.resume(&ckpt, device).map_err(|e| anyhow!("{e}"))?;
            eprintln!("{}: resuming at step {}", stage.name(), runner.state.step);
        } else {
            eprintln!("{}: no checkpoint in {}, starting", stage.name(), ckpt.display());
        }
    }
    let mut log = MetricsLog::open(&args.out.join("metrics.jsonl"), runner.state.step)?;
    let refseg = RefSegLoss::new(LossWeights::code());
    let grid = config.prompter.grid;
    let started = Instant::now();
    let first_step = runner.state.step;

    while !runner.done() {
        let step = runner.state.step;
        let t0 = Instant::now();
        let samples = stream.batch((step * args.scenes_per_step) as u64, args.scenes_per_step);
        let loss = {
            let model = &runner.model;
            match stage {
                Stage::VisionLanguage => stages::vision_language::loss(&model.model, &config, &tokenizer, &samples, device),
                Stage::Promptable => {
                    let mut rng = step_rng(args.data_seed, step, 0x5A11);
                    stages::promptable::loss(&model.model.sam, &samples, grid, &mut rng, device)
                }
                Stage::Referring => {
                    let mut rng = step_rng(args.data_seed, step, 0x3EF3);
                    stages::referring::loss(model, &config, &tokenizer, &refseg, &samples, &runner.config, &mut rng, device)
                }
            }
            .map_err(|e| anyhow!("step {step}: {e}"))?
        };
        let values = loss.values();
        let (lr, grad_norm) = runner.apply(&loss).map_err(|e| anyhow!("{e}"))?;
        let secs = t0.elapsed().as_secs_f64();
        let mut line = json!({"kind": "step", "step": step, "lr": lr, "grad_norm": grad_norm, "seconds": secs});
        for (k, v) in &values {
            line[*k] = json!(v);
        }
        log.write(line)?;
        if step % 10 == 0 || runner.done() {
            let done = runner.state.step - first_step;
            let rate = done as f64 / started.elapsed().as_secs_f64();
            let terms: Vec<String> = values.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
            eprintln!(
                "{} step {}/{} | {} | lr {lr:.2e} | {rate:.2} steps/s, {:.1} scenes/s",
                stage.name(),
                runner.state.step,
                args.steps,
                terms.join(" | "),
                rate * args.scenes_per_step as f64,
            );
        }
        let at = runner.state.step;
        if at % args.val_every == 0 || runner.done() {
            let model = runner.valid_model();
            let v = validate::<B::InnerBackend>(stage, &model.model, &config, &tokenizer, &held_out, device)?;
            eprintln!("{} step {at} held-out: {v}", stage.name());
            let mut line = json!({"kind": "val", "step": at});
            for (k, x) in v.as_object().into_iter().flatten() {
                line[k.as_str()] = x.clone();
            }
            log.write(line)?;
        }
        if at % args.checkpoint_every == 0 || runner.done() {
            runner.save(&ckpt).map_err(|e| anyhow!("{e}"))?;
            crate::train_cmd::write_model(&runner.valid_model().model, &args.out.join("weights.safetensors"))?;
            log.plots(stage, &args.out.join("plots"))?;
        }
    }
    eprintln!(
        "{}: {} steps in {:.0} s; weights in {}",
        stage.name(),
        runner.state.step - first_step,
        started.elapsed().as_secs_f64(),
        args.out.join("weights.safetensors").display()
    );
    Ok(())
}

/// The prompts drawn at one step of a stage: seeded by the data seed, the step and a stage salt,
/// so that a resumed run draws the same ones.
fn step_rng(data_seed: u64, step: usize, salt: u64) -> SplitMix64 {
    SplitMix64(data_seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt)
}

/// The stage's held-out check (see each stage module), as JSON.
pub fn validate<B: Backend>(
    stage: Stage,
    model: &RsRefSeg<B>,
    config: &RsRefSegConfig,
    tokenizer: &TextTokenizer,
    held_out: &[StreamSample],
    device: &B::Device,
) -> Result<serde_json::Value> {
    Ok(match stage {
        Stage::VisionLanguage => {
            let (region, patch) = stages::vision_language::retrieval_accuracy(model, config, tokenizer, held_out, device)
                .map_err(|e| anyhow!("{e}"))?;
            json!({"region_accuracy": region, "patch_accuracy": patch})
        }
        Stage::Promptable => {
            let (from_box, from_point) = stages::promptable::prompt_iou(&model.sam, held_out, device).map_err(|e| anyhow!("{e}"))?;
            json!({"iou_from_box": from_box, "iou_from_point": from_point})
        }
        Stage::Referring => {
            let r = crate::eval_cmd::evaluate_scenes(model, config, tokenizer, held_out, device)?;
            // Also what the decoder makes of a user's box or click alone (stage 2's check).
            let (from_box, from_point) = stages::promptable::prompt_iou(&model.sam, held_out, device).map_err(|e| anyhow!("{e}"))?;
            json!({"giou": r.giou, "relational_giou": r.relational_giou, "sentence_sensitivity": r.sensitivity,
                   "iou_from_box": from_box, "iou_from_point": from_point})
        }
    })
}

/// `metrics.jsonl`, flushed per line; on resume the lines after the checkpoint are dropped.
struct MetricsLog {
    file: std::fs::File,
    lines: Vec<serde_json::Value>,
}

impl MetricsLog {
    fn open(path: &Path, resume_step: usize) -> Result<Self> {
        let mut lines = Vec::new();
        if let Ok(text) = std::fs::read_to_string(path) {
            for l in text.lines() {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else { continue };
                let step = v["step"].as_u64().unwrap_or(u64::MAX) as usize;
                let keep = if v["kind"] == "step" { step < resume_step } else { step <= resume_step };
                if keep {
                    lines.push(v);
                }
            }
        }
        let mut text = String::new();
        for l in &lines {
            text.push_str(&l.to_string());
            text.push('\n');
        }
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
        let file = std::fs::OpenOptions::new().append(true).open(path)?;
        Ok(Self { file, lines })
    }

    fn write(&mut self, line: serde_json::Value) -> Result<()> {
        writeln!(self.file, "{line}")?;
        self.file.flush()?;
        self.lines.push(line);
        Ok(())
    }

    /// `loss.svg` (every logged term, smoothed over 20 steps) and `val.svg` (held-out checks).
    fn plots(&self, stage: Stage, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        let series_of = |kind: &str, skip: &[&str]| -> Vec<NamedSeries> {
            let mut names: Vec<String> = Vec::new();
            for l in self.lines.iter().filter(|l| l["kind"] == kind) {
                for (k, v) in l.as_object().into_iter().flatten() {
                    if v.is_number() && !skip.contains(&k.as_str()) && !names.contains(k) {
                        names.push(k.clone());
                    }
                }
            }
            names
                .into_iter()
                .map(|n| NamedSeries {
                    points: self
                        .lines
                        .iter()
                        .filter(|l| l["kind"] == kind)
                        .filter_map(|l| Some((l["step"].as_f64()?, l[n.as_str()].as_f64()?)))
                        .collect(),
                    name: n,
                })
                .collect()
        };
        let mut losses = series_of("step", &["step", "lr", "grad_norm", "seconds"]);
        for s in &mut losses {
            s.points = smooth(&s.points, 20);
        }
        let title = format!("stage {} — training loss (mean of 20 steps)", stage.name());
        svg_chart(&title, "optimizer step", "loss", &losses, &dir.join("loss.svg")).map_err(|e| anyhow!(e))?;
        let val = series_of("val", &["step"]);
        if !val.is_empty() {
            let title = format!("stage {} — held-out scenes", stage.name());
            svg_chart(&title, "optimizer step", "score (fraction)", &val, &dir.join("val.svg")).map_err(|e| anyhow!(e))?;
        }
        Ok(())
    }
}

/// Trailing mean over `k` points.
fn smooth(points: &[(f64, f64)], k: usize) -> Vec<(f64, f64)> {
    (0..points.len())
        .map(|i| {
            let lo = i.saturating_sub(k - 1);
            let w = &points[lo..=i];
            (points[i].0, w.iter().map(|p| p.1).sum::<f64>() / w.len() as f64)
        })
        .collect()
}

