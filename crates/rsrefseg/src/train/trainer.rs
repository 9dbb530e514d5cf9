//! The training loop's state machine: steps with gradient accumulation, the learning-rate
//! schedule, checkpoints (atomic, resumable), the guard against non-finite losses and
//! data-parallel steps over several devices ([`super::data_parallel`]).

use super::checkpoint_io::{decode_record, first_non_finite, load_verified, save_verified};
use super::clip::clip_global_norm;
use super::data_parallel::{materialize, shard_step, DataParallel, ShardOutput};
use super::schedule::ScheduleConfig;
use super::step::{Batch, TrainModel};
use crate::loss::{LossWeights, RefSegLoss};
use burn::module::{AutodiffModule, Module};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsAccumulator, GradientsParams, Optimizer};
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Optimiser settings of the released configs (AdamW, wd 0.05 on every parameter group).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimConfig {
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// PyTorch's AdamW default (burn's default is 1e-5).
    pub epsilon: f64,
    /// Global-norm gradient clipping (`None` = off).
    pub grad_clip: Option<f64>,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self { weight_decay: 0.05, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, grad_clip: Some(3.0) }
    }
}

impl OptimConfig {
    /// The AdamW optimizer of these settings over a [`TrainModel`] (clipping is applied by the
    /// caller, see [`clip_global_norm`]).
    pub fn adamw<B: AutodiffBackend>(&self) -> Optim<B> {
        AdamWConfig::new()
            .with_weight_decay(self.weight_decay as f32)
            .with_beta_1(self.beta1 as f32)
            .with_beta_2(self.beta2 as f32)
            .with_epsilon(self.epsilon as f32)
            .init::<B, TrainModel<B>>()
    }
}

/// Progress that must survive a restart.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps taken.
    pub step: usize,
    /// Batches consumed (steps × accumulation).
    pub micro_step: usize,
    pub epoch: usize,
    /// Best validation gIoU and the step it was reached at.
    pub best_val_giou: Option<f64>,
    pub best_step: Option<usize>,
}

/// Scalars of one optimizer step (losses are the weighted terms).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    pub step: usize,
    pub epoch: usize,
    pub lr: f64,
    pub bce: f64,
    pub dice: f64,
    pub ortho: f64,
    pub contrastive: f64,
    pub total: f64,
    pub grad_norm: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("the loss became {value} at step {step} (epoch {epoch}); the run stopped and the last checkpoint is kept. Lower the learning rate or check the data")]
    NonFinite { value: f64, step: usize, epoch: usize },
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: String, message: String },
    #[error("parameter {name} is not finite after step {step}: the checkpoint was not written and the last good one is kept. Lower the learning rate or check the data")]
    NonFiniteWeights { name: String, step: usize },
    #[error("the training worker on device {device} stopped (its panic message is above); the last checkpoint is kept")]
    Device { device: String },
}

/// One training checkpoint of `model` and `optim` at `step` with the progress `state` (see
/// [`save_verified`]: blobs with their sha256, the previous checkpoint kept as a fallback).
/// Weights that are not finite are never written. Shared by [`Trainer`] and the stage runner.
pub(crate) fn save_training<B: AutodiffBackend, S: Serialize>(
    dir: &Path,
    step: usize,
    model: &TrainModel<B>,
    optim: &Optim<B>,
    state: &S,
) -> Result<(), TrainError> {
    let err = |message: String| TrainError::Checkpoint { path: dir.display().to_string(), message };
    if let Some(name) = first_non_finite(model) {
        return Err(TrainError::NonFiniteWeights { name, step });
    }
    let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
    let model = recorder.record(model.clone().into_record(), ()).map_err(|e| err(e.to_string()))?;
    let optim = recorder.record(optim.to_record(), ()).map_err(|e| err(e.to_string()))?;
    save_verified(dir, step, &[("model", &model), ("optim", &optim)], state, 2).map_err(|e| err(e.to_string()))
}

/// The newest intact checkpoint of [`save_training`] whose state `accept` takes: the state and
/// the decoded model and optimizer records.
#[allow(clippy::type_complexity)]
pub(crate) fn load_training<B: AutodiffBackend, S: serde::de::DeserializeOwned>(
    dir: &Path,
    device: &B::Device,
    accept: impl Fn(&S) -> Result<(), String>,
) -> Result<(S, <TrainModel<B> as Module<B>>::Record, <Optim<B> as Optimizer<TrainModel<B>, B>>::Record), TrainError> {
    let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
    let (state, (model, optim)) = load_verified::<S, _>(dir, |state, blobs| {
        accept(state)?;
        let blob = |k: &str| blobs.get(k).cloned().ok_or_else(|| format!("no {k} file"));
        let (m, o) = (blob("model")?, blob("optim")?);
        let model = decode_record("the model record", || recorder.load(m, device).map_err(|e| e.to_string()))?;
        let optim = decode_record("the optimizer record", || recorder.load(o, device).map_err(|e| e.to_string()))?;
        Ok((model, optim))
    })
    .map_err(|message| TrainError::Checkpoint { path: dir.display().to_string(), message })?;
    Ok((state, model, optim))
}

/// AdamW over a [`TrainModel`].
pub type Optim<B> = OptimizerAdaptor<AdamW, TrainModel<B>, B>;

pub struct Trainer<B: AutodiffBackend> {
    pub model: TrainModel<B>,
    optim: Optim<B>,
    pub loss: RefSegLoss,
    pub optim_config: OptimConfig,
    pub schedule: ScheduleConfig,
    /// Batches per optimizer step.
    pub grad_accum: usize,
    pub steps_per_epoch: usize,
    pub epochs: usize,
    pub state: TrainState,
    accumulator: GradientsAccumulator<TrainModel<B>>,
    /// Loss values of the shards accumulated towards the next step (devices × batches).
    pending: Vec<[f64; 5]>,
    /// The main device: model, optimizer state and summed gradients.
    device: B::Device,
    /// Worker threads when training on more than one device.
    parallel: Option<DataParallel<B>>,
}

impl<B: AutodiffBackend> Trainer<B> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        model: TrainModel<B>,
        weights: LossWeights,
        optim_config: OptimConfig,
        schedule: ScheduleConfig,
        grad_accum: usize,
        steps_per_epoch: usize,
        epochs: usize,
        device: &B::Device,
    ) -> Self {
        let optim = optim_config.adamw();
        Self {
            model,
            optim,
            loss: RefSegLoss::new(weights),
            optim_config,
            schedule,
            grad_accum: grad_accum.max(1),
            steps_per_epoch: steps_per_epoch.max(1),
            epochs,
            state: TrainState::default(),
            accumulator: GradientsAccumulator::new(),
            pending: Vec::new(),
            device: device.clone(),
            parallel: None,
        }
    }

    /// Train data-parallel on `devices` (see [`super::data_parallel`]); the first one is the main
    /// device and must be the device the model was created on. Several devices: the model's
    /// lazily initialised parameters are drawn now (in visiting order, so a seeded model starts
    /// from other weights than a single-device one, which draws them in the order of the first
    /// forward pass). One device: the plain single-device loop (no worker threads, nothing
    /// drawn early). Panics if `devices` is empty.
    pub fn with_devices(mut self, devices: Vec<B::Device>) -> Self {
        assert!(!devices.is_empty(), "training needs at least one device");
        self.device = devices[0].clone();
        if devices.len() > 1 {
            materialize(&self.model);
            self.parallel = Some(DataParallel::new(devices));
        } else {
            self.parallel = None;
        }
        self
    }

    /// The devices a batch is split over, the main device first.
    pub fn devices(&self) -> Vec<B::Device> {
        match &self.parallel {
            Some(p) => p.devices().to_vec(),
            None => vec![self.device.clone()],
        }
    }

    pub fn num_devices(&self) -> usize {
        self.parallel.as_ref().map_or(1, |p| p.devices().len())
    }

    pub fn lr(&self) -> f64 {
        self.schedule.lr_at(self.state.step, self.steps_per_epoch, self.epochs)
    }

    /// Forward + backward of one batch on a single-device trainer; every `grad_accum` batches
    /// the optimizer steps and a report is returned. A non-finite loss stops before touching the
    /// weights. With several devices use [`Self::train_shards`].
    pub fn train_batch(&mut self, batch: &Batch<B>) -> Result<Option<StepReport>, TrainError> {
        self.train_shards(vec![batch.clone()])
    }

    /// One batch given as one shard per device ([`Self::devices`] order, each shard on its
    /// device): forward + backward of every shard at once, gradients summed on the main device.
    /// Every `grad_accum` batches the optimizer steps and a report is returned (losses averaged
    /// over all shards of the step). Panics if the number of shards is not the number of devices.
    pub fn train_shards(&mut self, shards: Vec<Batch<B>>) -> Result<Option<StepReport>, TrainError> {
        let n = self.num_devices();
        assert_eq!(shards.len(), n, "one shard per device");
        // Average over the accumulated batches and the devices, as a larger batch would.
        let divisor = (self.grad_accum * n) as f64;
        let outputs: Vec<ShardOutput> = match &self.parallel {
            None => shards.iter().map(|b| shard_step(&self.model, b, &self.loss, divisor)).collect(),
            Some(p) => p.run(&self.model, &self.loss, shards, divisor).map_err(|device| TrainError::Device { device })?,
        };
        if let Some(bad) = outputs.iter().find(|o| o.grads.is_none()) {
            return Err(TrainError::NonFinite { value: bad.values[4], step: self.state.step, epoch: self.state.epoch });
        }
        for out in outputs {
            let grads: GradientsParams = out.grads.expect("finite loss");
            self.accumulator.accumulate(&self.model, grads);
            self.pending.push(out.values);
        }
        self.state.micro_step += 1;
        if self.pending.len() < self.grad_accum * n {
            return Ok(None);
        }
        let mut grads = self.accumulator.grads();
        let grad_norm = match self.optim_config.grad_clip {
            Some(max) => clip_global_norm(&self.model, &mut grads, max),
            None => clip_global_norm(&self.model, &mut grads, f64::INFINITY),
        };
        if !grad_norm.is_finite() {
            self.pending.clear();
            return Err(TrainError::NonFinite { value: grad_norm, step: self.state.step, epoch: self.state.epoch });
        }
        let lr = self.lr();
        self.model = self.optim.step(lr, self.model.clone(), grads);
        let n = self.pending.len() as f64;
        let mean = |i: usize| self.pending.iter().map(|v| v[i]).sum::<f64>() / n;
        let report = StepReport {
            step: self.state.step,
            epoch: self.state.epoch,
            lr,
            bce: mean(0),
            dice: mean(1),
            ortho: mean(2),
            contrastive: mean(3),
            total: mean(4),
            grad_norm,
        };
        self.pending.clear();
        self.state.step += 1;
        Ok(Some(report))
    }

    /// The inference model (no autodiff).
    pub fn valid_model(&self) -> TrainModel<B::InnerBackend> {
        self.model.valid()
    }

    /// Write the checkpoint of this step into `dir` (see [`save_training`]).
    pub fn save(&self, dir: &Path) -> Result<(), TrainError> {
        save_training(dir, self.state.step, &self.model, &self.optim, &self.state)
    }

    /// Continue from the newest intact checkpoint in `dir` (as written by [`Self::save`]).
    pub fn resume(mut self, dir: &Path) -> Result<Self, TrainError> {
        // A state past this run's last step (edited, or from a run with more epochs) would make
        // the run "finish" at once without training: refused, naming both numbers.
        let total = self.steps_per_epoch * self.epochs;
        let (state, model, optim) = load_training::<B, TrainState>(dir, &self.device.clone(), |s: &TrainState| {
            if s.step > total {
                return Err(format!(
                    "the checkpoint is at step {}, beyond the {total} steps of this run ({} epochs × {} steps): \
                     resume with the settings it was made with, or use a new --out",
                    s.step, self.epochs, self.steps_per_epoch
                ));
            }
            Ok(())
        })?;
        self.model = self.model.load_record(model);
        self.optim = self.optim.load_record(optim);
        self.state = state;
        self.pending.clear();
        self.accumulator = GradientsAccumulator::new();
        Ok(self)
    }
}
