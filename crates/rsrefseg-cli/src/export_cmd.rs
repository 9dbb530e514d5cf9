//! `rsrefseg export-web`: write a model as one web bundle (`rsrefseg::export`: configuration,
//! tokenizer and block-quantised weights in a single file) for the browser page, read it back and
//! load it as the page will, and print its sizes per storage type against `f32`.
//!
//! `--estimate` prints the sizes computed from the configuration's parameter shapes instead
//! (no weights needed), e.g. `rsrefseg export-web --config browser --estimate`.

use crate::eval_cmd::resolve_config;
use anyhow::{anyhow, Context, Result};
use clap::Args;
use rsrefseg::checkpoint::{read_tensors, LoadOptions};
use rsrefseg::export::{
    estimate_bundle, write_bundle, Bundle, BundleTensors, ExportOptions, Quant, TokenTablePlacement,
};
use rsrefseg::model::load_rsrefseg_tensors;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct ExportWebArgs {
    /// Model configuration: a preset name (nano, browser, paper, reference-dev) or a model.json.
    #[arg(long)]
    pub config: String,
    /// Full-model weights (this crate's names or the released RSRefSeg 2 state dict; safetensors or .pt).
    #[arg(long, required_unless_present = "estimate")]
    pub weights: Option<PathBuf>,
    /// The SigLIP checkpoint's `tokenizer.json` (`models/nano/tokenizer.json` for nano), stored in the bundle.
    #[arg(long, required_unless_present = "estimate")]
    pub tokenizer: Option<PathBuf>,
    /// The bundle to write (conventionally `model.rsb`).
    #[arg(long, required_unless_present = "estimate")]
    pub out: Option<PathBuf>,
    /// Storage of the Linear weights of SigLIP, Hiera and the prompter.
    #[arg(long, value_enum, default_value = "q8")]
    pub quant: QuantArg,
    /// Store every tensor that is not quantised, and the block scales, as f16.
    #[arg(long)]
    pub half: bool,
    /// Keep only the token-embedding rows of this corpus (one sentence per line) and the special tokens.
    #[arg(long)]
    pub vocab_corpus: Option<PathBuf>,
    /// Values per quantisation block (along the input dimension).
    #[arg(long, default_value_t = 32)]
    pub block: usize,
    /// Print the sizes computed from the configuration's parameter shapes and exit (no weights).
    #[arg(long)]
    pub estimate: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum QuantArg {
    /// Symmetric int8 per block of 32, one scale per block.
    Q8,
    /// Symmetric int4 per block of 32, two values per byte.
    Q4,
    /// No quantisation.
    F32,
}

fn read_text(path: &Path, what: &str) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read the {what} {}", path.display()))
}

pub fn run(args: ExportWebArgs) -> Result<()> {
    type B = crate::backend::CpuBackend;
    let device = Default::default();
    // Blocks must tile the input widths of every quantised layer (all multiples of 32 in the
    // presets); a block that tiles none would leave every layer in f32 without a word.
    anyhow::ensure!(
        args.block.is_power_of_two() && (8..=1024).contains(&args.block),
        "--block must be a power of two from 8 to 1024, not {}",
        args.block
    );
    let config = resolve_config(&args.config)?;
    let tokenizer_json = args.tokenizer.as_deref().map(|p| read_text(p, "tokenizer")).transpose()?;
    let opts = ExportOptions {
        quant: match args.quant {
            QuantArg::Q8 => Quant::Q8,
            QuantArg::Q4 => Quant::Q4,
            QuantArg::F32 => Quant::F32,
        },
        half: args.half,
        block: args.block,
        vocab_corpus: args.vocab_corpus.as_deref().map(|p| read_text(p, "vocabulary corpus")).transpose()?,
    };

    if args.estimate {
        let summary = estimate_bundle::<B>(&config, tokenizer_json.as_deref(), &opts, &device)?;
        let note = if tokenizer_json.is_none() { "; tokenizer not included (pass --tokenizer)" } else { "" };
        println!("bundle of --config {} computed from the parameter shapes{note}:\n{summary}", args.config);
        return Ok(());
    }
    let (Some(weights), Some(tokenizer_json), Some(out)) = (&args.weights, &tokenizer_json, &args.out) else {
        unreachable!("clap requires --weights, --tokenizer and --out without --estimate");
    };

    let tensors = read_tensors(weights).map_err(|e| anyhow!("{e}"))?;
    let (model, _) = load_rsrefseg_tensors::<B>(tensors, &config, &device, LoadOptions::default())
        .map_err(|e| anyhow!("{}: {e}", weights.display()))?;
    let bytes = write_bundle(&config, tokenizer_json, &BundleTensors::from_model(&model), &opts)?;
    drop(model);

    // Written next to the target, then renamed: an interrupted export leaves no half bundle.
    let partial = out.with_extension("rsb.partial");
    std::fs::write(&partial, &bytes).with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::rename(&partial, out).with_context(|| format!("cannot write {}", out.display()))?;

    // Read it back and load it the way the page does (every tensor against the model).
    let bundle = Bundle::from_bytes(bytes)?;
    bundle
        .load_model_with::<B>(&device, TokenTablePlacement::Host)
        .map_err(|e| anyhow!("{} does not load back: {e}", out.display()))?;
    println!("wrote {} (read back and loaded: ok)\n{}", out.display(), bundle.summary());
    Ok(())
}
