//! `rsrefseg`: the command line tool of the rsrefseg model crate.
//!
//! - `bench`: time every stage on random weights and compare with the PyTorch anchor;
//! - `inspect`: run one image and sentence and write every named intermediate to safetensors;
//! - `segment`: run one image and sentence and write the mask, an overlay, the localization
//!   heat map and a JSON summary;
//! - `synth`: write the synthetic benchmark (images + train/val/test JSONL with RLE masks).

mod backend;
mod bench;
mod eval_cmd;
mod export_cmd;
mod fetch_cmd;
mod inspect;
mod model_files;
mod plots;
mod scene_cmd;
mod segment;
mod stage_cmd;
mod synth_cmd;
mod train_cmd;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "rsrefseg", version, about = "RSRefSeg 2 referring segmentation of aerial images (burn)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Time each model stage on random weights (CPU) and compare with the PyTorch anchor.
    Bench(bench::BenchArgs),
    /// Write every named intermediate of one image + sentence to a safetensors file.
    Inspect(inspect::InspectArgs),
    /// Segment the object a sentence refers to: mask, overlay and heat-map PNGs plus a JSON summary.
    Segment(segment::SegmentArgs),
    /// Write the synthetic referring-segmentation benchmark (PNG + JSONL with COCO RLE masks).
    Synth(synth_cmd::SynthArgs),
    /// Write a large synthetic scene (GeoTIFF, up to 8192²) with referring expressions unique in
    /// the whole scene and their masks (truth.json), for the tiled whole-scene pipeline.
    SynthScene(scene_cmd::SynthSceneArgs),
    /// Evaluate the whole-scene pipeline on a `synth-scene` directory: IoU, time, peak memory.
    EvalScene(scene_cmd::EvalSceneArgs),
    /// Train on a JSONL dataset (checkpoints, resume, validation, best model, plots).
    Train(train_cmd::TrainArgs),
    /// One stage of the nano model's staged recipe on scenes generated on the fly
    /// (vision-language, promptable, referring; resumable).
    Stage(stage_cmd::StageArgs),
    /// Evaluate a model on a dataset split: gIoU, cIoU, Pr@X, per category and per tag.
    Eval(eval_cmd::EvalArgs),
    /// Write the model as one web bundle (configuration, tokenizer, q8/q4 weights) for the browser page.
    ExportWeb(export_cmd::ExportWebArgs),
    /// Download preset weights (SigLIP2, SAM 2.1, RSRefSeg 2) and hub datasets, resumable and checksum-verified.
    Fetch(fetch_cmd::FetchArgs),
    /// Print a model configuration preset as JSON (the `--config` file format).
    Config {
        /// Preset name.
        #[arg(long, value_enum, default_value = "browser")]
        preset: Preset,
        /// The preset with one of the paper's prompter ablations.
        #[arg(long, value_enum)]
        ablation: Option<Ablation>,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Ablation {
    /// Single-stage prompter: no first-order interaction blocks (image tokens meet only t2).
    SingleStage,
    /// No dense prompt: SAM gets its learned "no mask" embedding.
    NoDense,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Preset {
    /// SigLIP2-so400m-patch16-512 + SAM 2.1-large (the paper's model).
    Paper,
    /// SigLIP2-base-patch16-512 + SAM 2.1-tiny.
    Browser,
    /// The tiny random model of the reference fixtures.
    ReferenceDev,
    /// The project's own small model (≈ 4.5 M parameters), trained on the synthetic benchmark.
    Nano,
}

/// Size the CPU thread pools: rayon's global pool (burn-ndarray's parallel loops) and
/// matrixmultiply's GEMM threads, which read `MATMUL_NUM_THREADS` once, at their first use.
/// Returns the number of threads in use.
pub fn configure_threads(threads: Option<usize>) -> Result<usize> {
    let n = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    anyhow::ensure!(n >= 1, "--threads must be at least 1");
    std::env::set_var("MATMUL_NUM_THREADS", n.to_string());
    #[cfg(feature = "blas")]
    {
        // burn's CPU backend already runs the matrices of a batch on its threads (and the
        // model splits long products into batches, `rsrefseg::nn::linear`); OpenBLAS threads on
        // top of that oversubscribe the cores and serialise concurrent calls. One OpenBLAS
        // thread per caller, unless OPENBLAS_NUM_THREADS says otherwise.
        extern "C" {
            fn openblas_set_num_threads(n: std::os::raw::c_int);
        }
        if std::env::var_os("OPENBLAS_NUM_THREADS").is_none() {
            // SAFETY: a plain setter of OpenBLAS, called before any BLAS work starts.
            unsafe { openblas_set_num_threads(1) };
        }
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .map_err(|e| anyhow::anyhow!("cannot size the thread pool: {e}"))?;
    Ok(n)
}

/// The CPU backend allocates a fresh buffer for nearly every tensor operation, many of them tens
/// of MB. glibc serves those with `mmap` and returns them with `munmap` at once, so every
/// operation paid for zeroed fresh pages (page faults were about a fifth of Hiera's profile). Keep
/// everything in the heap and never trim it: freed buffers are reused. Measured on the `browser`
/// stages: Hiera 11.8 → 8.3 s, SigLIP vision 5.6 → 4.4 s; peak memory is reported by
/// `bench --pipeline`.
fn configure_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called first thing in main, before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

fn main() -> Result<()> {
    configure_allocator();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Bench(args) => bench::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Segment(args) => segment::run(args),
        Command::SynthScene(args) => scene_cmd::synth_scene(args),
        Command::EvalScene(args) => scene_cmd::eval_scene(args),
        Command::Synth(args) => synth_cmd::run(args),
        Command::Train(args) => train_cmd::run(args),
        Command::Stage(args) => stage_cmd::run(args),
        Command::Eval(args) => eval_cmd::run(args),
        Command::ExportWeb(args) => export_cmd::run(args),
        Command::Fetch(args) => fetch_cmd::run(args),
        Command::Config { preset, ablation } => {
            use rsrefseg::config::RsRefSegConfig;
            let mut config = match preset {
                Preset::Paper => RsRefSegConfig::paper(),
                Preset::Browser => RsRefSegConfig::browser(),
                Preset::ReferenceDev => RsRefSegConfig::reference_dev(),
                Preset::Nano => RsRefSegConfig::nano(),
            };
            match ablation {
                Some(Ablation::SingleStage) => config.prompter.first_order_depth = 0,
                Some(Ablation::NoDense) => config.prompter.dense_prompt = false,
                None => {}
            }
            println!("{}", config.to_json());
            Ok(())
        }
    }
}
