//! `rsrefseg train`: the released training recipe (reference §6–§7) on a JSONL dataset as
//! `rsrefseg synth` writes it, on any autodiff backend `--backend` / `--precision` select
//! (`Autodiff<Flex>` on the CPU by default), optionally data-parallel over `--devices`.
//!
//! A run directory holds `config.json` (the model), `train_config.json` (every option),
//! `tokenizer.json` (a copy, so that `rsrefseg eval --config RUN/config.json` finds it),
//! `metrics.jsonl` (one line per optimizer step, one per validation), `checkpoint/` (resumable
//! state), `best.safetensors` (the model with the best validation gIoU), `last.safetensors` (the model
//! where the run stopped) and `plots/`.
//!
//! The order of samples is a pure function of (seed, epoch) and the position in the run is the
//! number of batches consumed, so a resumed run sees exactly the batches an uninterrupted one
//! would.

pub use crate::backend::{BackendKind, Precision};
use crate::backend::{dispatch, BackendJob};
use crate::eval_cmd::{evaluate, load_tokenizer, resolve_config, token_tensors};
use crate::plots::{svg_chart, NamedSeries};
use anyhow::{anyhow, bail, Context, Result};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rsrefseg::checkpoint::{module_tensors, read_tensors, LoadOptions};
use rsrefseg::config::RsRefSegConfig;
use rsrefseg::data::dataset::{Item, Mode, RefDataset};
use rsrefseg::encoders::TextTokenizer;
use rsrefseg::loss::LossWeights;
use rsrefseg::model::{load_rsrefseg_tensors, RsRefSeg};
use rsrefseg::nn::lora::{LoraConfig, LoraModule};
use rsrefseg::train::checkpoint_io::write_atomic;
use rsrefseg::train::{Batch, OptimConfig, ScheduleConfig, StepReport, TrainError, TrainModel, Trainer};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args, Debug, Clone, Serialize, Deserialize)]
pub struct TrainArgs {
    /// Model configuration: a preset name (paper, browser, reference-dev, nano) or a model.json.
    #[arg(long)]
    pub config: String,
    /// Dataset directory with train.jsonl, val.jsonl and the images they name.
    #[arg(long)]
    pub data: PathBuf,
    /// `tokenizer.json` matching the text tower's vocabulary.
    #[arg(long)]
    pub tokenizer: PathBuf,
    /// Run directory (created).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 300)]
    pub epochs: usize,
    /// Samples per batch, over all --devices together (the last incomplete batch of an epoch is
    /// dropped).
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Batches per optimizer step.
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Base learning rate (1e-4 in the released configs).
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    /// Linear warm-up length in epochs (5 in the released configs).
    #[arg(long, default_value_t = 5.0)]
    pub warmup_epochs: f64,
    /// Seed of the initial weights and of the sample order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Save a checkpoint every N optimizer steps (0 = only at epoch ends).
    #[arg(long, default_value_t = 500)]
    pub checkpoint_every: usize,
    /// Validate every N epochs (and after the last one).
    #[arg(long, default_value_t = 10)]
    pub eval_every: usize,
    /// Attach LoRA adapters to the encoders and freeze their base weights (fine-tuning
    /// pretrained encoders, with --init); off: every parameter is trained.
    #[arg(long)]
    pub lora: bool,
    /// Initial full-model weights (released state dict or this crate's names).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Continue the run in --out from its checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Stop (with a checkpoint) once this many optimizer steps have been taken in total.
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Validate on at most N samples of val.jsonl (quick runs).
    #[arg(long)]
    pub val_limit: Option<usize>,
    /// Compute backend: cpu or ndarray (always built), wgpu or cuda (built with `--features wgpu|cuda`).
    #[arg(long, value_enum, default_value = "cpu")]
    pub backend: BackendKind,
    /// Float type of the whole model on GPU backends (cuda: f32, bf16, f16; wgpu: f32, f16);
    /// the cpu backend is f32 only.
    #[arg(long, value_enum, default_value = "f32")]
    #[serde(default)]
    pub precision: Precision,
    /// Data-parallel training on these devices (e.g. `0,1`; the first holds the model and the
    /// optimizer): each batch is split evenly over them. Default: device 0 alone.
    #[arg(long, value_delimiter = ',')]
    #[serde(default)]
    pub devices: Option<Vec<usize>>,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Options that fix the sequence of batches and updates; a resumed run must keep them.
fn sequence_key(a: &TrainArgs) -> serde_json::Value {
    json!({"epochs": a.epochs, "batch_size": a.batch_size, "grad_accum": a.grad_accum, "lr": a.lr,
           "warmup_epochs": a.warmup_epochs, "seed": a.seed, "lora": a.lora})
}

/// The sample order of `epoch`: a Fisher–Yates shuffle seeded by (seed, epoch).
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut rng = rsrefseg::train::SplitMix64(seed ^ (epoch as u64).wrapping_mul(0xD1B5_4A32_D192_ED03) ^ 0x5EED);
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// Items (Mode::Train: x01 `[3,S,S]`, ground truth padded with 255 to `S×S`) and their
/// sentences (padded to the batch's longest) as a training batch.
pub fn make_batch<B: Backend>(
    items: &[Item],
    tokenizer: &TextTokenizer,
    config: &RsRefSegConfig,
    size: usize,
    device: &B::Device,
) -> Result<Batch<B>> {
    let b = items.len();
    let mut x = Vec::with_capacity(b * 3 * size * size);
    let mut gt = Vec::with_capacity(b * size * size);
    for it in items {
        debug_assert_eq!(it.gt_size, (size, size));
        x.extend(it.x01());
        gt.extend(it.gt.iter().map(|&v| v as f32));
    }
    let sentences: Vec<&str> = items.iter().map(|i| i.sentence.as_str()).collect();
    let (input_ids, attention_mask) = token_tensors::<B>(tokenizer, config, &sentences, device)?;
    Ok(Batch {
        x01: Tensor::from_data(TensorData::new(x, [b, 3, size, size]), device),
        gt: Tensor::from_data(TensorData::new(gt, [b, 1, size, size]), device),
        input_ids,
        attention_mask,
    })
}

/// The inference model with any LoRA adapters merged (the exported form).
fn export_model<B: Backend>(model: RsRefSeg<B>) -> RsRefSeg<B> {
    RsRefSeg { siglip: model.siglip.merge_lora(), sam: model.sam.merge_lora(), ..model }
}

/// `bytes` into `path` atomically (a reader sees the old file or the new one).
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    write_atomic(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The model (LoRA merged) as a safetensors file in this crate's names, written atomically.
pub fn write_model<B: Backend>(model: &RsRefSeg<B>, path: &Path) -> Result<()> {
    write_safetensors(&export_model(model.clone()), path)
}

/// Canonical tensors as a safetensors file (f32 whatever the training precision), written
/// atomically.
fn write_safetensors<B: Backend>(model: &RsRefSeg<B>, path: &Path) -> Result<()> {
    use safetensors::tensor::{Dtype, TensorView};
    let tensors = module_tensors::<B, _>(model);
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, t)| (n, t.shape, t.data.iter().flat_map(|v| v.to_le_bytes()).collect()))
        .collect();
    let views = bytes
        .iter()
        .map(|(n, s, b)| TensorView::new(Dtype::F32, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{e:?}"))?;
    let data = safetensors::serialize(views, &None).map_err(|e| anyhow!("{e:?}"))?;
    write_atomic(path, &data).with_context(|| format!("cannot write {}", path.display()))
}

/// Appends JSON lines to `metrics.jsonl`, flushed per line (a killed run keeps its log).
struct MetricsLog {
    file: std::fs::File,
    steps: Vec<StepReport>,
    evals: Vec<(usize, f64)>,
}

impl MetricsLog {
    /// Open the log; when resuming at `step`, drop what was logged after the checkpoint (it
    /// will be logged again, identically).
    fn open(path: &Path, resume_step: Option<usize>) -> Result<Self> {
        let mut steps = Vec::new();
        let mut evals = Vec::new();
        let mut kept = String::new();
        if let (Some(at), Ok(text)) = (resume_step, std::fs::read_to_string(path)) {
            for line in text.lines() {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
                let step = v["step"].as_u64().unwrap_or(u64::MAX) as usize;
                match v["kind"].as_str() {
                    Some("step") if step < at => {
                        if let Ok(r) = serde_json::from_value::<StepReport>(v.clone()) {
                            steps.push(r);
                        }
                    }
                    Some("val") if step <= at => evals.push((step, v["giou"].as_f64().unwrap_or(f64::NAN))),
                    _ => continue,
                }
                kept.push_str(line);
                kept.push('\n');
            }
        }
        std::fs::write(path, kept).with_context(|| format!("cannot write {}", path.display()))?;
        let file = std::fs::OpenOptions::new().append(true).open(path)?;
        Ok(Self { file, steps, evals })
    }

    fn write(&mut self, v: &serde_json::Value) -> Result<()> {
        writeln!(self.file, "{v}")?;
        self.file.flush()?;
        Ok(())
    }

    fn plots(&self, dir: &Path) -> Result<()> {
        let series = |name: &str, f: fn(&StepReport) -> f64| NamedSeries {
            name: name.to_string(),
            points: self.steps.iter().map(|r| (r.step as f64, f(r))).collect(),
        };
        let losses = [
            series("total", |r| r.total),
            series("BCE", |r| r.bce),
            series("Dice", |r| r.dice),
            series("orthogonality", |r| r.ortho),
            series("contrastive", |r| r.contrastive),
        ];
        svg_chart("training loss (weighted terms)", "optimizer step", "loss", &losses, &dir.join("loss.svg"))
            .map_err(anyhow::Error::msg)?;
        let giou = NamedSeries { name: "gIoU".into(), points: self.evals.iter().map(|&(s, g)| (s as f64, g)).collect() };
        svg_chart("validation gIoU", "optimizer step", "gIoU (fraction)", &[giou], &dir.join("val_giou.svg"))
            .map_err(anyhow::Error::msg)
    }
}

pub fn run(args: TrainArgs) -> Result<()> {
    args.precision.check_trainable()?;
    crate::configure_threads(args.threads)?;
    let (backend, precision, devices) = (args.backend, args.precision, args.devices.clone());
    dispatch(backend, precision, devices.as_deref(), Train(args))
}

struct Train(TrainArgs);

impl BackendJob for Train {
    type Output = ();
    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Result<()> {
        train::<B>(self.0, devices)
    }
}

fn train<B: AutodiffBackend>(args: TrainArgs, devices: Vec<B::Device>) -> Result<()> {
    anyhow::ensure!(args.batch_size >= 1 && args.grad_accum >= 1 && args.epochs >= 1, "--epochs, --batch-size and --grad-accum must be at least 1");
    anyhow::ensure!(args.eval_every >= 1, "--eval-every must be at least 1");
    anyhow::ensure!(args.lr.is_finite() && args.lr > 0.0, "--lr must be a finite number > 0, not {}", args.lr);
    anyhow::ensure!(
        args.warmup_epochs.is_finite() && args.warmup_epochs >= 0.0,
        "--warmup-epochs must be a finite number ≥ 0, not {}",
        args.warmup_epochs
    );
    let device = devices[0].clone();
    let n_devices = devices.len();
    let out = &args.out;
    let ckpt = out.join("checkpoint");
    // Created if needed and held for this run; leftovers of a killed write are cleared under the lock.
    let _lock = rsrefseg::train::checkpoint_io::lock_dir(out).map_err(anyhow::Error::msg)?;
    rsrefseg::train::checkpoint_io::remove_stale_temporaries(&ckpt);

    let config = if args.resume {
        let path = out.join("config.json");
        let saved: TrainArgs = serde_json::from_slice(
            &std::fs::read(out.join("train_config.json")).with_context(|| format!("--resume: no run in {}", out.display()))?,
        )
        .context("train_config.json")?;
        if sequence_key(&saved) != sequence_key(&args) {
            bail!(
                "--resume with other options than the run was started with: {} (then) vs {} (now)",
                sequence_key(&saved),
                sequence_key(&args)
            );
        }
        resolve_config(&path.display().to_string())?
    } else {
        if ckpt.join("state.json").exists() {
            bail!("{} already holds a run: pass --resume to continue it, or another --out", out.display());
        }
        let config = resolve_config(&args.config)?;
        std::fs::write(out.join("config.json"), config.to_json())?;
        std::fs::write(out.join("train_config.json"), serde_json::to_string_pretty(&args)?)?;
        config
    };
    let tokenizer = load_tokenizer(&args.tokenizer, &config)?;
    let tok_copy = out.join("tokenizer.json");
    if std::fs::canonicalize(&args.tokenizer).ok() != std::fs::canonicalize(&tok_copy).ok() {
        std::fs::copy(&args.tokenizer, &tok_copy).with_context(|| format!("cannot copy the tokenizer to {}", tok_copy.display()))?;
    }

    let size = config.image_size();
    let train = RefDataset::from_jsonl(&args.data.join("train.jsonl"), &args.data, None, size, Mode::Train)
        .map_err(|e| anyhow!("{e}"))?;
    let val_path = args.data.join("val.jsonl");
    let val = if val_path.exists() {
        Some(RefDataset::from_jsonl(&val_path, &args.data, None, size, Mode::Eval).map_err(|e| anyhow!("{e}"))?)
    } else {
        None
    };
    // Tokenise every sentence once up front: a sentence the model cannot take fails now, not
    // hours into the run.
    for s in &train.samples {
        token_tensors::<B::InnerBackend>(&tokenizer, &config, &[s.sentence.as_str()], &device).with_context(|| s.origin.clone())?;
    }
    let n = train.len();
    anyhow::ensure!(n > 0, "train.jsonl has no samples");
    anyhow::ensure!(
        args.batch_size <= n,
        "--batch-size {} is larger than the {n} training samples: use at most {n}",
        args.batch_size
    );
    let batch = args.batch_size;
    anyhow::ensure!(
        batch.is_multiple_of(n_devices),
        "a batch of {batch} samples does not split evenly over {n_devices} devices: make --batch-size a multiple of the number of --devices"
    );
    let per_device = batch / n_devices;
    let k = args.grad_accum;
    // Whole optimizer steps per epoch: accumulation never spans an epoch boundary, so every
    // epoch-end checkpoint is at a step boundary.
    let batches_per_epoch = (n / batch) / k * k;
    anyhow::ensure!(batches_per_epoch > 0, "{n} samples make fewer than --grad-accum {k} batches of {batch}");
    let steps_per_epoch = batches_per_epoch / k;
    let total_steps = args.epochs * steps_per_epoch;
    let max_steps = args.max_steps.unwrap_or(total_steps).min(total_steps);

    B::seed(&device, args.seed);
    // The configuration's LoRA settings (default: the released r = 16, alpha = 16).
    let lora = args.lora.then(|| LoraConfig::reference().with_rank(config.lora.r).with_alpha(config.lora.alpha));
    let model = match &args.init {
        Some(path) => {
            let tensors = read_tensors(path).map_err(|e| anyhow!("{e}"))?;
            let (m, _) = load_rsrefseg_tensors::<B>(tensors, &config, &device, LoadOptions::default())
                .map_err(|e| anyhow!("{}: {e}", path.display()))?;
            TrainModel::from_model(m, lora.as_ref(), &device)
        }
        None => TrainModel::<B>::new(&config, lora.as_ref(), &device).map_err(anyhow::Error::msg)?,
    };
    let schedule = ScheduleConfig { base_lr: args.lr, warmup_epochs: args.warmup_epochs, ..ScheduleConfig::released() };
    let mut trainer = Trainer::new(
        model,
        LossWeights::code(),
        OptimConfig::default(),
        schedule,
        k,
        steps_per_epoch,
        args.epochs,
        &device,
    )
    .with_devices(devices.clone());
    if args.resume {
        trainer = trainer.resume(&ckpt).map_err(|e| anyhow!("{e}"))?;
    }
    let mut log = MetricsLog::open(&out.join("metrics.jsonl"), Some(trainer.state.step).filter(|_| args.resume))?;
    let plots_dir = out.join("plots");

    let pb = ProgressBar::new(max_steps as u64);
    pb.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} ETA {eta_precise}]")
            .expect("valid template"),
    );
    pb.set_position(trainer.state.step as u64);
    pb.reset_eta();
    eprintln!(
        "{n} training samples, {batches_per_epoch} batches of {batch} per epoch, {steps_per_epoch} steps per epoch, \
         {} epochs; starting at step {}",
        args.epochs, trainer.state.step
    );
    if n_devices > 1 || args.backend != BackendKind::Cpu {
        eprintln!(
            "backend {} ({}), {n_devices} device(s) {devices:?}, {per_device} samples per device and batch",
            args.backend.name(),
            args.precision.name()
        );
    }

    let save = |trainer: &Trainer<B>| -> Result<()> { trainer.save(&ckpt).map_err(|e| anyhow!("{e}")) };
    let mut epoch = trainer.state.micro_step / batches_per_epoch;
    let mut offset = trainer.state.micro_step % batches_per_epoch;
    let mut step_start = Instant::now();
    let mut stopped_early = false;
    'epochs: while epoch < args.epochs {
        trainer.state.epoch = epoch;
        let order = epoch_order(n, args.seed, epoch);
        for bi in offset..batches_per_epoch {
            if trainer.state.micro_step % k == 0 && trainer.state.step >= max_steps {
                stopped_early = true;
                break 'epochs;
            }
            let items = order[bi * batch..(bi + 1) * batch]
                .iter()
                .map(|&i| train.get(i))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow!("{e}"))?;
            // One shard per device, each tokenised (padded) on its own as a batch of its own.
            let shards = items
                .chunks(per_device)
                .zip(&devices)
                .map(|(items, d)| make_batch::<B>(items, &tokenizer, &config, size, d))
                .collect::<Result<Vec<_>>>()?;
            match trainer.train_shards(shards) {
                Err(e @ TrainError::NonFinite { .. }) => {
                    pb.abandon();
                    log.plots(&plots_dir).ok();
                    log.write(&json!({"kind": "error", "step": trainer.state.step, "message": e.to_string()}))?;
                    return Err(anyhow!("{e}"));
                }
                Err(e) => return Err(anyhow!("{e}")),
                Ok(None) => {}
                Ok(Some(report)) => {
                    let secs = step_start.elapsed().as_secs_f64();
                    step_start = Instant::now();
                    let rate = (batch * k) as f64 / secs.max(1e-9);
                    let mut line = serde_json::to_value(&report)?;
                    line["kind"] = json!("step");
                    line["samples_per_s"] = json!(rate);
                    log.write(&line)?;
                    pb.set_message(format!(
                        "loss {:.4} (bce {:.4} dice {:.4} ortho {:.4} contr {:.4})  lr {:.2e}  {:.1} samples/s",
                        report.total, report.bce, report.dice, report.ortho, report.contrastive, report.lr, rate
                    ));
                    pb.set_position(trainer.state.step as u64);
                    log.steps.push(report);
                    if args.checkpoint_every > 0 && trainer.state.step % args.checkpoint_every == 0 {
                        save(&trainer)?;
                    }
                }
            }
        }
        offset = 0;
        let last = epoch + 1 == args.epochs;
        if let Some(val) = &val {
            if (epoch + 1).is_multiple_of(args.eval_every) || last {
                validate(&mut trainer, &config, val, &tokenizer, &device, &args, &mut log, &pb, epoch)?;
            }
        }
        save(&trainer)?;
        log.plots(&plots_dir)?;
        epoch += 1;
    }
    if stopped_early {
        save(&trainer)?;
        log.plots(&plots_dir)?;
    }
    // The model as the run leaves it, also when --max-steps stopped it before a validation.
    write_safetensors(&export_model(trainer.valid_model().model), &out.join("last.safetensors"))?;
    pb.finish();
    eprintln!(
        "stopped at step {} of {total_steps}; best validation gIoU {} (step {}); run in {}",
        trainer.state.step,
        trainer.state.best_val_giou.map_or("-".into(), |g| format!("{:.2}", g * 100.0)),
        trainer.state.best_step.map_or("-".into(), |s| s.to_string()),
        out.display()
    );
    Ok(())
}

/// Validation pass: log the metrics, keep the best model by validation gIoU.
#[allow(clippy::too_many_arguments)]
fn validate<B: AutodiffBackend>(
    trainer: &mut Trainer<B>,
    config: &RsRefSegConfig,
    val: &RefDataset,
    tokenizer: &TextTokenizer,
    device: &B::Device,
    args: &TrainArgs,
    log: &mut MetricsLog,
    pb: &ProgressBar,
    epoch: usize,
) -> Result<()> {
    let model = trainer.valid_model().model;
    let result = evaluate(&model, None, config, val, tokenizer, device, args.val_limit, crate::eval_cmd::ExtraAnswers::NONE, |_, _| {})?;
    let mut line = result.to_json();
    let giou = line["giou"].as_f64().unwrap_or(f64::NAN);
    let step = trainer.state.step;
    line["kind"] = json!("val");
    line["step"] = json!(step);
    line["epoch"] = json!(epoch);
    log.write(&line)?;
    log.evals.push((step, giou));
    pb.println(format!("epoch {epoch} step {step}: validation gIoU {:.2} cIoU {:.2}", giou * 100.0, result.overall.target.ciou));
    let better = giou.is_finite() && trainer.state.best_val_giou.is_none_or(|b| giou > b);
    if better {
        write_safetensors(&export_model(model), &args.out.join("best.safetensors"))?;
        trainer.state.best_val_giou = Some(giou);
        trainer.state.best_step = Some(step);
    }
    Ok(())
}
