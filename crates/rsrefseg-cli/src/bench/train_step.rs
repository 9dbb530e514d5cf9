//! `rsrefseg bench --train-step`: one optimizer step of the training recipe (training-mode
//! forward, the four loss terms, backward, global-norm clipping, AdamW) on random weights and a
//! random batch, timed by phase. The JSON it writes has the schema of the PyTorch side of
//! `tools/bench-vs-pytorch`.

use super::{elapsed_ms as ms, median_min, MedianMin};
use anyhow::{Context, Result};
use burn::module::{AutodiffModule, Module};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, ElementConversion, Int, Tensor};
use rsrefseg::config::RsRefSegConfig;
use rsrefseg::loss::{LossWeights, RefSegLoss};
use rsrefseg::train::clip::clip_global_norm;
use rsrefseg::train::{Batch, OptimConfig, TrainModel};
use serde_json::json;
use std::time::Instant;

pub struct TrainStepArgs<'a> {
    pub config: RsRefSegConfig,
    pub config_name: &'a str,
    pub batch_size: usize,
    pub text_len: usize,
    pub run: super::RunSettings<'a>,
}


pub fn run<B: AutodiffBackend>(args: TrainStepArgs, device: &B::Device) -> Result<()> {
    let device = device.clone();
    B::seed(&device, 0);
    let config = &args.config;
    let (b, s) = (args.batch_size, config.image_size());
    let l = args.text_len.min(config.siglip.text_config.max_position_embeddings);
    let vocab = config.siglip.text_config.vocab_size;
    // Everything trainable (training from scratch, as the nano model is trained).
    let mut model = TrainModel::<B>::new(config, None, &device).map_err(anyhow::Error::msg)?;
    let batch = Batch {
        x01: Tensor::random([b, 3, s, s], Distribution::Uniform(0.0, 1.0), &device),
        gt: Tensor::<B, 4>::random([b, 1, s, s], Distribution::Uniform(0.0, 1.0), &device).greater_elem(0.7).float(),
        input_ids: Tensor::<B, 2, Int>::random([b, l], Distribution::Uniform(0.0, vocab as f64), &device),
        attention_mask: Tensor::<B, 2, Int>::ones([b, l], &device),
    };
    let loss = RefSegLoss::new(LossWeights::code());
    let oc = OptimConfig::default();
    let mut optim = AdamWConfig::new()
        .with_weight_decay(oc.weight_decay as f32)
        .with_beta_1(oc.beta1 as f32)
        .with_beta_2(oc.beta2 as f32)
        .with_epsilon(oc.epsilon as f32)
        .init::<B, TrainModel<B>>();
    let trainable = model.valid().num_params();
    eprintln!(
        "rsrefseg bench --train-step: {}, {trainable} parameters, batch {b} at {s}², {l} tokens, {} threads, {} warm-up + {} timed steps",
        args.config_name, args.run.threads, args.run.warmup, args.run.reps
    );
    let (mut fwd, mut bwd, mut opt, mut step) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for rep in 0..args.run.warmup + args.run.reps {
        let t0 = Instant::now();
        let terms = model.loss(&batch, &loss);
        // Read the loss (the trainer logs it), which also finishes any queued work.
        let total: f32 = terms.total.clone().inner().into_scalar().elem();
        let t_fwd = ms(t0);
        let t = Instant::now();
        let mut grads = GradientsParams::from_grads(terms.total.backward(), &model);
        let norm = clip_global_norm(&model, &mut grads, oc.grad_clip.unwrap_or(f64::INFINITY));
        let t_bwd = ms(t);
        let t = Instant::now();
        model = optim.step(1e-4, model, grads);
        <B as Backend>::sync(&device).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let t_opt = ms(t);
        let t_step = ms(t0);
        anyhow::ensure!(total.is_finite() && norm.is_finite(), "non-finite loss {total} / gradient norm {norm}");
        if rep >= args.run.warmup {
            fwd.push(t_fwd);
            bwd.push(t_bwd);
            opt.push(t_opt);
            step.push(t_step);
        }
    }
    let (fwd, bwd, opt, step): (MedianMin, MedianMin, MedianMin, MedianMin) =
        (median_min(&fwd), median_min(&bwd), median_min(&opt), median_min(&step));
    println!("| phase | median ms | min ms |\n|---|---:|---:|");
    for (n, m) in [("forward + loss", &fwd), ("backward + clip", &bwd), ("optimizer", &opt), ("**step**", &step)] {
        println!("| {n} | {:.1} | {:.1} |", m.median, m.min);
    }
    println!("{:.2} samples/s", b as f64 / (step.median * 1e-3));
    if let Some(path) = args.run.json {
        let report = json!({
            "impl": "rsrefseg",
            "mode": "train_step",
            "backend": args.run.backend,
            "config": args.config_name,
            "threads": args.run.threads,
            "batch_size": b,
            "text_len": l,
            "reps": args.run.reps,
            "warmup": args.run.warmup,
            "forward_ms": fwd,
            "backward_ms": bwd,
            "optimizer_ms": opt,
            "step_ms": step,
            "trainable_params": trainable,
        });
        std::fs::write(path, serde_json::to_string_pretty(&report)?).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
