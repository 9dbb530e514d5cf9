//! `rsrefseg segment`: the mask of the object a sentence refers to, as image files and a JSON
//! summary.

use crate::backend::{dispatch, BackendArgs, BackendJob};
use crate::model_files::{self, ModelArgs, TextArgs};
use anyhow::{bail, Context, Result};
use burn::tensor::backend::{AutodiffBackend, Backend};
use rsrefseg::pre::RgbImage;
use rsrefseg::segmenter::{block_on, now_ms, Click, Corrections, Segmenter};
use rsrefseg::train::checkpoint_io::{lock_dir, write_atomic};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct SegmentArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Input image or whole scene (PNG, JPEG, TIFF / GeoTIFF, BMP or WebP).
    #[arg(long)]
    pub image: PathBuf,
    #[command(flatten)]
    pub text: TextArgs,
    /// A correction click `x,y` in image pixels, on the object (`x,y` or `x,y,+`) or not on it
    /// (`x,y,-`); repeatable. SAM's prompt encoder adds each to the sentence's prompts and only
    /// the decoder runs again (beyond the paper).
    #[arg(long = "point", value_name = "X,Y[,+|-]", value_parser = parse_click)]
    pub points: Vec<Click>,
    /// A box `x0,y0,x1,y1` around the object, in image pixels (a correction, as --point).
    #[arg(long = "box", value_name = "X0,Y0,X1,Y1", value_parser = parse_box)]
    pub bbox: Option<[f32; 4]>,
    /// Where `mask.png`, `overlay.png`, `heatmap.png` and `result.json` are written (a whole
    /// scene: `mask.tif`, `mask.geojson`, `mask.png`, `overview.png`, `result.json`).
    #[arg(long, default_value = "rsrefseg-out")]
    pub out_dir: PathBuf,
    #[command(flatten)]
    pub tiling: crate::scene_cmd::TilingArgs,
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
    let t = Instant::now();
    let (img, geo) = crate::scene_cmd::read_scene(&args.image)?;
    let decode_ms = t.elapsed().as_secs_f64() * 1e3;
    let corrections = Corrections { clicks: args.points.clone(), bbox: args.bbox };
    corrections.check((img.height, img.width)).map_err(anyhow::Error::msg)?;
    let config = model_files::load_config(&args.model)?;
    if let Some(options) = args.tiling.options(config.image_size(), &img, geo.is_some())? {
        if !corrections.is_empty() {
            bail!("correction clicks and boxes work on one model input, not on a tiled scene: pass --tiles off");
        }
        return segment_scene::<B>(&args, &img, geo.as_ref(), options, &config, decode_ms, start, &device);
    }
    let tokens = model_files::tokens(&args.text, &args.model, &config)?;
    if let Some(note) = &tokens.note {
        eprintln!("warning: {note}");
    }
    // One run at a time per directory, every file replaced atomically: the outputs of a
    // directory always belong to one run (result.json describes the mask.png beside it).
    let _lock = lock_dir(&args.out_dir).map_err(anyhow::Error::msg)?;
    let model = args.backend.precision.prepare(model_files::load_model::<B>(&args.model, &config, &device)?);
    let load_ms = start.elapsed().as_secs_f64() * 1e3;

    // The segmentation pipeline the page runs too (rsrefseg::segmenter).
    let segmenter = Segmenter::new(model, None, config.image_size(), device);
    let image = block_on(segmenter.encode(&img, decode_ms)).map_err(anyhow::Error::msg)?;
    let prompts = block_on(segmenter.prompts(&image, &tokens.sentence(), now_ms())).map_err(anyhow::Error::msg)?;
    let first = block_on(segmenter.answer(&image, &prompts, &Corrections::default(), None)).map_err(anyhow::Error::msg)?;
    let before_corrections = json!({"predicted_iou": first.iou, "mask_pixels": first.area});
    let answer = if corrections.is_empty() {
        first
    } else {
        block_on(segmenter.answer(&image, &prompts, &corrections, None)).map_err(anyhow::Error::msg)?
    };
    let mask: Vec<bool> = answer.mask.iter().map(|&m| m != 0).collect();
    let has_heat = answer.heat_range != (0.0, 0.0) || answer.heat.iter().any(|&h| h != 0);

    let path = |name: &str| args.out_dir.join(name);
    save(&mask_image(&img, &mask), &path("mask.png"))?;
    save(&overlay_image(&img, &mask, &corrections), &path("overlay.png"))?;
    if has_heat {
        let heat = image::GrayImage::from_raw(answer.heat_width as u32, answer.heat_height as u32, answer.heat.clone())
            .context("heat map of the wrong size")?;
        let heat = image::imageops::resize(&heat, img.width as u32, img.height as u32, image::imageops::FilterType::Triangle);
        save(&heatmap_image(&img, heat.as_raw()), &path("heatmap.png"))?;
    }

    let pixels = answer.area;
    let (it, qt) = (&image.timings, &answer.timings);
    let summary = json!({
        "image": args.image,
        "size_hw": [img.height, img.width],
        "text": args.text.text,
        "token_ids": tokens.ids,
        "note": answer.note,
        "predicted_iou": answer.iou,
        "object_score_logit": answer.object_score_logit,
        "mask_pixels": pixels,
        "mask_fraction": pixels as f64 / mask.len() as f64,
        "clicks": corrections.clicks.iter().map(|c| json!({"x": c.x, "y": c.y, "positive": c.positive})).collect::<Vec<_>>(),
        "box": corrections.bbox,
        // The sentence's answer before the corrections (equal to the above without any).
        "before_corrections": before_corrections,
        // What heatmap.png's darkest and brightest colours stand for (probabilities).
        "heat_range": has_heat.then_some([answer.heat_range.0, answer.heat_range.1]),
        "timings_ms": {
            "load_model": load_ms,
            "decode": it.decode,
            "preprocess": it.preprocess,
            "encode_image": it.encode,
            "text": qt.text,
            "prompter": qt.prompter,
            "decoder": qt.decoder,
            "postprocess": qt.post,
            "total": start.elapsed().as_secs_f64() * 1e3,
        },
        "outputs": {
            "mask": path("mask.png"),
            "overlay": path("overlay.png"),
            "heatmap": has_heat.then(|| path("heatmap.png")),
        },
    });
    let json_path = path("result.json");
    write_atomic(&json_path, serde_json::to_string_pretty(&summary)?.as_bytes())
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

/// A scene larger than the model's input, tiled (rsrefseg::whole_scene), with a progress bar.
#[allow(clippy::too_many_arguments)]
fn segment_scene<B: Backend>(
    args: &SegmentArgs,
    img: &RgbImage,
    geo: Option<&rsrefseg::whole_scene::geotiff::GeoReference>,
    options: rsrefseg::whole_scene::SceneOptions,
    config: &rsrefseg::config::RsRefSegConfig,
    decode_ms: f64,
    start: Instant,
    device: &B::Device,
) -> Result<()> {
    let tokens = model_files::tokens(&args.text, &args.model, config)?;
    if let Some(note) = &tokens.note {
        eprintln!("warning: {note}");
    }
    let _lock = lock_dir(&args.out_dir).map_err(anyhow::Error::msg)?;
    let model = args.backend.precision.prepare(model_files::load_model::<B>(&args.model, config, device)?);
    let load_ms = start.elapsed().as_secs_f64() * 1e3;
    let segmenter = Segmenter::new(model, None, config.image_size(), device.clone());
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(indicatif::ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} tiles {elapsed}").expect("template").progress_chars("=> "));
    let mut progress = |e: &rsrefseg::whole_scene::SceneEvent| {
        bar.set_message(e.phase);
        bar.set_length(e.total as u64);
        bar.set_position(e.done as u64);
    };
    let mut scene_tokens = rsrefseg::whole_scene::SceneTokens::default();
    let seg = block_on(segmenter.segment_scene(img, &tokens.sentence(), &options, &mut scene_tokens, &mut progress)).map_err(anyhow::Error::msg)?;
    bar.finish_and_clear();
    let sentence = args.text.text.clone().unwrap_or_default();
    let scene = crate::scene_cmd::write_outputs(&args.out_dir, img, geo, &seg, &sentence)?;
    let summary = json!({
        "image": args.image,
        "size_hw": [img.height, img.width],
        "text": args.text.text,
        "token_ids": tokens.ids,
        "note": seg.note,
        "mask_pixels": seg.area,
        "mask_fraction": seg.area as f64 / (img.width * img.height) as f64,
        "scene": scene,
        "timings_ms": {
            "load_model": load_ms,
            "decode": decode_ms,
            "text": seg.timings.text,
            "locate": seg.timings.locate,
            "answer": seg.timings.answer,
            "merge": seg.timings.merge,
            "total": start.elapsed().as_secs_f64() * 1e3,
        },
    });
    let json_path = args.out_dir.join("result.json");
    write_atomic(&json_path, serde_json::to_string_pretty(&summary)?.as_bytes())
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    // The per-tile list is in result.json; the terminal gets the summary.
    let mut brief = summary.clone();
    brief["scene"]["tiles"] = json!(format!("{} tiles (see result.json)", seg.tiles.len()));
    println!("{}", serde_json::to_string_pretty(&brief)?);
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

/// The image with the object tinted red and the rest slightly darkened; correction clicks drawn
/// as crosses (green: on the object, blue: not on it) and the box as a yellow outline.
fn overlay_image(img: &RgbImage, mask: &[bool], corrections: &Corrections) -> image::RgbImage {
    let mut out = image::RgbImage::from_fn(img.width as u32, img.height as u32, |x, y| {
        let i = y as usize * img.width + x as usize;
        let px = &img.data[3 * i..3 * i + 3];
        if mask[i] {
            let tint = [255.0, 40.0, 40.0];
            image::Rgb(std::array::from_fn(|c| (0.45 * px[c] as f32 + 0.55 * tint[c]) as u8))
        } else {
            image::Rgb(std::array::from_fn(|c| (0.7 * px[c] as f32) as u8))
        }
    });
    let (w, h) = (img.width as i64, img.height as i64);
    let mut put = |x: i64, y: i64, colour: [u8; 3]| {
        if (0..w).contains(&x) && (0..h).contains(&y) {
            out.put_pixel(x as u32, y as u32, image::Rgb(colour));
        }
    };
    let arm = (img.width.max(img.height) as i64 / 100).max(3);
    for c in &corrections.clicks {
        let colour = if c.positive { [40, 230, 80] } else { [40, 140, 255] };
        let (cx, cy) = (c.x as i64, c.y as i64);
        for d in -arm..=arm {
            put(cx + d, cy, colour);
            put(cx, cy + d, colour);
        }
    }
    if let Some([x0, y0, x1, y1]) = corrections.bbox {
        let (x0, y0, x1, y1) = (x0 as i64, y0 as i64, x1 as i64, y1 as i64);
        for x in x0..=x1 {
            put(x, y0, [250, 220, 40]);
            put(x, y1, [250, 220, 40]);
        }
        for y in y0..=y1 {
            put(x0, y, [250, 220, 40]);
            put(x1, y, [250, 220, 40]);
        }
    }
    out
}

/// `x,y` or `x,y,+` (on the object) or `x,y,-` (not on it), in image pixels.
fn parse_click(s: &str) -> std::result::Result<Click, String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let (xy, positive) = match parts.as_slice() {
        [x, y] => ([*x, *y], true),
        [x, y, "+"] => ([*x, *y], true),
        [x, y, "-"] => ([*x, *y], false),
        _ => return Err(format!("{s:?}: give x,y or x,y,+ (on the object) or x,y,- (not on it)")),
    };
    let [x, y] = xy.map(|v| v.parse::<f32>());
    match (x, y) {
        (Ok(x), Ok(y)) if x.is_finite() && y.is_finite() => Ok(Click { x, y, positive }),
        _ => Err(format!("{s:?}: x and y must be numbers (image pixels)")),
    }
}

/// `x0,y0,x1,y1` in image pixels.
fn parse_box(s: &str) -> std::result::Result<[f32; 4], String> {
    let v: Vec<f32> = s.split(',').map(|p| p.trim().parse::<f32>()).collect::<std::result::Result<_, _>>().map_err(|_| format!("{s:?}: give x0,y0,x1,y1 as numbers (image pixels)"))?;
    match v.as_slice() {
        [x0, y0, x1, y1] if v.iter().all(|c| c.is_finite()) => Ok([*x0, *y0, *x1, *y1]),
        _ => Err(format!("{s:?}: give four numbers x0,y0,x1,y1 (image pixels)")),
    }
}

/// The dense localization map (the pipeline's heat map: the dense prompt's probabilities
/// stretched over their range, as the page shows it, scaled to the image) in a
/// blue → green → yellow → red colour scale, blended over a grey copy of the image.
fn heatmap_image(img: &RgbImage, heat: &[u8]) -> image::RgbImage {
    const STOPS: [[f32; 3]; 5] = [[20.0, 20.0, 120.0], [30.0, 120.0, 230.0], [40.0, 200.0, 120.0], [250.0, 220.0, 40.0], [220.0, 30.0, 30.0]];
    image::RgbImage::from_fn(img.width as u32, img.height as u32, |x, y| {
        let i = y as usize * img.width + x as usize;
        let p = heat[i] as f32 / 255.0 * (STOPS.len() - 1) as f32;
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
