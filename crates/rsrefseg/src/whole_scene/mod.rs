//! Whole remote-sensing scenes (beyond the paper): a sentence answered on a scene far larger
//! than the model's input, without shrinking the scene to the input size (which would make every
//! object a few pixels).
//!
//! The scene is cut into model-input-sized tiles with overlap ([`grid`]). Two ways to answer:
//!
//! - [`TileSelection::All`]: every tile is encoded (SigLIP + SAM) and answered, and the tiles'
//!   mask logits are blended ([`merge`]);
//! - [`TileSelection::Localize`] (the default): first a *localization map* of the whole scene —
//!   SigLIP's vision tower and the prompter's dense prompt on every tile, no SAM — scores each
//!   tile by the sentence's best match in it; then only the best tiles are encoded by SAM and
//!   answered. A referring expression names one object, so most of the scene needs no SAM at all.
//!
//! Memory stays bounded: the scene is held once (RGB, 3 bytes a pixel), the mask once (1 byte a
//! pixel), the merger's band of `width × tile` sums, and one tile's tensors at a time.
//!
//! GeoTIFF scenes keep their georeferencing ([`geotiff`]); the mask is written as a GeoTIFF with
//! the scene's tags and as GeoJSON polygons in the scene's coordinate system ([`polygons`]).

pub mod geotiff;
pub mod grid;
pub mod merge;
pub mod polygons;

use crate::post::logits_at_original_size;
use crate::model::ImageEncoding;
use crate::pre::{keep_ratio_size, sam_pixels, to_x01, Geometry, RgbImage};
use crate::segmenter::{check_file_size, fence, now_ms, read, Segmenter, Sentence};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use grid::{Tile, TileGrid};
use merge::BandMerger;
use serde::Serialize;

/// Largest accepted scene file: a scene's pixels are limited by [`crate::pre`] (67 MP); an
/// uncompressed 8192² RGB GeoTIFF is 192 MiB, a 16-bit four-band one 512 MiB.
pub const MAX_SCENE_FILE_BYTES: usize = 768 * 1024 * 1024;

/// Decode a scene file: a GeoTIFF (or plain TIFF) keeps its georeferencing; any other format
/// the pipeline reads has none. Limits as [`crate::segmenter::decode_image`], but for the file
/// size ([`MAX_SCENE_FILE_BYTES`]).
pub fn decode_scene(bytes: &[u8]) -> Result<(RgbImage, Option<geotiff::GeoReference>), String> {
    check_file_size(bytes.len(), MAX_SCENE_FILE_BYTES, "scene")?;
    if geotiff::is_tiff(bytes) {
        return geotiff::decode_geotiff(bytes);
    }
    RgbImage::decode(bytes).map(|img| (img, None)).map_err(|e| e.to_string())
}

/// Whether a scene is tiled unless the user says otherwise: when it is georeferenced (a GeoTIFF
/// is a map, not a photo to shrink) or its long side is more than 4× the model's input (shrunk
/// to the input, its objects would lose most of their pixels). The CLI's `--tiles auto` and the
/// page apply this rule.
pub fn wants_tiling(width: usize, height: usize, image_size: usize, georeferenced: bool) -> bool {
    georeferenced || width.max(height) > 4 * image_size
}

/// Which tiles SAM answers.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum TileSelection {
    /// Every tile.
    All,
    /// The tiles where the localization map peaks: the best one, and the tiles overlapping it
    /// whose score is within `margin` (logits) of it, at most `max_tiles`.
    Localize { max_tiles: usize, margin: f32 },
}

impl Default for TileSelection {
    fn default() -> Self {
        TileSelection::Localize { max_tiles: 4, margin: 1.0 }
    }
}

/// How a scene is tiled and answered.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SceneOptions {
    /// Tile side in scene pixels (each tile is resized to the model's input when they differ).
    pub tile: usize,
    /// Pixels shared by neighbouring tiles.
    pub overlap: usize,
    pub selection: TileSelection,
}

impl SceneOptions {
    /// Tiles of the model's input size with a quarter of overlap, localized first.
    pub fn for_input(image_size: usize) -> Self {
        SceneOptions { tile: image_size, overlap: image_size / 4, selection: TileSelection::default() }
    }
}

/// What happened on one tile.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TileReport {
    /// Where the tile is (its fields written inline in JSON).
    #[serde(flatten)]
    pub tile: Tile,
    /// The localization score: the dense prompt's highest logit in the tile (localize only).
    pub score: Option<f32>,
    /// SAM answered this tile.
    pub answered: bool,
    pub predicted_iou: Option<f32>,
    pub object_score_logit: Option<f32>,
    /// Pixels of the tile's own answer (before merging).
    pub mask_pixels: usize,
}

impl TileReport {
    fn new(t: &Tile) -> Self {
        TileReport {
            tile: *t,
            score: None,
            answered: false,
            predicted_iou: None,
            object_score_logit: None,
            mask_pixels: 0,
        }
    }
}

/// Progress of a scene, reported after every tile.
#[derive(Clone, Debug, Serialize)]
pub struct SceneEvent<'a> {
    /// `"locate"` (the localization map) or `"answer"` (SAM).
    pub phase: &'static str,
    /// Tiles of this phase done, and to do.
    pub done: usize,
    pub total: usize,
    pub tile: &'a TileReport,
}

/// Milliseconds of a scene.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct SceneTimings {
    pub text: f64,
    /// The localization map (SigLIP vision + prompter on every tile).
    pub locate: f64,
    /// SAM on the chosen tiles (SigLIP, Hiera, prompter, decoder, logits up-sampled).
    pub answer: f64,
    /// Blending the tiles' logits into the scene mask.
    pub merge: f64,
    pub total: f64,
}

/// The answer on a whole scene.
#[derive(Clone, Debug)]
pub struct SceneSegmentation {
    pub width: usize,
    pub height: usize,
    /// `height × width`, 255 = object.
    pub mask: Vec<u8>,
    pub area: usize,
    pub rows: usize,
    pub cols: usize,
    /// Every tile, row by row.
    pub tiles: Vec<TileReport>,
    pub options: SceneOptions,
    pub note: Option<String>,
    pub timings: SceneTimings,
    /// Bytes held by the merger (band and mask), for the memory report.
    pub merger_bytes: usize,
}

/// The scene reduced by the smallest integer factor that brings its long side to at most
/// `max_side`, each pixel the mean of the block it stands for (for display: the page's view of
/// a GeoTIFF the browser cannot decode, the CLI's `overview.png`). Returns it and the factor.
pub fn reduce(img: &RgbImage, max_side: usize) -> (RgbImage, usize) {
    let k = img.width.max(img.height).div_ceil(max_side.max(1)).max(1);
    let (w, h) = (img.width.div_ceil(k), img.height.div_ceil(k));
    let mut data = vec![0u8; w * h * 3];
    let mut sums = vec![0u32; w * 3];
    for y in 0..h {
        sums.fill(0);
        let rows = y * k..((y + 1) * k).min(img.height);
        let n_rows = rows.len() as u32;
        for sy in rows {
            for (sx, px) in img.data[sy * img.width * 3..(sy + 1) * img.width * 3].chunks_exact(3).enumerate() {
                for c in 0..3 {
                    sums[(sx / k) * 3 + c] += px[c] as u32;
                }
            }
        }
        for x in 0..w {
            let n = n_rows * ((x + 1) * k).min(img.width).saturating_sub(x * k) as u32;
            for c in 0..3 {
                data[(y * w + x) * 3 + c] = ((sums[x * 3 + c] + n / 2) / n.max(1)) as u8;
            }
        }
    }
    (RgbImage { height: h, width: w, data }, k)
}

/// Most bytes of SigLIP image tokens a [`SceneTokens`] keeps (an 8192² scene in nano's 1 849
/// tiles needs 231 MiB); tiles beyond it are encoded again for each sentence.
pub const MAX_SCENE_TOKEN_BYTES: usize = 256 << 20;

/// SigLIP's image tokens `v` `[1, g², d1]` of a scene's tiles, kept between sentences: they do
/// not depend on the sentence, so another sentence's localization map costs only the prompter
/// on each tile, and SAM's answer skips SigLIP. Belongs to one scene and tiling: the caller
/// keeps one per scene (a different tiling clears it).
pub struct SceneTokens<B: Backend> {
    /// `(width, height, tile, overlap)` of the tiling the tokens belong to.
    key: Option<(usize, usize, usize, usize)>,
    tiles: Vec<Option<Tensor<B, 3>>>,
    bytes: usize,
}

impl<B: Backend> Default for SceneTokens<B> {
    fn default() -> Self {
        SceneTokens { key: None, tiles: Vec::new(), bytes: 0 }
    }
}

impl<B: Backend> SceneTokens<B> {
    /// Bytes of the tokens held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn prepare(&mut self, key: (usize, usize, usize, usize), n: usize) {
        if self.key != Some(key) || self.tiles.len() != n {
            *self = SceneTokens { key: Some(key), tiles: vec![None; n], bytes: 0 };
        }
    }

    fn get(&self, i: usize) -> Option<Tensor<B, 3>> {
        self.tiles.get(i).cloned().flatten()
    }

    fn keep(&mut self, i: usize, v: &Tensor<B, 3>) {
        let bytes = v.shape().num_elements() * std::mem::size_of::<f32>();
        if self.bytes + bytes <= MAX_SCENE_TOKEN_BYTES && i < self.tiles.len() && self.tiles[i].is_none() {
            self.tiles[i] = Some(v.clone());
            self.bytes += bytes;
        }
    }
}

/// The geometry `to_x01` gives a tile (computed without touching its pixels).
fn tile_geometry(t: &Tile, size: usize) -> Geometry {
    Geometry { original: (t.height, t.width), resized: keep_ratio_size(t.height, t.width, size), padded: size }
}

/// The pixels of `tile` cut out of `img`.
fn crop(img: &RgbImage, t: &Tile) -> RgbImage {
    let mut data = Vec::with_capacity(t.width * t.height * 3);
    for y in t.y0..t.y0 + t.height {
        let start = (y * img.width + t.x0) * 3;
        data.extend_from_slice(&img.data[start..start + t.width * 3]);
    }
    RgbImage { height: t.height, width: t.width, data }
}

/// A tile's localization score: the highest dense-prompt logit `[1, 1, m, m]` over the part of
/// the padded input that shows the tile.
fn dense_score<B: Backend>(dense: Tensor<B, 4>, g: Geometry) -> Tensor<B, 1> {
    let m = dense.dims()[3];
    let (h1, w1) = g.resized;
    let (mh, mw) = ((h1 * m).div_ceil(g.padded), (w1 * m).div_ceil(g.padded));
    dense.slice([0..1, 0..1, 0..mh.clamp(1, m), 0..mw.clamp(1, m)]).max()
}

/// Tiles to answer: the best-scoring tile, and the tiles overlapping it whose score is within
/// `margin` of it (the referent may straddle a tile border), at most `max_tiles`, in row-major
/// order (the merger's order). One place only: a referring expression names one object, and
/// tiles answered elsewhere would only add false alarms.
fn choose(reports: &[TileReport], max_tiles: usize, margin: f32) -> Vec<usize> {
    let mut ranked: Vec<(usize, f32)> = reports.iter().enumerate().filter_map(|(i, r)| r.score.map(|s| (i, s))).collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    let Some(&(best, best_score)) = ranked.first() else { return Vec::new() };
    let b = &reports[best].tile;
    let mut chosen: Vec<usize> = ranked
        .iter()
        .filter(|&&(i, s)| i == best || (s >= best_score - margin && reports[i].tile.overlaps(b)))
        .take(max_tiles.max(1))
        .map(|&(i, _)| i)
        .collect();
    chosen.sort_unstable();
    chosen
}

impl<B: Backend> Segmenter<B> {
    /// Answer `sentence` on a whole scene, tile by tile, reporting progress after every tile.
    /// `tokens` keeps SigLIP's tile tokens for further sentences on the same scene (pass the
    /// same one for every sentence of a scene, a new one for another scene).
    pub async fn segment_scene(
        &self,
        img: &RgbImage,
        sentence: &Sentence,
        options: &SceneOptions,
        tokens: &mut SceneTokens<B>,
        progress: &mut dyn FnMut(&SceneEvent),
    ) -> Result<SceneSegmentation, String> {
        let t0 = now_ms();
        let grid = TileGrid::new(img.width, img.height, options.tile, options.overlap)?;
        let tiles = grid.tiles();
        tokens.prepare((img.width, img.height, options.tile, options.overlap), tiles.len());
        let mut reports: Vec<TileReport> = tiles.iter().map(TileReport::new).collect();
        // The text tower does not see the image: once for the whole scene.
        let (text, note) = self.encode_sentence(sentence);
        fence(&text.t_sent).await?;
        let t1 = now_ms();

        let chosen: Vec<usize> = match options.selection {
            TileSelection::All => (0..tiles.len()).collect(),
            TileSelection::Localize { max_tiles, margin } => {
                for (i, t) in tiles.iter().enumerate() {
                    let g = tile_geometry(t, self.image_size);
                    let v = match tokens.get(i) {
                        Some(v) => v,
                        None => {
                            let (x01, _) = to_x01::<B>(&crop(img, t), self.image_size, &self.device);
                            let v = self.model.encode_aligner(x01);
                            tokens.keep(i, &v);
                            v
                        }
                    };
                    let prompts = self.model.prompt_from(&v, &text);
                    let dense = prompts.dense.ok_or("this model has no dense prompt, so it cannot localize: answer every tile")?;
                    let score = read(dense_score(dense, g)).await?[0];
                    reports[i].score = Some(score);
                    progress(&SceneEvent { phase: "locate", done: i + 1, total: tiles.len(), tile: &reports[i] });
                }
                choose(&reports, max_tiles, margin)
            }
        };
        let t2 = now_ms();

        let mut merger = BandMerger::new(img.width, img.height, grid.tile.min(img.height));
        let mut merge_ms = 0.0;
        for (k, &i) in chosen.iter().enumerate() {
            let t = &tiles[i];
            let (x01, g) = to_x01::<B>(&crop(img, t), self.image_size, &self.device);
            let v = match tokens.get(i) {
                Some(v) => v,
                None => {
                    let v = self.model.encode_aligner(x01.clone());
                    tokens.keep(i, &v);
                    v
                }
            };
            let encoding = ImageEncoding { v, sam: self.model.sam.encode_image(sam_pixels(x01)) };
            let prompter = self.model.prompt(&encoding, &text);
            if reports[i].score.is_none() {
                if let Some(dense) = &prompter.dense {
                    reports[i].score = Some(read(dense_score(dense.clone(), g)).await?[0]);
                }
            }
            let out = self.model.decode(&encoding, text.clone(), prompter, false);
            let logits = read(logits_at_original_size(out.mask_logits.clone(), g)).await?;
            let r = &mut reports[i];
            r.answered = true;
            r.predicted_iou = Some(read(out.iou).await?[0]);
            r.object_score_logit = Some(read(out.decoder.object_score_logits).await?[0]);
            r.mask_pixels = logits.iter().filter(|&&l| l > 0.0).count();
            let tm = now_ms();
            // Rows above this tile row's first row are final once its tiles arrive.
            merger.finish_until(t.y0);
            let (wx, wy) = (grid.weights(t.width), grid.weights(t.height));
            merger.add(t.x0, t.y0, t.width, t.height, &logits, &wx, &wy)?;
            merge_ms += now_ms() - tm;
            progress(&SceneEvent { phase: "answer", done: k + 1, total: chosen.len(), tile: &reports[i] });
        }
        let tm = now_ms();
        let merger_bytes = merger.bytes();
        let mask = merger.finish();
        merge_ms += now_ms() - tm;
        let t3 = now_ms();
        let area = mask.iter().filter(|&&m| m != 0).count();
        Ok(SceneSegmentation {
            width: img.width,
            height: img.height,
            mask,
            area,
            rows: grid.rows(),
            cols: grid.cols(),
            tiles: reports,
            options: *options,
            note,
            timings: SceneTimings { text: t1 - t0, locate: t2 - t1, answer: t3 - t2 - merge_ms, merge: merge_ms, total: t3 - t0 },
            merger_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(col: usize, score: f32) -> TileReport {
        let t = Tile { row: 0, col, x0: col * 192, y0: 0, width: 256, height: 256 };
        TileReport { score: Some(score), ..TileReport::new(&t) }
    }

    #[test]
    fn the_best_tile_and_its_close_neighbours_are_chosen() {
        // Tiles along a row: 1 is best; 2 overlaps it and is close; 4 is close but elsewhere.
        let r: Vec<TileReport> = [0.0, 5.0, 4.5, -3.0, 4.8, 3.0].into_iter().enumerate().map(|(c, s)| report(c, s)).collect();
        assert_eq!(choose(&r, 4, 1.0), vec![1, 2]);
        assert_eq!(choose(&r, 4, 6.0), vec![0, 1, 2]);
        assert_eq!(choose(&r, 1, 6.0), vec![1]);
        assert_eq!(choose(&r, 4, 0.0), vec![1]);
        assert!(choose(&[], 4, 1.0).is_empty());
    }

    #[test]
    fn tile_geometry_is_what_pre_processing_gives() {
        type B = burn::backend::NdArray;
        for (w, h) in [(256, 256), (100, 80), (300, 200)] {
            let img = RgbImage { height: h, width: w, data: vec![0; w * h * 3] };
            let t = Tile { row: 0, col: 0, x0: 0, y0: 0, width: w, height: h };
            let (_, g) = to_x01::<B>(&img, 256, &Default::default());
            assert_eq!(tile_geometry(&t, 256), g);
        }
    }

    #[test]
    fn reduce_averages_blocks() {
        let img = RgbImage { height: 2, width: 3, data: vec![0, 0, 0, 10, 10, 10, 20, 20, 20, 30, 30, 30, 40, 40, 40, 50, 50, 50] };
        let (r, k) = reduce(&img, 2);
        assert_eq!((r.width, r.height, k), (2, 1, 2));
        assert_eq!(r.data, vec![20, 20, 20, 35, 35, 35]);
        assert_eq!(reduce(&img, 8).0, img);
    }

    #[test]
    fn crops_cut_the_right_pixels() {
        let data: Vec<u8> = (0..4 * 3 * 3).map(|i| i as u8).collect();
        let img = RgbImage { height: 3, width: 4, data };
        let c = crop(&img, &Tile { row: 0, col: 0, x0: 1, y0: 1, width: 2, height: 2 });
        assert_eq!(c.data, vec![15, 16, 17, 18, 19, 20, 27, 28, 29, 30, 31, 32]);
    }
}
