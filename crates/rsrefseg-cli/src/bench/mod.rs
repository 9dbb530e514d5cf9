//! `rsrefseg bench`: time each stage of the model on random weights and compare with the
//! PyTorch anchor.
//!
//! Every stage is built once with random parameters (speed does not depend on the values), run
//! `warmup` times untimed, then `reps` times timed; the median and the minimum are reported with
//! the achieved GFLOP/s from the analytic counts of [`flops`].
//!
//! Two more modes serve the side-by-side comparison with PyTorch (`tools/bench-vs-pytorch`):
//! [`pipeline`] (`--pipeline`: the whole inference pipeline on given weights and inputs) and
//! [`train_step`] (`--train-step`: one optimizer step of a configuration).

pub mod anchor;
pub mod flops;
pub mod pipeline;
pub(crate) use pipeline::peak_rss;
pub mod train_step;

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Int, Tensor};
use rsrefseg::encoders::{SiglipConfig, SiglipTextTower, SiglipVisionTower};
use rsrefseg::nn::lora::LoraModule;
use rsrefseg::prompter::PrompterConfig;
use rsrefseg::sam::mask_decoder::HighResFeatures;
use rsrefseg::sam::image_encoder::ImageEncoderOutput;
use rsrefseg::sam::{Sam2Config, Sam2ImageFeatures};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

/// The benchmarked stages, in pipeline order.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// SigLIP vision tower at its native size.
    SiglipVision,
    /// SigLIP text tower.
    SiglipText,
    /// Hiera trunk + FPN neck + high-resolution projections (`Sam2::encode_image`).
    HieraFpn,
    /// Cascaded prompter, dense prompt included.
    Prompter,
    /// SAM prompt encoder (`mask_downscaling`) + mask decoder.
    Decoder,
}

impl Stage {
    pub const ALL: [Stage; 5] = [Stage::SiglipVision, Stage::SiglipText, Stage::HieraFpn, Stage::Prompter, Stage::Decoder];

    pub fn name(self) -> &'static str {
        match self {
            Stage::SiglipVision => "siglip-vision",
            Stage::SiglipText => "siglip-text",
            Stage::HieraFpn => "hiera-fpn",
            Stage::Prompter => "prompter",
            Stage::Decoder => "decoder",
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Timed repetitions per stage.
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Untimed runs before timing (first-touch allocation, lazy initialisation).
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Stages to run (comma-separated); all by default.
    #[arg(long, value_delimiter = ',')]
    pub stages: Vec<Stage>,
    /// CPU threads (rayon pool and matrixmultiply); all cores by default.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Tokens of the text-tower stage (the anchor has rows for 16 and 64).
    #[arg(long, default_value_t = 64)]
    pub text_len: usize,
    /// Words fed to the prompter (the anchor's sentence has 16 tokens).
    #[arg(long, default_value_t = 16)]
    pub prompter_text_len: usize,
    /// Use the tiny sizes of the reference fixtures instead of the `browser` sizes (smoke tests).
    #[arg(long)]
    pub tiny: bool,
    /// CPU backend to time: cpu (burn's Flex, the default of every command) or ndarray.
    #[arg(long, value_enum, default_value = "cpu")]
    pub backend: crate::backend::BackendKind,
    /// f32, or int8 products in the encoders (cpu backend; the prompter and decoder stages stay
    /// f32, as in the pipeline).
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: crate::backend::Precision,
    /// Also write the results as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Time the whole inference pipeline of a model given by --config and weights (as for
    /// `segment`) on --image and --text / --token-ids: each stage, the full pipeline per image
    /// and the re-query path (image encoded once).
    #[arg(long, conflicts_with_all = ["train_step", "tiny", "stages"], requires = "image")]
    pub pipeline: bool,
    /// Time one optimizer step (training forward, losses, backward, clipping, AdamW) of --config
    /// (a preset or model.json; random weights, random batch of --batch-size, every parameter
    /// trainable).
    #[arg(long, conflicts_with_all = ["tiny", "stages"], requires = "config")]
    pub train_step: bool,
    #[command(flatten)]
    pub model: crate::model_files::ModelArgs,
    /// Image of --pipeline.
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// Sentence of --pipeline (needs the tokenizer).
    #[arg(long, conflicts_with = "token_ids")]
    pub text: Option<String>,
    /// Token ids of --pipeline instead of --text (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub token_ids: Option<Vec<i64>>,
    /// Samples per batch of --train-step.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
}

/// Median and minimum of repeated timings (ms).
#[derive(Serialize, Debug, Clone, Copy)]
pub struct MedianMin {
    pub median: f64,
    pub min: f64,
}

/// Milliseconds since `t`.
pub fn elapsed_ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

pub fn median_min(times: &[f64]) -> MedianMin {
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    MedianMin { median, min: sorted.first().copied().unwrap_or(f64::NAN) }
}

/// Model sizes of one benchmark run.
struct Sizes {
    label: &'static str,
    siglip: SiglipConfig,
    sam: Sam2Config,
    prompter: PrompterConfig,
}

impl Sizes {
    /// The `browser` configuration (SigLIP2-base-patch16-512, SAM 2.1-tiny, d1 = 768, grid 32).
    /// The text tower is built with a 1024-row token table instead of 256000: the table is only
    /// indexed, so its size does not change the time, but 256000 random rows would cost 0.8 GB
    /// and seconds of initialisation.
    fn browser() -> Self {
        let mut siglip = SiglipConfig::siglip2_base_patch16_512();
        siglip.text_config.vocab_size = 1024;
        let sam = Sam2Config::tiny();
        let prompter = PrompterConfig::new(768, 256, 32);
        Self { label: "browser (SigLIP2-base-patch16-512 + SAM 2.1-tiny)", siglip, sam, prompter }
    }

    /// The tiny random model of the reference fixtures (d1 = 64, grid 8, SAM at 128²).
    fn tiny() -> Self {
        let siglip = SiglipConfig::from_hf_json(
            r#"{"model_type":"siglip",
            "text_config":{"vocab_size":96,"hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,
                           "num_attention_heads":4,"max_position_embeddings":16},
            "vision_config":{"hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,
                             "num_attention_heads":4,"image_size":64,"patch_size":8}}"#,
        )
        .expect("tiny SigLIP config");
        let prompter = PrompterConfig::new(64, 32, 8).with_num_heads(4).with_internal_dim(32).with_mlp_dim(32);
        Self { label: "tiny (reference fixture sizes)", siglip, sam: Sam2Config::reference_dev(), prompter }
    }

    fn mask_size(&self) -> usize {
        4 * self.sam.image_embedding_size()
    }
}

/// Result of one stage.
#[derive(Serialize, Debug, Clone)]
pub struct StageResult {
    pub stage: String,
    pub detail: String,
    pub gmac: f64,
    pub median_ms: f64,
    pub min_ms: f64,
    pub gflops: f64,
    pub times_ms: Vec<f64>,
    pub anchor_gmac: Option<f64>,
    pub anchor_ms: Option<f64>,
    pub anchor_gflops: Option<f64>,
    /// `median_ms / anchor_ms` (below 1 = faster than the anchor).
    pub ratio: Option<f64>,
}

#[derive(Serialize, Debug)]
struct Report<'a> {
    sizes: &'a str,
    backend: &'a str,
    threads: usize,
    reps: usize,
    warmup: usize,
    stages: &'a [StageResult],
}

pub fn run(args: BenchArgs) -> Result<()> {
    anyhow::ensure!(args.text_len >= 1 && args.prompter_text_len >= 1, "--text-len and --prompter-text-len must be at least 1");
    if !args.backend.is_cpu() {
        bail!("bench times the CPU backends only: use --backend cpu or --backend ndarray");
    }
    if args.reps == 0 {
        bail!("--reps must be at least 1");
    }
    let threads = crate::configure_threads(args.threads)?;
    if args.precision != crate::backend::Precision::F32 && args.train_step {
        bail!("--precision {} is an inference precision: --train-step runs in f32", args.precision.name());
    }
    let (backend, precision) = (args.backend, args.precision);
    crate::backend::dispatch(backend, precision, None, Bench { args, threads })
}

/// How every benchmark mode runs and reports: repetitions, threads, JSON output, backend name.
pub struct RunSettings<'a> {
    pub reps: usize,
    pub warmup: usize,
    pub threads: usize,
    pub json: Option<&'a PathBuf>,
    /// `--backend` name, for the report.
    pub backend: &'a str,
}

/// The benchmark body, generic over the CPU backend `--backend` picks.
struct Bench {
    args: BenchArgs,
    threads: usize,
}

impl crate::backend::BackendJob for Bench {
    type Output = ();

    fn run<B: burn::tensor::backend::AutodiffBackend>(self, devices: Vec<B::Device>) -> Result<()> {
        let Bench { args, threads } = self;
        let device = &devices[0];
        let backend = args.backend.name();
        let run = RunSettings { reps: args.reps, warmup: args.warmup, threads, json: args.json.as_ref(), backend };
        if args.pipeline {
            let image = args.image.as_deref().expect("clap requires --image");
            return pipeline::run::<B::InnerBackend>(
                pipeline::PipelineArgs {
                    model: &args.model,
                    precision: args.precision,
                    image,
                    text: crate::model_files::TextArgs { text: args.text.clone(), token_ids: args.token_ids.clone() },
                    run,
                },
                device,
            );
        }
        if args.train_step {
            let name = args.model.config.as_deref().expect("clap requires --config");
            return train_step::run::<B>(
                train_step::TrainStepArgs {
                    config: crate::eval_cmd::resolve_config(name)?,
                    config_name: name,
                    batch_size: args.batch_size.max(1),
                    text_len: args.prompter_text_len,
                    run,
                },
                device,
            );
        }
        let sizes = if args.tiny { Sizes::tiny() } else { Sizes::browser() };
        let stages = if args.stages.is_empty() { Stage::ALL.to_vec() } else { args.stages.clone() };
        let text_len = args.text_len.min(sizes.siglip.text_config.max_position_embeddings);
        let prompter_len = args.prompter_text_len.min(sizes.siglip.text_config.max_position_embeddings);

        B::InnerBackend::seed(device, 0);
        eprintln!(
            "rsrefseg bench: {}, {backend} (CPU), {threads} threads, {} warm-up + {} timed runs",
            sizes.label, args.warmup, args.reps
        );
        let mut results = Vec::new();
        for stage in stages {
            eprintln!("  {} …", stage.name());
            let r = bench_stage::<B::InnerBackend>(stage, &sizes, text_len, prompter_len, &args, device)
                .with_context(|| format!("stage {}", stage.name()))?;
            results.push(r);
        }
        print_table(&results, &sizes, threads, &args);
        if let Some(path) = &args.json {
            let report = Report { sizes: sizes.label, backend, threads, reps: args.reps, warmup: args.warmup, stages: &results };
            std::fs::write(path, serde_json::to_string_pretty(&report)?).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}

fn normal<B: Backend, const D: usize>(shape: [usize; D], device: &B::Device) -> Tensor<B, D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

/// Run `f` `warmup` times, then `reps` timed times. The backend is synchronised before the clock
/// stops, so that an asynchronous backend cannot report queued work as done.
fn time_runs<B: Backend>(warmup: usize, reps: usize, device: &B::Device, mut f: impl FnMut()) -> Result<Vec<f64>> {
    for _ in 0..warmup {
        f();
    }
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        f();
        B::sync(device).map_err(|e| anyhow::anyhow!("backend sync failed: {e:?}"))?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(times)
}

fn bench_stage<B: Backend>(
    stage: Stage,
    sizes: &Sizes,
    text_len: usize,
    prompter_len: usize,
    args: &BenchArgs,
    device: &B::Device,
) -> Result<StageResult> {
    let (warmup, reps) = (args.warmup, args.reps);
    let int8 = args.precision == crate::backend::Precision::Int8;
    let vc = &sizes.siglip.vision_config;
    let tc = &sizes.siglip.text_config;
    let (detail, macs, times) = match stage {
        Stage::SiglipVision => {
            let tower = SiglipVisionTower::<B>::new(vc, device).map_err(anyhow::Error::msg)?;
            let tower = if int8 { tower.quantize_int8() } else { tower };
            let pixels = normal::<B, 4>([1, vc.num_channels, vc.image_size, vc.image_size], device);
            let times = time_runs::<B>(warmup, reps, device, || {
                let _ = tower.forward(pixels.clone());
            })?;
            (format!("{}² input, {} tokens", vc.image_size, vc.grid() * vc.grid()), flops::siglip_vision(vc), times)
        }
        Stage::SiglipText => {
            let tower = SiglipTextTower::<B>::new(tc, device).map_err(anyhow::Error::msg)?;
            let tower = if int8 { tower.quantize_int8() } else { tower };
            let ids = Tensor::<B, 2, Int>::random([1, text_len], Distribution::Uniform(0.0, tc.vocab_size as f64), device);
            let times = time_runs::<B>(warmup, reps, device, || {
                let _ = tower.forward(ids.clone(), None);
            })?;
            (format!("{text_len} tokens"), flops::siglip_text(tc, text_len), times)
        }
        Stage::HieraFpn => {
            let sam = sizes.sam.init::<B>(device);
            let sam = if int8 { sam.quantize_encoder_int8() } else { sam };
            let s = sizes.sam.image_size;
            let pixels = normal::<B, 4>([1, 3, s, s], device);
            let times = time_runs::<B>(warmup, reps, device, || {
                let _ = sam.encode_image(pixels.clone());
            })?;
            (format!("{s}² input"), flops::hiera_fpn(&sizes.sam), times)
        }
        Stage::Prompter => {
            let p = &sizes.prompter;
            let prompter = p.init::<B>(device);
            let d1 = p.clip_dim;
            let v = normal::<B, 3>([1, p.grid * p.grid, d1], device);
            let t_word = normal::<B, 3>([1, prompter_len, d1], device);
            let t_sent = normal::<B, 2>([1, d1], device);
            let scale = Tensor::<B, 1>::from_floats([(1.0f32 / 0.07).ln()], device);
            let bias = Tensor::<B, 1>::from_floats([-10.0f32], device);
            let m = sizes.mask_size();
            let times = time_runs::<B>(warmup, reps, device, || {
                let _ = prompter.forward(v.clone(), t_word.clone(), t_sent.clone(), scale.clone(), bias.clone(), m);
            })?;
            (format!("d1 {d1}, grid {}, {prompter_len} words, dense at {m}²", p.grid), flops::prompter(p, prompter_len, m), times)
        }
        Stage::Decoder => {
            let c = &sizes.sam;
            let sam = c.init::<B>(device);
            let (d, e, m) = (c.d_model, c.image_embedding_size(), sizes.mask_size());
            let n_sparse = sizes.prompter.num_prompts;
            // Image features as `Sam2::encode_image` would leave them (random values).
            let features = Sam2ImageFeatures {
                image_embed: normal::<B, 4>([1, d, e, e], device),
                high_res: c.use_high_res_features.then(|| HighResFeatures {
                    feat_s0: normal::<B, 4>([1, d / 8, 4 * e, 4 * e], device),
                    feat_s1: normal::<B, 4>([1, d / 4, 2 * e, 2 * e], device),
                }),
                backbone: ImageEncoderOutput { trunk: Vec::new(), fpn: Vec::new() },
                // Computed with the image (`Sam2::encode_image`), as a re-query finds it.
                image_pe: sam.image_pe(),
            };
            let sparse = normal::<B, 3>([1, n_sparse, d], device);
            let dense_prompt = normal::<B, 4>([1, 1, m, m], device);
            let times = time_runs::<B>(warmup, reps, device, || {
                let dense = sam.sam_prompt_encoder.mask_downscaling.forward(dense_prompt.clone());
                let _ = sam.decode(&features, sparse.clone(), dense, false, false);
            })?;
            (format!("{n_sparse} sparse prompts, {e}² embedding"), flops::decoder(c, n_sparse), times)
        }
    };
    let MedianMin { median: median_ms, min: min_ms } = median_min(&times);
    let anchor = (!args.tiny).then(|| anchor::anchor(stage.name(), text_len)).flatten();
    Ok(StageResult {
        stage: stage.name().to_string(),
        detail,
        gmac: macs / 1e9,
        median_ms,
        min_ms,
        gflops: 2.0 * macs / (median_ms * 1e-3) / 1e9,
        times_ms: times,
        anchor_gmac: anchor.map(|a| a.gmac),
        anchor_ms: anchor.map(|a| a.median_ms),
        anchor_gflops: anchor.map(|a| a.gflops),
        ratio: anchor.map(|a| median_ms / a.median_ms),
    })
}

fn print_table(results: &[StageResult], sizes: &Sizes, threads: usize, args: &BenchArgs) {
    let opt = |x: Option<f64>, prec: usize| x.map_or_else(|| "-".to_string(), |v| format!("{v:.prec$}"));
    println!("sizes: {}", sizes.label);
    println!(
        "backend: {} (CPU), precision: {}, threads: {threads}, warm-up: {}, reps: {}",
        args.backend.name(),
        args.precision.label(),
        args.warmup,
        args.reps
    );
    println!();
    println!("| stage | work | GMAC | median ms | min ms | GFLOP/s | anchor GMAC | anchor ms | anchor GFLOP/s | ratio |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in results {
        println!(
            "| {} | {} | {:.2} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {} |",
            r.stage,
            r.detail,
            r.gmac,
            r.median_ms,
            r.min_ms,
            r.gflops,
            opt(r.anchor_gmac, 1),
            opt(r.anchor_ms, 0),
            opt(r.anchor_gflops, 0),
            opt(r.ratio, 2)
        );
    }
    let sum = |f: &dyn Fn(&StageResult) -> Option<f64>| results.iter().map(f).sum::<Option<f64>>();
    let total_ms = sum(&|r| Some(r.median_ms)).unwrap_or(0.0);
    let total_gmac = sum(&|r| Some(r.gmac)).unwrap_or(0.0);
    let anchor_total = sum(&|r| r.anchor_ms);
    println!(
        "| total | sum of the stages above | {:.2} | {:.1} | - | {:.1} | {} | {} | - | {} |",
        total_gmac,
        total_ms,
        2.0 * total_gmac / (total_ms * 1e-3),
        opt(sum(&|r| r.anchor_gmac), 1),
        opt(anchor_total, 0),
        opt(anchor_total.map(|a| total_ms / a), 2)
    );
    if !args.tiny {
        println!();
        println!(
            "ratio = median / anchor median (target ≤ {:.1}); anchor: PyTorch eager, 2 threads, same machine kind \
             (full pipeline {:.0} ms, re-query {:.0} ms).",
            anchor::TARGET_RATIO,
            anchor::FULL_PIPELINE_MS,
            anchor::REQUERY_MS
        );
    }
}
