//! The sentence must matter: on ONE image, expressions that name different objects must be
//! fitted to different masks. Eight different images can be memorised from the image alone
//! (`overfit.rs`); one image with four sentences cannot — the only thing that tells the four
//! samples apart is the text. The model is small (the reference-dev widths) but keeps the nano
//! preset's choices that decide whether the sentence reaches SAM: its tokenizer policy
//! (padding, pooled position) and its mask-input channels.
//!
//! The model is trained on the four sentences as one batch and evaluated one sentence at a time,
//! as a user runs it, so anything that makes a sentence's representation depend on its batch
//! fails here too.

mod common;

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::tensor::{Int, Tensor, TensorData};
use common::*;
use rsrefseg::config::RsRefSegConfig;
use rsrefseg::encoders::TextTokenizer;
use rsrefseg::loss::LossWeights;
use rsrefseg::synth::SceneStream;
use rsrefseg::train::{Batch, OptimConfig, ScheduleConfig, TrainModel, Trainer};

type AB = Autodiff<B>;

const S: usize = 128;

fn config() -> RsRefSegConfig {
    let nano = RsRefSegConfig::nano();
    let mut c = RsRefSegConfig::reference_dev();
    c.siglip.text_config.vocab_size = nano.siglip.text_config.vocab_size;
    c.siglip.text_config.max_position_embeddings = nano.siglip.text_config.max_position_embeddings;
    c.tokenizer = nano.tokenizer.clone();
    c.sam.mask_in_chans = nano.sam.mask_in_chans;
    c.sam.dynamic_multimask_via_stability = false;
    c.validate().unwrap();
    c
}

/// A scene with four expressions naming four different objects of at least 150 pixels.
fn scene() -> (Vec<f32>, Vec<(String, Vec<u8>)>) {
    let stream = SceneStream::new(11, S, 8);
    for i in 0..200 {
        let s = stream.sample(i);
        let mut picked: Vec<(String, Vec<u8>)> = Vec::new();
        let mut targets = Vec::new();
        for e in &s.expressions {
            let o = &s.scene.objects[e.target];
            if o.area >= 150 && !targets.contains(&e.target) {
                targets.push(e.target);
                picked.push((e.sent.clone(), o.mask.clone()));
            }
        }
        if picked.len() >= 4 {
            picked.truncate(4);
            return (rsrefseg::synth::stream::scene_x01(&s.scene), picked);
        }
    }
    panic!("no scene with four large referred objects");
}

fn iou(a: &[bool], b: &[bool]) -> f64 {
    let inter = a.iter().zip(b).filter(|(x, y)| **x && **y).count();
    let union = a.iter().zip(b).filter(|(x, y)| **x || **y).count();
    inter as f64 / union.max(1) as f64
}

#[test]
fn one_image_four_sentences_four_masks() {
    let config = config();
    let tokenizer = TextTokenizer::from_bytes(rsrefseg::synth::tokenizer::tokenizer_json().as_bytes(), config.tokenizer.clone()).unwrap();
    let (x, samples) = scene();
    let sentences: Vec<&str> = samples.iter().map(|(s, _)| s.as_str()).collect();
    let n = samples.len();
    let t = tokenizer.encode_batch(&sentences).unwrap();
    let l = t.len();
    let ids: Vec<i64> = t.input_ids.iter().flatten().map(|&v| v as i64).collect();
    let mask: Vec<i64> = t.attention_mask.iter().flatten().map(|&v| v as i64).collect();
    let gt: Vec<f32> = samples.iter().flat_map(|(_, m)| m.iter().map(|&v| f32::from(v))).collect();
    let d = dev();
    let batch = Batch::<AB> {
        x01: Tensor::from_data(TensorData::new(x.repeat(n), [n, 3, S, S]), &d),
        gt: Tensor::from_data(TensorData::new(gt, [n, 1, S, S]), &d),
        input_ids: Tensor::<AB, 2, Int>::from_data(TensorData::new(ids, [n, l]), &d),
        attention_mask: Tensor::<AB, 2, Int>::from_data(TensorData::new(mask, [n, l]), &d),
    };

    let steps = 200;
    <AB as burn::tensor::backend::Backend>::seed(&d, 5);
    let model = TrainModel::<AB>::new(&config, None, &d).unwrap();
    let schedule = ScheduleConfig { base_lr: 2e-3, warmup_epochs: 10.0, ..ScheduleConfig::released() };
    let mut trainer = Trainer::new(model, LossWeights::code(), OptimConfig::default(), schedule, 1, 1, steps, &d);
    let mut losses = Vec::new();
    for step in 0..steps {
        trainer.state.epoch = step;
        losses.push(trainer.train_batch(&batch).unwrap().unwrap().total);
    }

    // Inference, one sentence at a time, masks at the input size.
    let model = trainer.model.model.valid();
    let x1 = Tensor::<B, 4>::from_data(TensorData::new(x, [1, 3, S, S]), &d);
    let image = model.encode_image(x1);
    let mut preds = Vec::new();
    let mut fits = Vec::new();
    for (sent, m) in &samples {
        let t = tokenizer.encode_batch(&[sent.as_str()]).unwrap();
        let l = t.len();
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(t.input_ids[0].iter().map(|&v| v as i64).collect::<Vec<_>>(), [1, l]), &d);
        let am = Tensor::<B, 2, Int>::from_data(TensorData::new(t.attention_mask[0].iter().map(|&v| v as i64).collect::<Vec<_>>(), [1, l]), &d);
        let out = model.query(&image, ids, Some(am), false);
        let up = rsrefseg::loss::bce_dice::upsample_logits(out.mask_logits, [S, S]);
        let pred: Vec<bool> = up.into_data().to_vec::<f32>().unwrap().iter().map(|&v| v > 0.0).collect();
        let truth: Vec<bool> = m.iter().map(|&v| v != 0).collect();
        fits.push(iou(&pred, &truth));
        preds.push(pred);
    }
    let mut pair_ious = Vec::new();
    for i in 0..n {
        for j in i + 1..n {
            pair_ious.push(iou(&preds[i], &preds[j]));
        }
    }
    println!(
        "sentences {sentences:?}\nloss {:.3} -> {:.3}; IoU with the named object {fits:.3?}; IoU between the answers {pair_ious:.3?}",
        losses[0],
        losses[losses.len() - 1]
    );
    for (k, f) in fits.iter().enumerate() {
        assert!(*f >= 0.6, "{:?}: IoU {f:.3} with its object (all: {fits:.3?})", sentences[k]);
    }
    assert!(pair_ious.iter().all(|&v| v < 0.3), "answers to different sentences overlap: {pair_ious:.3?}");
}

/// A sentence's pooled representation does not depend on the other sentences of its batch
/// (the text tower pools the last position, so padding must put it in the same place).
#[test]
fn sentence_embedding_does_not_depend_on_the_batch() {
    let config = RsRefSegConfig::nano();
    let tokenizer = TextTokenizer::from_bytes(rsrefseg::synth::tokenizer::tokenizer_json().as_bytes(), config.tokenizer.clone()).unwrap();
    let d = dev();
    <B as burn::tensor::backend::Backend>::seed(&d, 1);
    let model = config.init::<B>(&d).unwrap();
    let encode = |sents: &[&str]| {
        let t = tokenizer.encode_batch(sents).unwrap();
        let (n, l) = (sents.len(), t.len());
        let ids: Vec<i64> = t.input_ids.iter().flatten().map(|&v| v as i64).collect();
        let am: Vec<i64> = t.attention_mask.iter().flatten().map(|&v| v as i64).collect();
        let out = model.encode_text(
            Tensor::from_data(TensorData::new(ids, [n, l]), &d),
            Some(Tensor::from_data(TensorData::new(am, [n, l]), &d)),
        );
        out.t_sent.into_data().to_vec::<f32>().unwrap()
    };
    let alone = encode(&["the red ship"]);
    let batched = encode(&["the red ship", "the second white storage tank from the left between the two airplanes"]);
    let diff = alone.iter().zip(&batched[..alone.len()]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(diff < 1e-5, "t_sent of a sentence changes with its batch by {diff}");
}
