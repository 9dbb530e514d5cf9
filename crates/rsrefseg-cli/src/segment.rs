//! `rsrefseg segment`: the mask of the object a sentence refers to, as image files and a JSON
//! summary.

use crate::backend::{dispatch, BackendArgs, BackendJob};
use crate::model_files::{self, ModelArgs, TextArgs};
use crate::pipeline;
use anyhow::{Context, Result};
use burn::tensor::activation::sigmoid;
use burn::tensor::backend::{AutodiffBackend, Backend};
use rsrefseg::host::HostTensor;
use rsrefseg::post::logits_at_original_size;
use rsrefseg::pre::RgbImage;
use rsrefseg::train::checkpoint_io::{lock_dir, write_atomic};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct SegmentArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Input image (PNG, JPEG, TIFF, BMP or WebP).
    #[arg(long)]
    pub image: PathBuf,
    #[command(flatten)]
    pub text: TextArgs,
    /// Where `mask.png`, `overlay.png`, `heatmap.png` and `result.json` are written.
    #[arg(long, default_value = "rsrefseg-out")]
    pub out_dir: PathBuf,
    #[command(flatten)]
    pub backend: BackendArgs,
}

pub fn run(args: SegmentArgs) -> Result<()> {
    let BackendArgs { backend, precision } = args.backend.clone();
    dispatch(backend, precision, None, Segment(args))
}

struct Segment(SegmentArgs);

impl BackendJob for Segment {
    type Output = ();
    fn run<AB: AutodiffBackend>(self, devices: Vec<AB::Device>) -> Result<()> {
        segment::<AB::InnerBackend>(self.0, &devices[0])
    }
}

fn segment<B: Backend>(args: SegmentArgs, device: &B::Device) -> Result<()> {
    let device = device.clone();
    let start = Instant::now();
    // The image is checked first and the weights last, so that bad inputs fail fast.
    let img = model_files::read_image(&args.image)?;
    let config = model_files::load_config(&args.model)?;
    let tokens = model_files::tokens(&args.text, &args.model, &config)?;
    if let Some(note) = &tokens.note {
        eprintln!("warning: {note}");
    }
    // One run at a time per directory, every file replaced atomically: the outputs of a
    // directory always belong to one run (result.json describes the mask.png beside it).
    let _lock = lock_dir(&args.out_dir).map_err(anyhow::Error::msg)?;
    let model = model_files::load_model::<B>(&args.model, &config, &device)?;
    let load_ms = start.elapsed().as_secs_f64() * 1e3;

    let run = pipeline::run(&model, config.image_size(), &img, &tokens, &device);
    let prob = HostTensor::from_tensor(sigmoid(run.logits.clone()));
    let mask: Vec<bool> = prob.data.iter().map(|&p| p > 0.5).collect();
    let heat = run
        .out
        .localization()
        .map(|dense| HostTensor::from_tensor(sigmoid(logits_at_original_size(dense, run.geometry))));

    let path = |name: &str| args.out_dir.join(name);
    save(&mask_image(&img, &mask), &path("mask.png"))?;
    save(&overlay_image(&img, &mask), &path("overlay.png"))?;
    if let Some(heat) = &heat {
        save(&heatmap_image(&img, &heat.data), &path("heatmap.png"))?;
    }

    let iou = HostTensor::from_tensor(run.out.iou.clone()).data[0];
    let object_score = HostTensor::from_tensor(run.out.decoder.object_score_logits.clone()).data[0];
    let pixels = mask.iter().filter(|&&m| m).count();
    let t = &run.timings;
    let summary = json!({
        "image": args.image,
        "size_hw": [img.height, img.width],
        "text": args.text.text,
        "token_ids": tokens.ids,
        "note": tokens.note,
        "predicted_iou": iou,
        "object_score_logit": object_score,
        "mask_pixels": pixels,
        "mask_fraction": pixels as f64 / mask.len() as f64,
        "timings_ms": {
            "load_model": load_ms,
            "preprocess": t.preprocess_ms,
            "encode_image": t.encode_image_ms,
            "query": t.query_ms,
            "postprocess": t.postprocess_ms,
            "total": start.elapsed().as_secs_f64() * 1e3,
        },
        "outputs": {
            "mask": path("mask.png"),
            "overlay": path("overlay.png"),
            "heatmap": heat.is_some().then(|| path("heatmap.png")),
        },
    });
    let json_path = path("result.json");
    write_atomic(&json_path, serde_json::to_string_pretty(&summary)?.as_bytes())
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

/// PNG-encode in memory, then replace `path` atomically.
fn save(img: &image::RgbImage, path: &Path) -> Result<()> {
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png).with_context(|| format!("cannot encode {}", path.display()))?;
    write_atomic(path, png.get_ref()).with_context(|| format!("cannot write {}", path.display()))
}

/// White object on black.
fn mask_image(img: &RgbImage, mask: &[bool]) -> image::RgbImage {
    image::RgbImage::from_fn(img.width as u32, img.height as u32, |x, y| {
        let v = if mask[y as usize * img.width + x as usize] { 255 } else { 0 };
        image::Rgb([v, v, v])
    })
}

/// The image with the object tinted red and the rest slightly darkened.
fn overlay_image(img: &RgbImage, mask: &[bool]) -> image::RgbImage {
    image::RgbImage::from_fn(img.width as u32, img.height as u32, |x, y| {
        let i = y as usize * img.width + x as usize;
        let px = &img.data[3 * i..3 * i + 3];
        if mask[i] {
            let tint = [255.0, 40.0, 40.0];
            image::Rgb(std::array::from_fn(|c| (0.45 * px[c] as f32 + 0.55 * tint[c]) as u8))
        } else {
            image::Rgb(std::array::from_fn(|c| (0.7 * px[c] as f32) as u8))
        }
    })
}

/// The dense localization map (sigmoid of the dense prompt logits, at the original size) in a
/// blue → green → yellow → red colour scale, blended over a grey copy of the image.
fn heatmap_image(img: &RgbImage, prob: &[f32]) -> image::RgbImage {
    const STOPS: [[f32; 3]; 5] = [[20.0, 20.0, 120.0], [30.0, 120.0, 230.0], [40.0, 200.0, 120.0], [250.0, 220.0, 40.0], [220.0, 30.0, 30.0]];
    image::RgbImage::from_fn(img.width as u32, img.height as u32, |x, y| {
        let i = y as usize * img.width + x as usize;
        let p = prob[i].clamp(0.0, 1.0) * (STOPS.len() - 1) as f32;
        let k = (p.floor() as usize).min(STOPS.len() - 2);
        let f = p - k as f32;
        let px = &img.data[3 * i..3 * i + 3];
        let grey = (px[0] as f32 + px[1] as f32 + px[2] as f32) / 3.0;
        image::Rgb(std::array::from_fn(|c| {
            let colour = STOPS[k][c] * (1.0 - f) + STOPS[k + 1][c] * f;
            (0.7 * colour + 0.3 * grey) as u8
        }))
    })
}
