//! Dataset files in the layout of the real benchmarks (reference §8.1): `DIR/images/*.png` and
//! `DIR/{train,val,test}.jsonl`, one sample per line,
//! `{split, image_id, sent, file_name, segmentation:{size:[h,w], counts}, category_name, tag, kind}`
//! with the mask as a compressed COCO RLE string and `file_name` relative to `DIR`.

use super::expressions::generate_expressions_weighted;
use super::scene::{generate_scene, Scene};
use super::{SynthConfig, SynthRng};
use crate::data::rle::{Mask, Rle};
use serde::Serialize;
use std::io::Write;
use std::path::Path;

/// The split names, in file order.
pub const SPLITS: [&str; 3] = ["train", "val", "test"];

#[derive(Serialize)]
struct Segmentation {
    size: [usize; 2],
    counts: String,
}

#[derive(Serialize)]
struct Line<'a> {
    split: &'a str,
    image_id: u64,
    sent: &'a str,
    file_name: String,
    segmentation: Segmentation,
    category_name: &'a str,
    tag: &'a str,
    kind: &'a str,
}

/// What [`write_dataset`] wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DatasetSummary {
    pub images: usize,
    /// Samples per split, in [`SPLITS`] order.
    pub samples: [usize; 3],
    pub simple: usize,
    pub relational: usize,
}

/// Split of scene `index` out of `n`: the first scenes are train, then val, then test, so that
/// no image is shared between splits.
pub fn split_of(config: &SynthConfig, index: usize, n: usize) -> usize {
    let n_test = ((n as f32 * config.test_fraction).round() as usize).max((n >= 3) as usize);
    let n_val = ((n as f32 * config.val_fraction).round() as usize).max((n >= 3) as usize);
    let n_train = n.saturating_sub(n_test + n_val);
    if index < n_train {
        0
    } else if index < n_train + n_val {
        1
    } else {
        2
    }
}

/// One scene and its expressions, exactly as [`write_dataset`] makes scene `index`.
pub fn scene_with_expressions(config: &SynthConfig, seed: u64, index: u64) -> (Scene, Vec<super::Expression>) {
    let mut rng = SynthRng::for_scene(seed, index);
    let scene = generate_scene(config, &mut rng);
    let expressions = generate_expressions_weighted(&scene, config.expressions_per_scene, config.ranking_weight, &mut rng);
    (scene, expressions)
}

/// JSONL lines of one scene (without the trailing newline).
pub fn jsonl_lines(scene: &Scene, expressions: &[super::Expression], split: &str, image_id: u64, file_name: &str) -> Vec<String> {
    expressions
        .iter()
        .map(|e| {
            let o = &scene.objects[e.target];
            let mask = Mask { height: scene.height, width: scene.width, data: o.mask.clone() };
            let rle = Rle::encode(&mask).expect("mask sized to its image");
            let line = Line {
                split,
                image_id,
                sent: &e.sent,
                file_name: file_name.to_string(),
                segmentation: Segmentation { size: [scene.height, scene.width], counts: rle.to_string() },
                category_name: o.category.name(),
                tag: e.tag.as_str(),
                kind: e.expr.kind(),
            };
            serde_json::to_string(&line).expect("plain data serialises")
        })
        .collect()
}

/// Generate `n` scenes with `seed` and write them under `dir`.
pub fn write_dataset(dir: &Path, config: &SynthConfig, seed: u64, n: usize) -> std::io::Result<DatasetSummary> {
    std::fs::create_dir_all(dir.join("images"))?;
    let mut files = Vec::new();
    for split in SPLITS {
        files.push(std::io::BufWriter::new(std::fs::File::create(dir.join(format!("{split}.jsonl")))?));
    }
    let mut summary = DatasetSummary::default();
    for index in 0..n {
        let (scene, expressions) = scene_with_expressions(config, seed, index as u64);
        let file_name = format!("images/{index:06}.png");
        let img = image::RgbImage::from_raw(scene.width as u32, scene.height as u32, scene.image.clone())
            .expect("RGB buffer sized to the image");
        img.save_with_format(dir.join(&file_name), image::ImageFormat::Png).map_err(std::io::Error::other)?;
        let split = split_of(config, index, n);
        for line in jsonl_lines(&scene, &expressions, SPLITS[split], index as u64, &file_name) {
            writeln!(files[split], "{line}")?;
        }
        summary.images += 1;
        summary.samples[split] += expressions.len();
        for e in &expressions {
            match e.tag {
                super::Tag::Simple => summary.simple += 1,
                super::Tag::Relational => summary.relational += 1,
            }
        }
    }
    for mut f in files {
        f.flush()?;
    }
    Ok(summary)
}
