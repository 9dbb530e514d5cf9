//! Data-parallel training on several devices (burn's `Module::fork`,
//! `GradientsParams::to_device` and `GradientsAccumulator`, one worker thread per device) gives
//! the gradients, losses and updates of one device accumulating the same shards. The CPU
//! backend has a single device, so the "devices" here are several `NdArrayDevice::Cpu`
//! instances: the worker threads, forks, transfers and reduction all run, only the copies
//! between devices are no-ops.

mod common;

use burn::backend::Autodiff;
use burn::module::{ModuleVisitor, Param, ParamId};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{Int, Tensor, TensorData};
use common::*;
use rsrefseg::checkpoint::{module_tensors, HostTensor};
use rsrefseg::config::RsRefSegConfig;
use rsrefseg::loss::{LossWeights, RefSegLoss};
use rsrefseg::train::data_parallel::{materialize, shard_step, DataParallel};
use rsrefseg::train::{Batch, OptimConfig, ScheduleConfig, StepReport, TrainModel, Trainer};

type AB = Autodiff<B>;

const TOL: f64 = 1e-5;

/// `b` samples of a bright square in one corner; the sentence names the corner. `first` picks
/// where in the corner cycle the batch starts, so two shards differ.
fn batch(first: usize, b: usize, len: usize) -> Batch<AB> {
    let s = 128;
    let mut x = vec![0.1f32; b * 3 * s * s];
    let mut gt = vec![0f32; b * s * s];
    let mut ids = Vec::new();
    let mut mask = Vec::new();
    for j in 0..b {
        let corner = (first + j) % 4;
        let (y0, x0) = [(8, 8), (8, 72), (72, 8), (72, 72)][corner];
        for y in y0..y0 + 40 {
            for xx in x0..x0 + 40 {
                gt[j * s * s + y * s + xx] = 1.0;
                for c in 0..3 {
                    x[((j * 3 + c) * s + y) * s + xx] = 0.9;
                }
            }
        }
        // "<word> <corner word> <eos>", padded to `len` (shards may pad differently).
        let mut sentence = vec![43, [41, 32, 8, 44][corner], 1];
        let real = sentence.len();
        sentence.resize(len, 0);
        ids.extend(sentence);
        mask.extend((0..len).map(|i| i64::from(i < real)));
    }
    Batch {
        x01: Tensor::from_data(TensorData::new(x, [b, 3, s, s]), &dev()),
        gt: Tensor::from_data(TensorData::new(gt, [b, 1, s, s]), &dev()),
        input_ids: Tensor::<AB, 2, Int>::from_data(TensorData::new(ids, [b, len]), &dev()),
        attention_mask: Tensor::<AB, 2, Int>::from_data(TensorData::new(mask, [b, len]), &dev()),
    }
}

fn model(seed: u64) -> TrainModel<AB> {
    <AB as burn::tensor::backend::Backend>::seed(&dev(), seed);
    TrainModel::<AB>::new(&RsRefSegConfig::reference_dev(), None, &dev()).unwrap()
}

#[test]
fn replicas_of_a_fresh_model_hold_the_same_weights() {
    // What `Trainer::with_devices` guards against: clones of never-read parameters draw their
    // own values; after `materialize` they are copies.
    let lazy = model(3);
    let copy = lazy.clone();
    let (a, b) = (module_tensors::<AB, _>(&lazy), module_tensors::<AB, _>(&copy));
    assert!(a.iter().any(|(name, t)| max_diff(t, &b[name]) > 0.0), "lazy clones drew the same values");
    let m = model(3);
    materialize(&m);
    let copy = m.clone();
    let (a, b) = (module_tensors::<AB, _>(&m), module_tensors::<AB, _>(&copy));
    for (name, t) in &a {
        assert_eq!(max_diff(t, &b[name]), 0.0, "{name}");
    }
}

/// Every float parameter of the module: (id, rank).
struct Ids(Vec<(ParamId, usize)>);

impl ModuleVisitor<AB> for Ids {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
        self.0.push((param.id, D));
    }
}

fn grad(grads: &GradientsParams, id: ParamId, rank: usize) -> Option<HostTensor> {
    macro_rules! get {
        ($d:literal) => {
            grads.get::<B, $d>(id).map(HostTensor::from_tensor)
        };
    }
    match rank {
        1 => get!(1),
        2 => get!(2),
        3 => get!(3),
        4 => get!(4),
        5 => get!(5),
        _ => panic!("rank {rank}"),
    }
}

fn max_diff(a: &HostTensor, b: &HostTensor) -> f64 {
    assert_eq!(a.shape, b.shape);
    a.data.iter().zip(&b.data).map(|(x, y)| (x - y).abs() as f64).fold(0.0, f64::max)
}

#[test]
fn two_devices_give_the_gradients_of_one_device_accumulating_both_shards() {
    let m = model(11);
    let loss = RefSegLoss::new(LossWeights::code());
    // Shards of 2 samples, padded to different lengths as per-device tokenisation would.
    let shards = [batch(0, 2, 3), batch(2, 2, 5)];
    // Each shard's loss is divided by 2 (two shards per step), as the trainer does.
    let divisor = 2.0;

    let mut single = GradientsAccumulator::<TrainModel<AB>>::new();
    let mut single_values = Vec::new();
    for s in &shards {
        let out = shard_step(&m, s, &loss, divisor);
        single.accumulate(&m, out.grads.expect("finite loss"));
        single_values.push(out.values);
    }
    let single = single.grads();

    let parallel = DataParallel::<AB>::new(vec![dev(), dev()]);
    let outputs = parallel.run(&m, &loss, shards.to_vec(), divisor).expect("workers alive");
    assert_eq!(outputs.len(), 2);
    let mut multi = GradientsAccumulator::<TrainModel<AB>>::new();
    let mut multi_values = Vec::new();
    for out in outputs {
        multi.accumulate(&m, out.grads.expect("finite loss"));
        multi_values.push(out.values);
    }
    let multi = multi.grads();

    for (s, (a, b)) in single_values.iter().zip(&multi_values).enumerate() {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= TOL, "shard {s} losses: {a:?} vs {b:?}");
        }
    }
    let mut ids = Ids(Vec::new());
    burn::module::Module::visit(&m, &mut ids);
    let mut compared = 0;
    let mut worst = 0f64;
    for &(id, rank) in &ids.0 {
        match (grad(&single, id, rank), grad(&multi, id, rank)) {
            (Some(a), Some(b)) => {
                worst = worst.max(max_diff(&a, &b));
                compared += 1;
            }
            (None, None) => {}
            (a, b) => panic!("parameter {id}: gradient on one side only ({} vs {})", a.is_some(), b.is_some()),
        }
    }
    eprintln!("largest gradient difference {worst:e} over {compared} parameters");
    assert!(compared > 50, "only {compared} gradients compared");
    assert!(worst <= TOL, "largest gradient difference {worst:e} over {compared} parameters");
}

fn trainer(model: TrainModel<AB>, grad_accum: usize) -> Trainer<AB> {
    let schedule = ScheduleConfig { base_lr: 3e-4, warmup_epochs: 0.0, ..ScheduleConfig::released() };
    Trainer::new(model, LossWeights::code(), OptimConfig::default(), schedule, grad_accum, 4, 100, &dev())
}

fn assert_reports_close(a: &StepReport, b: &StepReport) {
    let pairs = [
        (a.bce, b.bce),
        (a.dice, b.dice),
        (a.ortho, b.ortho),
        (a.contrastive, b.contrastive),
        (a.total, b.total),
        (a.grad_norm, b.grad_norm),
        (a.lr, b.lr),
    ];
    for (x, y) in pairs {
        assert!((x - y).abs() <= TOL * x.abs().max(1.0), "{a:?}\nvs\n{b:?}");
    }
    assert_eq!((a.step, a.epoch), (b.step, b.epoch));
}

#[test]
fn data_parallel_steps_match_gradient_accumulation() {
    // One device accumulating two batches per step vs two devices with one shard each, from the
    // same initial weights (drawn before cloning: clones of a lazy parameter draw on their own).
    let m = model(5);
    materialize(&m);
    let mut one = trainer(m.clone(), 2);
    let mut two = trainer(m, 1).with_devices(vec![dev(), dev()]);
    assert_eq!(two.num_devices(), 2);
    for step in 0..2 {
        let (s0, s1) = (batch(step, 2, 3), batch(step + 2, 2, 4));
        assert!(one.train_batch(&s0).unwrap().is_none());
        let a = one.train_batch(&s1).unwrap().expect("a step after two batches");
        let b = two.train_shards(vec![s0, s1]).unwrap().expect("a step after one sharded batch");
        assert_reports_close(&a, &b);
        assert_eq!(one.state.micro_step, 2 * two.state.micro_step);
    }
    // The weights after two AdamW steps (BatchNorm running statistics aside: burn averages the
    // replicas' updates, where accumulation makes successive ones).
    let (wa, wb) = (module_tensors::<B, _>(&one.valid_model()), module_tensors::<B, _>(&two.valid_model()));
    assert_eq!(wa.len(), wb.len());
    let mut worst = 0f64;
    for (name, a) in &wa {
        if name.contains("running_") {
            continue;
        }
        worst = worst.max(max_diff(a, &wb[name]));
    }
    eprintln!("largest weight difference after two steps {worst:e}");
    assert!(worst <= TOL, "largest weight difference after two steps {worst:e}");
}
