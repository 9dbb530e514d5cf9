//! The shipped `nano` model (models/nano/nano.safetensors) still segments as well as reported.
//!
//! The subset is the first 16 test-split scenes (64 expressions) of the benchmark the model was
//! trained and evaluated on (`rsrefseg synth --seed 0 --n 1000`), regenerated here from the
//! seeded generator, so the test needs no data files. `models/nano/eval-subset.json` holds the
//! figures measured on exactly this subset when the model was shipped; the model must keep at
//! least 0.9× its gIoU (the margin absorbs thread-order rounding, not a real regression) and
//! its sentence sensitivity within 0.1. (No stage of the nano recipe trains on seed 0; its
//! test split is as unseen as the recipe's own test set.)

use rsrefseg::synth::writer::{jsonl_lines, scene_with_expressions, split_of, SPLITS};
use rsrefseg::synth::SynthConfig;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

const SEED: u64 = 0;
const SCENES: usize = 1000;
const SUBSET_SCENES: usize = 16;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Write the subset as a dataset directory whose `test.jsonl` holds its 64 samples.
fn write_subset(dir: &Path) -> usize {
    let config = SynthConfig::default();
    std::fs::create_dir_all(dir.join("images")).unwrap();
    let mut lines = Vec::new();
    let test: Vec<usize> = (0..SCENES).filter(|&i| SPLITS[split_of(&config, i, SCENES)] == "test").take(SUBSET_SCENES).collect();
    assert_eq!(test.len(), SUBSET_SCENES);
    for index in test {
        let (scene, expressions) = scene_with_expressions(&config, SEED, index as u64);
        let file_name = format!("images/{index:06}.png");
        image::RgbImage::from_raw(scene.width as u32, scene.height as u32, scene.image.clone())
            .unwrap()
            .save(dir.join(&file_name))
            .unwrap();
        lines.extend(jsonl_lines(&scene, &expressions, "test", index as u64, &file_name));
    }
    for split in SPLITS {
        let mut f = std::fs::File::create(dir.join(format!("{split}.jsonl"))).unwrap();
        if split == "test" {
            for l in &lines {
                writeln!(f, "{l}").unwrap();
            }
        }
    }
    lines.len()
}

#[test]
fn shipped_nano_keeps_its_reported_giou() {
    let weights = repo().join("models/nano/nano.safetensors");
    let reported: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("models/nano/eval-subset.json")).unwrap()).unwrap();
    let reported_giou = reported["giou"].as_f64().expect("giou in eval-subset.json");

    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("nano-regression");
    let _ = std::fs::remove_dir_all(&dir);
    let n = write_subset(&dir.join("data"));
    assert_eq!(n, 64);
    // `rsrefseg eval` of the shipped model on the subset, with `extra` flags: its JSON report.
    let eval = |name: &str, extra: &[&str]| -> Value {
        let json = dir.join(name);
        let out = Command::new(env!("CARGO_BIN_EXE_rsrefseg"))
            .args(["eval", "--config", "nano", "--tokenizer"])
            .arg(repo().join("models/nano/tokenizer.json"))
            .arg("--weights")
            .arg(&weights)
            .arg("--data")
            .arg(dir.join("data"))
            .args(["--split", "test", "--json"])
            .arg(&json)
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "eval {extra:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
    };
    let got = eval("eval.json", &[]);
    let giou = got["giou"].as_f64().unwrap();
    println!("nano on the regression subset: gIoU {giou:.4} (reported {reported_giou:.4})");
    assert!(giou >= 0.9 * reported_giou, "gIoU {giou:.4} < 0.9 × reported {reported_giou:.4}");
    // And it is a trained model, not noise: an untrained nano scores about 0.
    assert!(reported_giou > 0.08, "reported gIoU {reported_giou} is that of an untrained model");

    // It follows the sentence: expressions naming different objects of one image get different
    // masks about as often as reported (the figure a visitor of the page notices first).
    let distinct = |v: &Value| v["sentence_sensitivity"]["fraction_distinct"].as_f64().expect("sentence_sensitivity");
    let (got_s, reported_s) = (distinct(&got), distinct(&reported));
    println!("sentence sensitivity {got_s:.3} (reported {reported_s:.3})");
    assert!(got_s >= reported_s - 0.1, "sentence sensitivity {got_s:.3} < reported {reported_s:.3} − 0.1");
    assert!(reported_s > 0.5, "reported sentence sensitivity {reported_s} is that of a model that ignores the sentence");

    // `--precision int8` (int8 products in the encoders) answers with nearly the f32 masks: the
    // evaluation runs the f32 model beside it and compares every mask.
    let got8 = eval("eval-int8.json", &["--precision", "int8"]);
    let agreement = &got8["agreement_with_f32"];
    let mean = agreement["mean_mask_iou"].as_f64().expect("agreement_with_f32 in the int8 evaluation");
    println!("int8 vs f32 masks: mean IoU {mean:.4} over {} samples; int8 gIoU {:.4}", agreement["samples"], got8["giou"]);
    assert_eq!(agreement["samples"], json!(64));
    assert!(mean >= 0.98, "int8 masks agree with the f32 ones at mean IoU {mean:.4} < 0.98");
    assert!((got8["giou"].as_f64().unwrap() - giou).abs() < 0.02, "int8 gIoU {} vs f32 {giou}", got8["giou"]);
}
