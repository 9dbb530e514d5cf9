//! `rsrefseg synth`: write the synthetic benchmark (PNG images + train/val/test JSONL with COCO
//! RLE masks, the layout of the real datasets) for training and evaluating the shipped model.

use anyhow::{Context, Result};
use clap::Args;
use rsrefseg::synth::{write_dataset, SynthConfig};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Output directory (created): images/ and {train,val,test}.jsonl.
    #[arg(long)]
    pub out: PathBuf,
    /// Seed; the same seed gives byte-identical files.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Number of images (scenes); each carries several expressions.
    #[arg(long, default_value_t = 1000)]
    pub n: usize,
    /// Image side in pixels.
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// Expressions per image.
    #[arg(long, default_value_t = 4)]
    pub expressions: usize,
    /// Fewest objects per image.
    #[arg(long, default_value_t = 2)]
    pub min_objects: usize,
    /// Most objects per image.
    #[arg(long, default_value_t = 8)]
    pub max_objects: usize,
    /// Share of images in the validation split.
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f32,
    /// Share of images in the test split.
    #[arg(long, default_value_t = 0.1)]
    pub test_fraction: f32,
}

pub fn run(args: SynthArgs) -> Result<()> {
    // A scene holds its image and one mask per object at full size (≈ (3 + objects) bytes per
    // pixel, plus the renderer's float buffers): 4096² with 64 objects stays near 1 GB.
    anyhow::ensure!((64..=4096).contains(&args.size), "--size must be between 64 and 4096 pixels, not {}", args.size);
    anyhow::ensure!(args.max_objects <= 64, "--max-objects must be at most 64, not {}", args.max_objects);
    anyhow::ensure!((1..=64).contains(&args.expressions), "--expressions must be between 1 and 64, not {}", args.expressions);
    anyhow::ensure!(
        [args.val_fraction, args.test_fraction].iter().all(|f| (0.0..1.0).contains(f)),
        "--val-fraction and --test-fraction must each be in [0, 1)"
    );
    anyhow::ensure!(
        args.min_objects >= 1 && args.min_objects <= args.max_objects,
        "need 1 ≤ --min-objects ≤ --max-objects"
    );
    anyhow::ensure!(
        (0.0..1.0).contains(&(args.val_fraction + args.test_fraction)),
        "--val-fraction + --test-fraction must be below 1"
    );
    let config = SynthConfig {
        image_size: args.size,
        min_objects: args.min_objects,
        max_objects: args.max_objects,
        expressions_per_scene: args.expressions,
        val_fraction: args.val_fraction,
        test_fraction: args.test_fraction,
        ..SynthConfig::default()
    };
    let start = std::time::Instant::now();
    let summary = write_dataset(&args.out, &config, args.seed, args.n)
        .with_context(|| format!("writing the dataset to {}", args.out.display()))?;
    println!(
        "{} images, samples train/val/test {}/{}/{} (simple {}, relational {}) in {} ({:.1} s)",
        summary.images,
        summary.samples[0],
        summary.samples[1],
        summary.samples[2],
        summary.simple,
        summary.relational,
        args.out.display(),
        start.elapsed().as_secs_f32()
    );
    Ok(())
}
