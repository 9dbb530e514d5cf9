//! The shipped nano model's int8 web bundle (`models/nano/nano.rsb`, block-quantised `Linear`
//! weights) segments like its f32 weights (`models/nano/nano.safetensors`) over the whole test
//! split of the synthetic benchmark it was trained on (`rsrefseg synth --seed 0 --n 1000`:
//! 100 scenes, 400 expressions, regenerated here from the seeded generator).
//!
//! Agreement is the IoU between the two models' masks (not with the ground truth): pooled over
//! the split and averaged per expression, both at least 0.98.

use burn::tensor::{Int, Tensor, TensorData};
use rsrefseg::checkpoint::{read_tensors, LoadOptions};
use rsrefseg::config::RsRefSegConfig;
use rsrefseg::encoders::TextTokenizer;
use rsrefseg::export::Bundle;
use rsrefseg::model::{load_rsrefseg_tensors, RsRefSeg};
use rsrefseg::post::{binary_mask, logits_at_original_size};
use rsrefseg::pre::{to_x01, Geometry, RgbImage};
use rsrefseg::synth::writer::{scene_with_expressions, split_of, SPLITS};
use rsrefseg::synth::SynthConfig;
use std::path::{Path, PathBuf};

mod common;
use common::{dev, B};

const SEED: u64 = 0;
const SCENES: usize = 1000;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Masks (0/1, original size) for a batch of sentences about one encoded image.
fn masks(model: &RsRefSeg<B>, x01: &Tensor<B, 4>, g: Geometry, ids: &[Vec<u32>], att: &[Vec<u32>]) -> Vec<Vec<u8>> {
    let (b, l) = (ids.len(), ids[0].len());
    let flat = |v: &[Vec<u32>]| v.iter().flatten().map(|&x| x as i64).collect::<Vec<_>>();
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(flat(ids), [b, l]), &dev());
    let att = Tensor::<B, 2, Int>::from_data(TensorData::new(flat(att), [b, l]), &dev());
    let image = model.encode_image(x01.clone());
    let out = model.query(&image, ids, Some(att), false);
    let (h, w) = g.original;
    let bits: Vec<i32> = binary_mask(logits_at_original_size(out.mask_logits, g)).int().into_data().convert::<i32>().into_vec().unwrap();
    bits.chunks(h * w).map(|m| m.iter().map(|&v| u8::from(v != 0)).collect()).collect()
}

#[test]
fn q8_bundle_agrees_with_f32_weights_on_the_test_split() {
    let config = RsRefSegConfig::nano();
    let f32_model = {
        let tensors = read_tensors(&repo().join("models/nano/nano.safetensors")).unwrap();
        load_rsrefseg_tensors::<B>(tensors, &config, &dev(), LoadOptions::default()).unwrap().0
    };
    let bundle = Bundle::from_bytes(std::fs::read(repo().join("models/nano/nano.rsb")).unwrap()).unwrap();
    assert!(bundle.tensors().iter().any(|e| e.dtype.name() == "q8"), "nano.rsb is not an int8 bundle");
    let q8_model = bundle.load_model::<B>(&dev()).unwrap();
    let tokenizer = TextTokenizer::from_bytes(bundle.tokenizer_json().as_bytes(), config.tokenizer.clone()).unwrap();

    let synth = SynthConfig::default();
    let (mut inter, mut union, mut sum, mut n, mut worst) = (0usize, 0usize, 0.0f64, 0usize, (1.0f64, String::new()));
    for index in (0..SCENES).filter(|&i| SPLITS[split_of(&synth, i, SCENES)] == "test") {
        let (scene, expressions) = scene_with_expressions(&synth, SEED, index as u64);
        let img = RgbImage::new(scene.height, scene.width, scene.image.clone()).unwrap();
        let (x01, g) = to_x01::<B>(&img, config.image_size(), &dev());
        let sentences: Vec<&str> = expressions.iter().map(|e| e.sent.as_str()).collect();
        let t = tokenizer.encode_batch(&sentences).unwrap();
        let a = masks(&f32_model, &x01, g, &t.input_ids, &t.attention_mask);
        let b = masks(&q8_model, &x01, g, &t.input_ids, &t.attention_mask);
        for ((ma, mb), sent) in a.iter().zip(&b).zip(&sentences) {
            let i = ma.iter().zip(mb).filter(|(x, y)| **x == 1 && **y == 1).count();
            let u = ma.iter().zip(mb).filter(|(x, y)| **x == 1 || **y == 1).count();
            let iou = if u == 0 { 1.0 } else { i as f64 / u as f64 };
            (inter, union, sum, n) = (inter + i, union + u, sum + iou, n + 1);
            if iou < worst.0 {
                worst = (iou, format!("scene {index}, {sent:?}: {i} / {u} pixels"));
            }
        }
    }
    let pooled = inter as f64 / union as f64;
    let mean = sum / n as f64;
    println!("q8 vs f32 over {n} test expressions: pooled mask IoU {pooled:.4}, mean {mean:.4}, worst {:.4} ({})", worst.0, worst.1);
    assert_eq!(n, 400, "the test split has 100 scenes of 4 expressions");
    assert!(union > 0, "neither model predicted any pixel");
    assert!(pooled >= 0.98, "pooled q8-vs-f32 mask IoU {pooled:.4} < 0.98");
    assert!(mean >= 0.98, "mean q8-vs-f32 mask IoU {mean:.4} < 0.98");
}
