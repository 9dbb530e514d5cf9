//! Data-parallel training on several devices of one backend, built from burn's own multi-device
//! primitives the way burn 0.21's `burn-train` runs
//! `ExecutionStrategy::MultiDevice(devices, MultiDeviceOptim::OptimMainDevice)`
//! (`MultiDevicesTrainStep` and `MultiDeviceTrainEpoch::run_optim_main`):
//!
//! 1. one long-lived worker thread per device receives the model and its shard of the batch and
//!    forks the model onto its device ([`Module::fork`]: `to_device` + a fresh autodiff leaf per
//!    parameter, same parameter ids);
//! 2. it runs the training forward and backward there and turns the gradients into
//!    [`GradientsParams`] ([`GradientsParams::from_grads`]);
//! 3. it moves them to the main device ([`GradientsParams::to_device`]);
//! 4. the [`Trainer`](super::Trainer) sums them with burn's [`GradientsAccumulator`] (the same
//!    accumulator as `--grad-accum`) and takes one optimizer step on the main device, where the
//!    model and the AdamW state live.
//!
//! `burn-train`'s `Learner` itself cannot drive this project's training (see the README, "GPU
//! training"), so the trainer uses these primitives directly.
//!
//! What a shard means: every device's shard is a batch of its own for the parts of the model that
//! couple the samples of a batch — the BatchNorm batch statistics of the dense prompt and the
//! sample-contrastive term's `b × b` logits — exactly as in PyTorch DDP without `SyncBatchNorm`
//! (and the reference's contrastive loss, which does not all-gather). Training on `N` devices
//! with shards of `b` samples therefore gives the gradients of one device accumulating `N`
//! batches of `b` (`--grad-accum N`), not those of one batch of `N·b`. BatchNorm's running
//! statistics (burn [`RunningState`](burn::module::RunningState)) take one update with the mean
//! of the devices' batch statistics, where accumulation takes `N` successive updates; they are
//! used only in evaluation mode.
//!
//! [`GradientsAccumulator`]: burn::optim::GradientsAccumulator

use super::step::{Batch, TrainModel};
use crate::loss::RefSegLoss;
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Bool, ElementConversion, Int, Tensor};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread::JoinHandle;

/// The weighted loss terms of one shard: BCE, Dice, orthogonality, contrastive, total.
pub type LossValues = [f64; 5];

/// Loss values and gradients of one shard.
pub struct ShardOutput {
    pub values: LossValues,
    /// `None` when the total loss is not finite (no backward pass was run).
    pub grads: Option<GradientsParams>,
}

/// Initialise every lazily initialised parameter of `module` now.
///
/// burn creates parameters lazily and a clone of a parameter that was never read initialises on
/// its own: replicas sent to the devices before the first read would each draw other random
/// weights (and the main copy yet others). [`super::Trainer::with_devices`] calls this first.
pub fn materialize<B: Backend, M: Module<B>>(module: &M) {
    struct Touch;
    impl<B: Backend> ModuleVisitor<B> for Touch {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let _ = param.val();
        }
        fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<B, D, Int>>) {
            let _ = param.val();
        }
        fn visit_bool<const D: usize>(&mut self, param: &Param<Tensor<B, D, Bool>>) {
            let _ = param.val();
        }
    }
    module.visit(&mut Touch);
}

fn scalar<B: Backend>(t: Tensor<B, 1>) -> f64 {
    let v: f32 = t.into_scalar().elem();
    v as f64
}

/// Training forward, loss terms and the backward pass of `total / divisor` on the device the
/// model and the batch are on.
pub fn shard_step<B: AutodiffBackend>(
    model: &TrainModel<B>,
    batch: &Batch<B>,
    loss: &RefSegLoss,
    divisor: f64,
) -> ShardOutput {
    let terms = model.loss(batch, loss);
    let total = scalar(terms.total.clone().inner());
    let values = [
        scalar(terms.bce.clone().inner()),
        scalar(terms.dice.clone().inner()),
        scalar(terms.ortho.clone().inner()),
        scalar(terms.contrastive.clone().inner()),
        total,
    ];
    if !total.is_finite() {
        return ShardOutput { values, grads: None };
    }
    let grads = (terms.total / divisor).backward();
    ShardOutput { values, grads: Some(GradientsParams::from_grads(grads, model)) }
}

/// `batch` on `device` (a no-op for tensors already there).
pub fn batch_to_device<B: AutodiffBackend>(batch: Batch<B>, device: &B::Device) -> Batch<B> {
    Batch {
        x01: batch.x01.to_device(device),
        gt: batch.gt.to_device(device),
        input_ids: batch.input_ids.to_device(device),
        attention_mask: batch.attention_mask.to_device(device),
    }
}

struct Job<B: AutodiffBackend> {
    model: TrainModel<B>,
    batch: Batch<B>,
    loss: RefSegLoss,
    divisor: f64,
}

struct Worker<B: AutodiffBackend> {
    device: B::Device,
    jobs: Option<Sender<Job<B>>>,
    results: Receiver<ShardOutput>,
    handle: Option<JoinHandle<()>>,
}

/// One worker thread per device; the first device is the main device (model, optimizer state,
/// summed gradients). Workers live as long as this value: burn's `RunningState` keys the
/// BatchNorm updates by thread, so the same threads must run every step.
pub struct DataParallel<B: AutodiffBackend> {
    devices: Vec<B::Device>,
    workers: Vec<Worker<B>>,
}

impl<B: AutodiffBackend> DataParallel<B> {
    /// Start the workers. Panics if `devices` is empty.
    pub fn new(devices: Vec<B::Device>) -> Self {
        assert!(!devices.is_empty(), "data parallel training needs at least one device");
        let main = devices[0].clone();
        let workers = devices
            .iter()
            .enumerate()
            .map(|(i, device)| {
                let (job_tx, job_rx) = channel::<Job<B>>();
                let (result_tx, result_rx) = channel::<ShardOutput>();
                let (device_w, main) = (device.clone(), main.clone());
                let handle = std::thread::Builder::new()
                    .name(format!("rsrefseg-train-device-{i}"))
                    .spawn(move || {
                        while let Ok(job) = job_rx.recv() {
                            let model = job.model.fork(&device_w);
                            let batch = batch_to_device(job.batch, &device_w);
                            let mut out = shard_step(&model, &batch, &job.loss, job.divisor);
                            out.grads = out.grads.map(|g| g.to_device(&main, &model));
                            if result_tx.send(out).is_err() {
                                break;
                            }
                        }
                    })
                    .expect("cannot start a training worker thread");
                Worker { device: device.clone(), jobs: Some(job_tx), results: result_rx, handle: Some(handle) }
            })
            .collect();
        Self { devices, workers }
    }

    pub fn devices(&self) -> &[B::Device] {
        &self.devices
    }

    /// Forward and backward of `shards[i]` on device `i`, all devices at once; the gradients of
    /// every shard come back on the main device, in device order. `Err` names the device whose
    /// worker stopped (it panicked; the panic message was printed).
    pub fn run(
        &self,
        model: &TrainModel<B>,
        loss: &RefSegLoss,
        shards: Vec<Batch<B>>,
        divisor: f64,
    ) -> Result<Vec<ShardOutput>, String> {
        assert_eq!(shards.len(), self.workers.len(), "one shard per device");
        let sent: Vec<bool> = self
            .workers
            .iter()
            .zip(shards)
            .map(|(w, batch)| {
                let job = Job { model: model.clone(), batch, loss: loss.clone(), divisor };
                w.jobs.as_ref().is_some_and(|tx| tx.send(job).is_ok())
            })
            .collect();
        // Collect every result (even after a failure) so that no worker is left mid-step.
        let mut outputs = Vec::with_capacity(self.workers.len());
        let mut failed = None;
        for (w, sent) in self.workers.iter().zip(sent) {
            match sent.then(|| w.results.recv().ok()).flatten() {
                Some(out) => outputs.push(out),
                None => failed = failed.or_else(|| Some(format!("{:?}", w.device))),
            }
        }
        match failed {
            None => Ok(outputs),
            Some(device) => Err(device),
        }
    }
}

impl<B: AutodiffBackend> Drop for DataParallel<B> {
    fn drop(&mut self) {
        for w in &mut self.workers {
            w.jobs.take();
        }
        for w in &mut self.workers {
            if let Some(h) = w.handle.take() {
                let _ = h.join();
            }
        }
    }
}
