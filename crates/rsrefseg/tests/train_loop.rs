//! The training loop on a tiny configuration and a tiny generated dataset: the loss goes down,
//! and a run stopped and resumed from its checkpoint continues exactly like an uninterrupted one.

mod common;

use burn::backend::Autodiff;
use burn::tensor::{Int, Tensor, TensorData};
use common::*;
use rsrefseg::config::RsRefSegConfig;
use rsrefseg::loss::LossWeights;
use rsrefseg::train::{Batch, OptimConfig, ScheduleConfig, TrainModel, Trainer};

type AB = Autodiff<B>;

/// Samples of a bright square on a dark background; the sentence says which corner.
fn batches(n: usize, b: usize) -> Vec<Batch<AB>> {
    let s = 128;
    (0..n)
        .map(|i| {
            let mut x = vec![0.1f32; b * 3 * s * s];
            let mut gt = vec![0f32; b * s * s];
            let mut ids = Vec::new();
            for j in 0..b {
                let corner = (i * b + j) % 4;
                let (y0, x0) = [(8, 8), (8, 72), (72, 8), (72, 72)][corner];
                for y in y0..y0 + 40 {
                    for xx in x0..x0 + 40 {
                        gt[j * s * s + y * s + xx] = 1.0;
                        for c in 0..3 {
                            x[((j * 3 + c) * s + y) * s + xx] = 0.9;
                        }
                    }
                }
                // "<word> <corner word> <eos>"
                ids.extend_from_slice(&[43, [41, 32, 8, 44][corner], 1]);
            }
            let dev = dev();
            Batch {
                x01: Tensor::from_data(TensorData::new(x, [b, 3, s, s]), &dev),
                gt: Tensor::from_data(TensorData::new(gt, [b, 1, s, s]), &dev),
                input_ids: Tensor::<AB, 2, Int>::from_data(TensorData::new(ids, [b, 3]), &dev),
                attention_mask: Tensor::<AB, 2, Int>::ones([b, 3], &dev),
            }
        })
        .collect()
}

fn trainer(seed: u64) -> Trainer<AB> {
    <AB as burn::tensor::backend::Backend>::seed(&dev(), seed);
    let model = TrainModel::<AB>::new(&RsRefSegConfig::reference_dev(), None, &dev()).unwrap();
    let schedule = ScheduleConfig { base_lr: 3e-4, warmup_epochs: 0.0, ..ScheduleConfig::released() };
    Trainer::new(model, LossWeights::code(), OptimConfig::default(), schedule, 1, 4, 100, &dev())
}

#[test]
fn loss_goes_down_and_resume_continues_identically() {
    let data = batches(4, 2);
    let mut t = trainer(7);
    let mut losses = Vec::new();
    for epoch in 0..4 {
        t.state.epoch = epoch;
        for b in &data {
            losses.push(t.train_batch(b).unwrap().unwrap().total);
        }
    }
    let first: f64 = losses[..4].iter().sum::<f64>() / 4.0;
    let last: f64 = losses[losses.len() - 4..].iter().sum::<f64>() / 4.0;
    assert!(last < 0.8 * first, "loss did not go down: {losses:?}");

    // Interrupted run: 2 epochs, checkpoint, a fresh process state (new trainer, other seed),
    // resume, 2 more epochs — the same losses as the uninterrupted run.
    let dir = std::env::temp_dir().join(format!("rsrefseg-resume-{}", std::process::id()));
    let mut a = trainer(7);
    let mut resumed = Vec::new();
    for epoch in 0..2 {
        a.state.epoch = epoch;
        for b in &data {
            resumed.push(a.train_batch(b).unwrap().unwrap().total);
        }
    }
    a.save(&dir).unwrap();
    drop(a);
    let mut b2 = trainer(99).resume(&dir).unwrap();
    assert_eq!(b2.state.step, 8);
    for epoch in 2..4 {
        b2.state.epoch = epoch;
        for b in &data {
            resumed.push(b2.train_batch(b).unwrap().unwrap().total);
        }
    }
    for (i, (x, y)) in losses.iter().zip(&resumed).enumerate() {
        assert!((x - y).abs() <= 1e-4 * x.abs().max(1.0), "step {i}: {x} vs {y}\n{losses:?}\n{resumed:?}");
    }

    // A state claiming a step beyond the run (edited by hand) is refused instead of "finishing"
    // the run at once.
    let state = dir.join("state.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    m["state"]["step"] = 100_000.into();
    std::fs::write(&state, m.to_string()).unwrap();
    for f in std::fs::read_dir(&dir).unwrap() {
        let p = f.unwrap().path();
        if p.file_name().unwrap().to_string_lossy().starts_with("state-") {
            std::fs::write(&p, m.to_string()).unwrap();
        }
    }
    let e = trainer(99).resume(&dir).err().expect("a step beyond the run is refused").to_string();
    assert!(e.contains("step 100000") && e.contains("beyond"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}
