//! The `nano` preset with its word-level tokenizer: the committed `models/nano/tokenizer.json` is
//! the generator's output, every synthetic expression tokenises without `<unk>` within the text
//! tower's positions, and (ignored by default) the cost of a forward and of a training step.
//!
//! Regenerate the tokenizer file after a vocabulary change with
//! `RSREFSEG_WRITE_TOKENIZER=1 cargo test -p rsrefseg --test nano`.

mod common;

use burn::tensor::{Int, Tensor, TensorData};
use common::*;
use rsrefseg::config::{RsRefSegConfig, NANO_TEXT_POSITIONS};
use rsrefseg::encoders::TextTokenizer;
use rsrefseg::synth::tokenizer::{tokenizer_json, SPECIAL_TOKENS};
use rsrefseg::synth::writer::scene_with_expressions;
use rsrefseg::synth::{Scene, SynthConfig};
use std::path::PathBuf;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/nano/tokenizer.json")
}

fn nano_tokenizer() -> TextTokenizer {
    TextTokenizer::from_bytes(tokenizer_json().as_bytes(), RsRefSegConfig::nano().tokenizer).unwrap()
}

#[test]
fn committed_tokenizer_is_the_generated_one() {
    let generated = tokenizer_json();
    let path = committed_path();
    if std::env::var_os("RSREFSEG_WRITE_TOKENIZER").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        committed == generated,
        "{} is stale: regenerate it with RSREFSEG_WRITE_TOKENIZER=1 cargo test -p rsrefseg --test nano",
        path.display()
    );
    // The vocabulary size is the text tower's.
    let t: tokenizers::Tokenizer = committed.parse().unwrap();
    assert_eq!(t.get_vocab_size(true), RsRefSegConfig::nano().siglip.text_config.vocab_size);
}

#[test]
fn synthetic_expressions_tokenise_without_unk_within_the_positions() {
    let tok = nano_tokenizer();
    let [pad, eos, _bos, unk] = SPECIAL_TOKENS.map(|s| {
        let ids = tok.encode_batch(&[s]).unwrap().input_ids;
        // "<x>" alone encodes to [id(<x>), <eos>].
        ids[0][0]
    });
    assert_eq!((pad, eos, unk), (0, 1, 3));
    let config = SynthConfig::default();
    let mut longest = 0;
    let mut sentences = 0;
    for index in 0..40 {
        let (_, expressions) = scene_with_expressions(&config, 11, index);
        let sents: Vec<&str> = expressions.iter().map(|e| e.sent.as_str()).collect();
        for s in &sents {
            let ids = tok.encode_one(s).unwrap();
            assert!(!ids.contains(&unk), "{s:?} → {ids:?} has <unk>");
            assert_eq!(ids.last(), Some(&eos), "{s:?} does not end with <eos>");
            assert_eq!(ids.len(), s.split(' ').count() + 1, "{s:?}: one id per word plus <eos>");
            assert!(ids.len() <= NANO_TEXT_POSITIONS);
            longest = longest.max(ids.len());
            sentences += 1;
        }
        // A batch pads right with <pad>, masked out.
        let batch = tok.encode_batch(&sents).unwrap();
        for (ids, mask) in batch.input_ids.iter().zip(&batch.attention_mask) {
            let n = mask.iter().filter(|&&m| m == 1).count();
            assert!(mask[..n].iter().all(|&m| m == 1) && ids[n..].iter().all(|&i| i == pad));
            assert_eq!(ids[n - 1], eos);
        }
    }
    assert!(sentences >= 100, "only {sentences} sentences");
    println!("{sentences} sentences, longest {longest} tokens (of {NANO_TEXT_POSITIONS} positions)");
}

/// `[3, S, S]` in [0, 1] and the target mask `[1, S, S]` of one expression.
fn sample(scene: &Scene, target: usize) -> (Vec<f32>, Vec<f32>) {
    let (w, h) = (scene.width, scene.height);
    let mut x = vec![0f32; 3 * h * w];
    for (p, rgb) in scene.image.chunks_exact(3).enumerate() {
        for c in 0..3 {
            x[c * h * w + p] = rgb[c] as f32 / 255.0;
        }
    }
    let gt = scene.objects[target].mask.iter().map(|&m| m as f32).collect();
    (x, gt)
}

/// Wall time of a batch-1 forward (inference backend) and of batch-4 training steps
/// (`Autodiff<NdArray>`) on synthetic scenes. Run with
/// `cargo test --release -p rsrefseg --test nano -- --ignored --nocapture nano_timing`.
#[test]
#[ignore = "timing, prints numbers"]
fn nano_timing() {
    use burn::backend::Autodiff;
    use rsrefseg::loss::LossWeights;
    use rsrefseg::train::{Batch, OptimConfig, ScheduleConfig, TrainModel, Trainer};
    use std::time::Instant;
    type AB = Autodiff<B>;

    let config = RsRefSegConfig::nano();
    let tok = nano_tokenizer();
    let synth = SynthConfig::default();
    let s = synth.image_size;
    let (scene, expressions) = scene_with_expressions(&synth, 5, 0);

    // Inference: batch 1, encode + query.
    let model = config.init::<B>(&dev()).unwrap();
    let (x, _) = sample(&scene, expressions[0].target);
    let ids = tok.encode_batch(&[expressions[0].sent.as_str()]).unwrap();
    let l = ids.len();
    let run = || {
        let x01 = Tensor::<B, 4>::from_data(TensorData::new(x.clone(), [1, 3, s, s]), &dev());
        let input = Tensor::<B, 2, Int>::from_data(TensorData::new(ids.input_ids[0].clone(), [1, l]), &dev());
        let out = model.forward(x01, input, None, false);
        let _: Vec<f32> = out.mask_logits.into_data().to_vec().unwrap();
    };
    run();
    let t = Instant::now();
    let reps = 5;
    for _ in 0..reps {
        run();
    }
    let forward = t.elapsed().as_secs_f64() / reps as f64;

    // Training: batch 4 from four scenes.
    let b = 4;
    let mut xs = Vec::new();
    let mut gts = Vec::new();
    let mut sents = Vec::new();
    for index in 0..b as u64 {
        let (scene, expressions) = scene_with_expressions(&synth, 5, index);
        let (x, gt) = sample(&scene, expressions[0].target);
        xs.extend(x);
        gts.extend(gt);
        sents.push(expressions[0].sent.clone());
    }
    let refs: Vec<&str> = sents.iter().map(String::as_str).collect();
    let enc = tok.encode_batch(&refs).unwrap();
    let l = enc.len();
    let flat = |v: &Vec<Vec<u32>>| v.iter().flatten().map(|&i| i as i64).collect::<Vec<_>>();
    let batch = Batch::<AB> {
        x01: Tensor::from_data(TensorData::new(xs, [b, 3, s, s]), &dev()),
        gt: Tensor::from_data(TensorData::new(gts, [b, 1, s, s]), &dev()),
        input_ids: Tensor::from_data(TensorData::new(flat(&enc.input_ids), [b, l]), &dev()),
        attention_mask: Tensor::from_data(TensorData::new(flat(&enc.attention_mask), [b, l]), &dev()),
    };
    let model = TrainModel::<AB>::new(&config, None, &dev()).unwrap();
    let schedule = ScheduleConfig { warmup_epochs: 0.0, ..ScheduleConfig::released() };
    let mut trainer = Trainer::new(model, LossWeights::code(), OptimConfig::default(), schedule, 1, 1000, 10, &dev());
    trainer.train_batch(&batch).unwrap();
    let steps = 3;
    let t = Instant::now();
    let mut losses = Vec::new();
    for _ in 0..steps {
        losses.push(trainer.train_batch(&batch).unwrap().unwrap().total);
    }
    let step = t.elapsed().as_secs_f64() / steps as f64;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "nano on {threads} threads: forward (batch 1) {:.0} ms; training step (batch 4) {:.2} s \
         ({:.2} s/sample; 3000 samples/epoch ≈ {:.1} min); losses {losses:?}",
        forward * 1e3,
        step,
        step / b as f64,
        step / b as f64 * 3000.0 / 60.0
    );
}
