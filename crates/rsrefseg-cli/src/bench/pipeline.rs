//! `rsrefseg bench --pipeline`: the whole inference pipeline on given weights and inputs, timed
//! per stage, per image (preprocessing … mask at the original size) and per re-query (the image
//! encoded once). The JSON it writes has the schema of the PyTorch side of
//! `tools/bench-vs-pytorch`, which runs the same weights and inputs in another process.

use super::{elapsed_ms as ms, median_min, MedianMin};
use crate::model_files::{self, ModelArgs, TextArgs};
use anyhow::{Context, Result};
use burn::module::Module;
use burn::tensor::backend::Backend;
use rsrefseg::post::{binary_mask, logits_at_original_size};
use rsrefseg::pre::{clip_pixels, sam_pixels, to_x01};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

/// Stages in pipeline order (the names of the PyTorch side).
const STAGES: [&str; 7] = ["preprocess", "siglip_vision", "hiera_fpn", "siglip_text", "prompter", "decoder", "postprocess"];

pub struct PipelineArgs<'a> {
    pub model: &'a ModelArgs,
    pub precision: crate::backend::Precision,
    pub image: &'a Path,
    pub text: TextArgs,
    pub run: super::RunSettings<'a>,
}


/// Peak resident memory of this process so far (`VmHWM`, Linux), in bytes.
pub(crate) fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

pub fn run<B: Backend>(args: PipelineArgs, device: &B::Device) -> Result<()> {
    let device = device.clone();
    let config = model_files::load_config(args.model)?;
    let t = Instant::now();
    let model = args.precision.prepare(model_files::load_model::<B>(args.model, &config, &device)?);
    let load_ms = ms(t);
    let peak_after_load = peak_rss();
    let img = model_files::read_image(args.image)?;
    let tokens = model_files::tokens(&args.text, args.model, &config)?;
    let s = config.image_size();
    eprintln!(
        "rsrefseg bench --pipeline: {} parameters, {}, image {}×{}, {} tokens, {} threads, {} warm-up + {} timed runs",
        model.num_params(),
        args.precision.label(),
        img.width,
        img.height,
        tokens.ids.len(),
        args.run.threads,
        args.run.warmup,
        args.run.reps
    );

    // One full pass, each stage timed (the CPU backend computes eagerly, so a stage's time is
    // its own work). Returns the stage times and the mask.
    let pass = || -> Result<(Vec<f64>, Vec<u8>, f32)> {
        let mut times = Vec::with_capacity(STAGES.len());
        let t = Instant::now();
        let (x01, geometry) = to_x01::<B>(&img, s, &device);
        times.push(ms(t));
        let t = Instant::now();
        let v = model.siglip.vision_model.forward(clip_pixels(x01.clone(), model.clip_size));
        times.push(ms(t));
        let t = Instant::now();
        let sam = model.sam.encode_image(sam_pixels(x01));
        times.push(ms(t));
        let encoding = rsrefseg::model::ImageEncoding { v, sam };
        let (mask, iou, query_times) = query(&model, &encoding, &tokens, geometry, &device)?;
        times.extend(query_times);
        Ok((times, mask, iou))
    };
    let mut full = Vec::new();
    let mut per_stage: Vec<Vec<f64>> = vec![Vec::new(); STAGES.len()];
    let mut last = None;
    for rep in 0..args.run.warmup + args.run.reps {
        let t = Instant::now();
        let (times, mask, iou) = pass()?;
        let total = ms(t);
        if rep >= args.run.warmup {
            full.push(total);
            for (acc, t) in per_stage.iter_mut().zip(times) {
                acc.push(t);
            }
        }
        last = Some((mask, iou));
    }
    let (mask, iou) = last.expect("at least one run");

    // Re-query: the image encoded once, then text + prompter + decoder + post-processing.
    let (x01, geometry) = to_x01::<B>(&img, s, &device);
    let encoding = model.encode_image(x01);
    let mut requery = Vec::new();
    for rep in 0..args.run.warmup + args.run.reps {
        let t = Instant::now();
        query(&model, &encoding, &tokens, geometry, &device)?;
        if rep >= args.run.warmup {
            requery.push(ms(t));
        }
    }

    let stages: BTreeMap<&str, MedianMin> = STAGES.iter().zip(&per_stage).map(|(n, t)| (*n, median_min(t))).collect();
    let full = median_min(&full);
    let requery = median_min(&requery);
    let area = mask.iter().filter(|&&m| m != 0).count();
    println!("| stage | median ms | min ms |\n|---|---:|---:|");
    for n in STAGES {
        println!("| {n} | {:.1} | {:.1} |", stages[n].median, stages[n].min);
    }
    println!("| **full pipeline** | {:.1} | {:.1} |", full.median, full.min);
    println!("| **re-query** | {:.1} | {:.1} |", requery.median, requery.min);
    println!("re-query / full = {:.3}; mask {area} px, predicted IoU {iou:.4}; weights loaded in {load_ms:.0} ms", requery.median / full.median);
    let gib = |b: Option<u64>| b.map_or("-".to_string(), |b| format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64));
    println!(
        "peak resident memory: {} after loading, {} in all; weights {}",
        gib(peak_after_load),
        gib(peak_rss()),
        gib(Some(model.num_params() as u64 * 4))
    );

    if let Some(path) = args.run.json {
        let mask_png = path.with_extension("mask.png");
        image::GrayImage::from_raw(img.width as u32, img.height as u32, mask.iter().map(|&m| m * 255).collect())
            .context("mask size")?
            .save(&mask_png)
            .with_context(|| format!("writing {}", mask_png.display()))?;
        let report = json!({
            "impl": "rsrefseg",
            "mode": "pipeline",
            "backend": args.run.backend,
            "precision": args.precision.name(),
            "precision_label": args.precision.label(),
            "threads": args.run.threads,
            "reps": args.run.reps,
            "warmup": args.run.warmup,
            "stages_ms": stages,
            "full_ms": full,
            "requery_ms": requery,
            "load_ms": load_ms,
            "peak_rss_after_load": peak_after_load,
            "peak_rss": peak_rss(),
            "weights_bytes": model.num_params() * 4,
            "mask_area": area,
            "iou_pred": iou,
            "mask_png": mask_png.display().to_string(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&report)?).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Text tower, prompter, decoder, post-processing (mask at the original size, read back).
/// Returns the 0/1 mask, the predicted IoU and the four stage times.
fn query<B: Backend>(
    model: &rsrefseg::model::RsRefSeg<B>,
    encoding: &rsrefseg::model::ImageEncoding<B>,
    tokens: &model_files::Tokens,
    geometry: rsrefseg::pre::Geometry,
    device: &B::Device,
) -> Result<(Vec<u8>, f32, [f64; 4])> {
    let t = Instant::now();
    let (ids, mask) = tokens.tensors::<B>(device);
    let text = model.encode_text(ids, Some(mask));
    let t_text = ms(t);
    let t = Instant::now();
    let prompter = model.prompt(encoding, &text);
    let t_prompter = ms(t);
    let t = Instant::now();
    let out = model.decode(encoding, text, prompter, false);
    let t_decoder = ms(t);
    let t = Instant::now();
    let iou: f32 = out.iou.clone().into_data().convert::<f32>().to_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?[0];
    let bits = binary_mask(logits_at_original_size(out.mask_logits, geometry))
        .int()
        .into_data()
        .convert::<i32>()
        .into_vec::<i32>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mask: Vec<u8> = bits.into_iter().map(|v| u8::from(v != 0)).collect();
    Ok((mask, iou, [t_text, t_prompter, t_decoder, ms(t)]))
}
