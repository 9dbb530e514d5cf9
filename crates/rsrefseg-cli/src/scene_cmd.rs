//! Whole scenes: the tiling options of `rsrefseg segment`, its scene outputs (GeoTIFF mask,
//! GeoJSON polygons, overview), `rsrefseg synth-scene` (a generated large scene with ground
//! truth, as a GeoTIFF) and `rsrefseg eval-scene` (IoU, time and memory on such a scene).

use crate::backend::{dispatch, BackendArgs, BackendJob};
use crate::model_files::{self, ModelArgs, TextArgs};
use anyhow::{anyhow, bail, Context, Result};
use burn::tensor::backend::{AutodiffBackend, Backend};
use rsrefseg::data::rle::{Mask, Rle};
use rsrefseg::pre::RgbImage;
use rsrefseg::segmenter::{block_on, Segmenter};
use rsrefseg::synth::large::{generate_large_scene, MAX_CELLS};
use rsrefseg::train::checkpoint_io::{lock_dir, write_atomic};
use rsrefseg::whole_scene::geotiff::{encode_mask_geotiff, encode_rgb_geotiff, GeoReference};
use rsrefseg::whole_scene::{decode_scene, polygons, reduce, wants_tiling, SceneOptions, SceneSegmentation, TileSelection, MAX_SCENE_FILE_BYTES};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// How `segment` treats an image larger than the model's input.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tiling {
    /// Tile GeoTIFFs and images whose long side exceeds 4× the model input (localize first).
    Auto,
    /// Never tile: the whole image is resized to the model input.
    Off,
    /// Tile, and let SAM answer every tile.
    All,
    /// Tile, find the sentence's tiles on a localization map, let SAM answer only those.
    Localize,
}

#[derive(clap::Args, Debug, Clone)]
pub struct TilingArgs {
    /// Whole scenes: tile the image at the model's resolution instead of shrinking it.
    #[arg(long, value_enum, default_value = "auto")]
    pub tiles: Tiling,
    /// Tile side in scene pixels (default: the model's input side; other sizes are resized).
    #[arg(long)]
    pub tile: Option<usize>,
    /// Pixels shared by neighbouring tiles (default: a quarter of the tile).
    #[arg(long)]
    pub overlap: Option<usize>,
    /// With localization: most tiles SAM answers.
    #[arg(long, default_value_t = 4)]
    pub max_tiles: usize,
    /// With localization: also answer the best tile's overlapping neighbours whose score is
    /// within this many logits of it.
    #[arg(long, default_value_t = 1.0)]
    pub margin: f32,
}

impl TilingArgs {
    /// The scene options, or `None` when the image is answered whole.
    pub fn options(&self, image_size: usize, img: &RgbImage, georeferenced: bool) -> Result<Option<SceneOptions>> {
        let selection = match self.tiles {
            Tiling::Off => return Ok(None),
            Tiling::Auto if !wants_tiling(img.width, img.height, image_size, georeferenced) => return Ok(None),
            Tiling::All => TileSelection::All,
            Tiling::Auto | Tiling::Localize => {
                if !(1..=4096).contains(&self.max_tiles) || !self.margin.is_finite() || self.margin < 0.0 {
                    bail!("--max-tiles must be in 1..=4096 and --margin a number ≥ 0");
                }
                TileSelection::Localize { max_tiles: self.max_tiles, margin: self.margin }
            }
        };
        let tile = self.tile.unwrap_or(image_size);
        if !(16..=4096).contains(&tile) {
            bail!("--tile must be between 16 and 4096 pixels, not {tile}");
        }
        let overlap = self.overlap.unwrap_or(tile / 4);
        if overlap * 2 > tile {
            bail!("--overlap {overlap} is more than half the tile ({tile})");
        }
        Ok(Some(SceneOptions { tile, overlap, selection }))
    }
}

/// Read a scene or image file (size checked before reading) with its georeferencing.
pub fn read_scene(path: &Path) -> Result<(RgbImage, Option<GeoReference>)> {
    let bytes = model_files::read_image_file(path, MAX_SCENE_FILE_BYTES, "scene")?;
    decode_scene(&bytes).map_err(|e| anyhow!("the image {}: {e}", path.display()))
}

/// Longest side of `overview.png`.
const OVERVIEW_SIDE: usize = 2048;

/// Write the scene outputs into `out_dir` (already locked): `mask.tif` (GeoTIFF with the scene's
/// georeferencing), `mask.geojson` (polygons in the scene's coordinates), `mask.png` and
/// `overview.png` (the scene reduced to 2048 pixels, the mask in red, SAM's tiles outlined in
/// yellow). Returns the JSON summary's scene part.
pub fn write_outputs(out_dir: &Path, img: &RgbImage, geo: Option<&GeoReference>, seg: &SceneSegmentation, sentence: &str) -> Result<serde_json::Value> {
    let path = |name: &str| out_dir.join(name);
    let tif = encode_mask_geotiff(&seg.mask, seg.width, seg.height, geo).map_err(anyhow::Error::msg)?;
    write_atomic(&path("mask.tif"), &tif).with_context(|| format!("cannot write {}", path("mask.tif").display()))?;
    let traced = polygons::trace(&seg.mask, seg.width, seg.height, geo).map_err(anyhow::Error::msg)?;
    let geojson = polygons::to_geojson(&traced, sentence, geo);
    write_atomic(&path("mask.geojson"), geojson.as_bytes()).with_context(|| format!("cannot write {}", path("mask.geojson").display()))?;
    let gray = image::GrayImage::from_raw(seg.width as u32, seg.height as u32, seg.mask.clone()).context("mask size")?;
    save_png(&image::DynamicImage::ImageLuma8(gray), &path("mask.png"))?;
    save_png(&image::DynamicImage::ImageRgb8(overview(img, seg)), &path("overview.png"))?;
    Ok(json!({
        "grid": [seg.rows, seg.cols],
        "options": seg.options,
        "tiles_answered": seg.tiles.iter().filter(|t| t.answered).count(),
        "tiles": seg.tiles,
        "polygons": traced.polygons.0.len(),
        "polygon_step_pixels": traced.step,
        "georeference": geo.map(|g| json!({"affine": g.affine, "epsg": g.epsg})),
        "merger_bytes": seg.merger_bytes,
        "outputs": {"mask_geotiff": path("mask.tif"), "mask_geojson": path("mask.geojson"), "mask": path("mask.png"), "overview": path("overview.png")},
    }))
}

fn save_png(img: &image::DynamicImage, path: &Path) -> Result<()> {
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png).with_context(|| format!("cannot encode {}", path.display()))?;
    write_atomic(path, png.get_ref()).with_context(|| format!("cannot write {}", path.display()))
}

/// The scene reduced so its long side is at most [`OVERVIEW_SIDE`] (block means,
/// `rsrefseg::whole_scene::reduce`), with the mask tinted red (a reduced pixel is red when any scene pixel it stands for is in the mask, so
/// small objects stay visible) and SAM's tiles outlined.
fn overview(img: &RgbImage, seg: &SceneSegmentation) -> image::RgbImage {
    let (small, k) = reduce(img, OVERVIEW_SIDE);
    let (w, h) = (small.width, small.height);
    let mut out = image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let (sx, sy) = (x as usize * k, y as usize * k);
        let i = (y as usize * w + x as usize) * 3;
        let px = &small.data[i..i + 3];
        let hit = (sy..(sy + k).min(img.height)).any(|yy| seg.mask[yy * img.width + sx..yy * img.width + (sx + k).min(img.width)].iter().any(|&m| m != 0));
        if hit {
            image::Rgb([255, 40, 40])
        } else {
            image::Rgb(std::array::from_fn(|c| (0.75 * px[c] as f32) as u8))
        }
    });
    for t in seg.tiles.iter().filter(|t| t.answered) {
        let [tx0, ty0, tx1, ty1] = t.tile.bounds();
        let (x0, y0) = (tx0 / k, ty0 / k);
        let (x1, y1) = ((tx1 / k).min(w - 1), (ty1 / k).min(h - 1));
        for x in x0..=x1 {
            out.put_pixel(x as u32, y0 as u32, image::Rgb([250, 220, 40]));
            out.put_pixel(x as u32, y1 as u32, image::Rgb([250, 220, 40]));
        }
        for y in y0..=y1 {
            out.put_pixel(x0 as u32, y as u32, image::Rgb([250, 220, 40]));
            out.put_pixel(x1 as u32, y as u32, image::Rgb([250, 220, 40]));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// rsrefseg synth-scene

#[derive(clap::Args, Debug)]
pub struct SynthSceneArgs {
    /// Output directory (created): scene.tif (GeoTIFF) and truth.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Seed; the same seed gives the same scene.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Cells a side (256 pixels each): 32 gives an 8192² scene.
    #[arg(long, default_value_t = 32)]
    pub cells: usize,
    /// Referring expressions, each naming one object unique in the whole scene.
    #[arg(long, default_value_t = 8)]
    pub targets: usize,
    /// Ground size of a pixel in metres.
    #[arg(long, default_value_t = 0.5)]
    pub pixel_size: f64,
    /// Projected coordinate system of the scene (default: WGS 84 / UTM zone 33N).
    #[arg(long, default_value_t = 32633)]
    pub epsg: u16,
    /// Map coordinates of the scene's top-left corner, `x,y`.
    #[arg(long, default_value = "500000,4200000", value_parser = parse_xy)]
    pub origin: (f64, f64),
}

fn parse_xy(s: &str) -> std::result::Result<(f64, f64), String> {
    let v: Vec<f64> = s.split(',').map(|p| p.trim().parse::<f64>()).collect::<std::result::Result<_, _>>().map_err(|_| format!("{s:?}: give x,y"))?;
    match v.as_slice() {
        [x, y] if x.is_finite() && y.is_finite() => Ok((*x, *y)),
        _ => Err(format!("{s:?}: give two numbers x,y")),
    }
}

/// Ground truth of a generated scene (`truth.json`).
#[derive(Serialize, Deserialize, Debug)]
pub struct SceneTruth {
    pub width: usize,
    pub height: usize,
    pub seed: u64,
    pub targets: Vec<TruthTarget>,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct TruthTarget {
    pub sentence: String,
    pub kind: String,
    pub category: String,
    /// `[x0, y0, x1, y1]` in scene pixels, exclusive ends.
    pub bbox: [usize; 4],
    /// The referent's mask over `bbox` as a compressed COCO RLE string.
    pub counts: String,
}

pub fn synth_scene(args: SynthSceneArgs) -> Result<()> {
    if !(1..=MAX_CELLS).contains(&args.cells) {
        bail!("--cells must be between 1 and {MAX_CELLS}, not {}", args.cells);
    }
    if !(args.pixel_size.is_finite() && args.pixel_size > 0.0) {
        bail!("--pixel-size must be a positive number of metres");
    }
    let start = Instant::now();
    let scene = generate_large_scene(args.seed, args.cells, args.targets).map_err(anyhow::Error::msg)?;
    let img = RgbImage::new(scene.height, scene.width, scene.image).map_err(|e| anyhow!("{e}"))?;
    let geo = GeoReference::north_up(args.origin.0, args.origin.1, args.pixel_size, args.epsg);
    let tif = encode_rgb_geotiff(&img, Some(&geo)).map_err(anyhow::Error::msg)?;
    let targets = scene
        .targets
        .iter()
        .map(|t| {
            let [x0, y0, x1, y1] = t.bbox;
            let mask = Mask::from_nonzero(y1 - y0, x1 - x0, &t.mask).map_err(|e| anyhow!("{e}"))?;
            let counts = Rle::encode(&mask).map_err(|e| anyhow!("{e}"))?.to_string();
            Ok(TruthTarget { sentence: t.sentence.clone(), kind: t.kind.into(), category: t.category.into(), bbox: t.bbox, counts })
        })
        .collect::<Result<Vec<_>>>()?;
    let truth = SceneTruth { width: scene.width, height: scene.height, seed: args.seed, targets };
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let _lock = lock_dir(&args.out).map_err(anyhow::Error::msg)?;
    write_atomic(&args.out.join("scene.tif"), &tif).context("cannot write scene.tif")?;
    write_atomic(&args.out.join("truth.json"), serde_json::to_string_pretty(&truth)?.as_bytes()).context("cannot write truth.json")?;
    println!(
        "{}×{} scene ({} distractor cells), {} targets, in {} ({:.1} s)",
        scene.width,
        scene.height,
        scene.distractor_cells,
        truth.targets.len(),
        args.out.display(),
        start.elapsed().as_secs_f32()
    );
    for t in &truth.targets {
        println!("  {:<60} {:?}", t.sentence, t.bbox);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// rsrefseg eval-scene

#[derive(clap::Args, Debug)]
pub struct EvalSceneArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A directory written by `rsrefseg synth-scene` (scene.tif, truth.json).
    #[arg(long)]
    pub data: PathBuf,
    /// Which tiles SAM answers (`all` or `localize`; `auto` = `localize`).
    #[command(flatten)]
    pub tiling: TilingArgs,
    /// Write the per-sentence results as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub backend: BackendArgs,
}

pub fn eval_scene(args: EvalSceneArgs) -> Result<()> {
    crate::configure_threads(args.threads)?;
    let BackendArgs { backend, precision } = args.backend.clone();
    dispatch(backend, precision, None, EvalScene(args))
}

struct EvalScene(EvalSceneArgs);

impl BackendJob for EvalScene {
    type Output = ();
    fn run<AB: AutodiffBackend>(self, devices: Vec<AB::Device>) -> Result<()> {
        eval::<AB::InnerBackend>(self.0, &devices[0])
    }
}

/// IoU of a scene mask with a target given on its box, over the window `[wx0, wy0, wx1, wy1]`
/// of the scene (the whole scene, or one tile), and the mask's pixels in that window.
fn iou(mask: &[u8], width: usize, t: &TruthTarget, window: [usize; 4]) -> Result<(f64, usize)> {
    let [x0, y0, x1, y1] = t.bbox;
    let truth = Rle::from_string(&t.counts, y1 - y0, x1 - x0).map_err(|e| anyhow!("truth of {:?}: {e}", t.sentence))?.decode();
    let [wx0, wy0, wx1, wy1] = window;
    let pred: usize = (wy0..wy1).map(|y| mask[y * width + wx0..y * width + wx1].iter().filter(|&&m| m != 0).count()).sum();
    let (mut inter, mut area) = (0usize, 0usize);
    for y in y0..y1 {
        for x in x0..x1 {
            let g = truth.data[(y - y0) * (x1 - x0) + (x - x0)] != 0;
            area += g as usize;
            inter += (g && mask[y * width + x] != 0) as usize;
        }
    }
    let union = pred + area - inter;
    Ok((if union == 0 { 1.0 } else { inter as f64 / union as f64 }, pred))
}

fn eval<B: Backend>(args: EvalSceneArgs, device: &B::Device) -> Result<()> {
    let truth: SceneTruth = serde_json::from_slice(&std::fs::read(args.data.join("truth.json")).with_context(|| format!("cannot read {}/truth.json", args.data.display()))?)
        .context("truth.json is not a synth-scene ground truth")?;
    let t = Instant::now();
    let (img, _geo) = read_scene(&args.data.join("scene.tif"))?;
    let decode_ms = t.elapsed().as_secs_f64() * 1e3;
    if (img.width, img.height) != (truth.width, truth.height) {
        bail!("scene.tif is {}×{} but truth.json says {}×{}", img.width, img.height, truth.width, truth.height);
    }
    let config = model_files::load_config(&args.model)?;
    let mut options = args.tiling.options(config.image_size(), &img, true)?.context("--tiles off: nothing to evaluate")?;
    if args.tiling.tiles == Tiling::Auto {
        options.selection = TileSelection::Localize { max_tiles: args.tiling.max_tiles, margin: args.tiling.margin };
    }
    let model = args.backend.precision.prepare(model_files::load_model::<B>(&args.model, &config, device)?);
    let segmenter = Segmenter::new(model, None, config.image_size(), device.clone());
    // SigLIP's tile tokens are kept between the scene's sentences (they do not depend on them).
    let mut scene_tokens = rsrefseg::whole_scene::SceneTokens::default();
    let mut rows = Vec::new();
    let (mut sum_iou, mut inter_sum_hits, mut sum_tile_iou) = (0.0, 0usize, 0.0);
    for target in &truth.targets {
        let text = TextArgs { text: Some(target.sentence.clone()), token_ids: None };
        let tokens = model_files::tokens(&text, &args.model, &config)?;
        let seg = block_on(segmenter.segment_scene(&img, &tokens.sentence(), &options, &mut scene_tokens, &mut |_| {})).map_err(anyhow::Error::msg)?;
        let (v, pred) = iou(&seg.mask, seg.width, target, [0, 0, seg.width, seg.height])?;
        sum_iou += v;
        inter_sum_hits += (v >= 0.5) as usize;
        // Did SAM answer a tile that holds the whole referent? And how good is the answer inside
        // that tile (segmentation at full resolution, localization aside)?
        let referent_tile = seg.tiles.iter().find(|t| t.answered && t.tile.contains(target.bbox));
        let found = referent_tile.is_some();
        let tile_iou = match referent_tile {
            Some(t) => Some(iou(&seg.mask, seg.width, target, t.tile.bounds())?.0),
            None => None,
        };
        if let Some(t) = tile_iou {
            sum_tile_iou += t;
        }
        println!(
            "{:<58} IoU {:.3}  mask {:>6} px  tiles {:>4}  referent's tile answered {} (IoU inside it {})  {:.1} s",
            target.sentence,
            v,
            pred,
            seg.tiles.iter().filter(|t| t.answered).count(),
            if found { "yes" } else { "no " },
            tile_iou.map_or("–".into(), |t| format!("{t:.3}")),
            seg.timings.total / 1e3
        );
        rows.push(json!({
            "sentence": target.sentence, "kind": target.kind, "iou": v, "mask_pixels": pred, "referent_tile_answered": found,
            "iou_inside_referent_tile": tile_iou,
            "tiles_answered": seg.tiles.iter().filter(|t| t.answered).count(), "timings_ms": seg.timings,
        }));
    }
    let n = truth.targets.len().max(1) as f64;
    let seconds: Vec<f64> = rows.iter().map(|r| r["timings_ms"]["total"].as_f64().unwrap_or(0.0) / 1e3).collect();
    let total_s: f64 = seconds.iter().sum();
    // The first sentence encodes every tile with SigLIP; later ones reuse the kept tokens.
    let first_s = seconds.first().copied().unwrap_or(0.0);
    let later_s = if seconds.len() > 1 { (total_s - first_s) / (seconds.len() - 1) as f64 } else { f64::NAN };
    let found = rows.iter().filter(|r| r["referent_tile_answered"] == true).count();
    let peak = crate::bench::peak_rss();
    println!(
        "{}×{} scene, {} sentences, tiles {:?}: gIoU {:.1}, Pr@0.5 {:.1}, referent's tile answered {}/{} (mean IoU inside it {}), {:.1} s per sentence (first {:.1} s, later {:.1} s; tile tokens kept {:.0} MiB), peak RSS {}",
        img.width,
        img.height,
        truth.targets.len(),
        options.selection,
        100.0 * sum_iou / n,
        100.0 * inter_sum_hits as f64 / n,
        found,
        truth.targets.len(),
        if found > 0 { format!("{:.1}", 100.0 * sum_tile_iou / found as f64) } else { "–".into() },
        total_s / n,
        first_s,
        later_s,
        scene_tokens.bytes() as f64 / 1048576.0,
        peak.map_or("n/a".into(), |b| format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64))
    );
    if let Some(path) = &args.json {
        let summary = json!({
            "scene": [img.width, img.height], "decode_ms": decode_ms, "options": options, "giou": sum_iou / n,
            "pr50": inter_sum_hits as f64 / n, "referent_tile_answered": found,
            "mean_iou_inside_referent_tile": (found > 0).then(|| sum_tile_iou / found as f64), "seconds_per_sentence": total_s / n, "seconds_first_sentence": first_s, "seconds_later_sentences": later_s,
            "peak_rss_bytes": peak, "samples": rows,
        });
        write_atomic(path, serde_json::to_string_pretty(&summary)?.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
