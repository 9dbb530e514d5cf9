//! The training loop's state machine: steps with gradient accumulation, the learning-rate
//! schedule, checkpoints (atomic, resumable) and the guard against non-finite losses.

use super::checkpoint_io::write_atomic;
use super::clip::clip_global_norm;
use super::schedule::ScheduleConfig;
use super::step::{Batch, TrainModel};
use crate::loss::{LossWeights, RefSegLoss};
use burn::module::{AutodiffModule, Module};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsAccumulator, GradientsParams, Optimizer};
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ElementConversion;
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
}

type Optim<B> = OptimizerAdaptor<AdamW, TrainModel<B>, B>;

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
    pending: Vec<[f64; 5]>,
    device: B::Device,
}

fn scalar<B: burn::tensor::backend::Backend>(t: burn::tensor::Tensor<B, 1>) -> f64 {
    let v: f32 = t.into_scalar().elem();
    v as f64
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
        let optim = AdamWConfig::new()
            .with_weight_decay(optim_config.weight_decay as f32)
            .with_beta_1(optim_config.beta1 as f32)
            .with_beta_2(optim_config.beta2 as f32)
            .with_epsilon(optim_config.epsilon as f32)
            .init::<B, TrainModel<B>>();
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
        }
    }

    pub fn lr(&self) -> f64 {
        self.schedule.lr_at(self.state.step, self.steps_per_epoch, self.epochs)
    }

    /// Forward + backward of one batch; every `grad_accum` batches the optimizer steps and a
    /// report is returned. A non-finite loss stops before touching the weights.
    pub fn train_batch(&mut self, batch: &Batch<B>) -> Result<Option<StepReport>, TrainError> {
        let terms = self.model.loss(batch, &self.loss);
        let total = scalar(terms.total.clone().inner());
        if !total.is_finite() {
            return Err(TrainError::NonFinite { value: total, step: self.state.step, epoch: self.state.epoch });
        }
        let values = [
            scalar(terms.bce.clone().inner()),
            scalar(terms.dice.clone().inner()),
            scalar(terms.ortho.clone().inner()),
            scalar(terms.contrastive.clone().inner()),
            total,
        ];
        // Average over the accumulated batches, as a larger batch would.
        let grads = (terms.total / self.grad_accum as f64).backward();
        let grads = GradientsParams::from_grads(grads, &self.model);
        self.accumulator.accumulate(&self.model, grads);
        self.pending.push(values);
        self.state.micro_step += 1;
        if self.pending.len() < self.grad_accum {
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

    /// Write `model.bin`, `optim.bin` and `state.json` into `dir` atomically (each file is
    /// replaced in one rename; `state.json` goes last, so a crash between files leaves a state
    /// that points at consistent, older-or-equal weights only if both were written — the loader
    /// checks the step recorded in each file).
    pub fn save(&self, dir: &Path) -> Result<(), TrainError> {
        let err = |message: String| TrainError::Checkpoint { path: dir.display().to_string(), message };
        let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
        let model = recorder.record(self.model.clone().into_record(), ()).map_err(|e| err(e.to_string()))?;
        let optim = recorder.record(self.optim.to_record(), ()).map_err(|e| err(e.to_string()))?;
        let state = serde_json::to_vec_pretty(&self.state).expect("serialisable");
        let step = self.state.step;
        write_atomic(&dir.join(format!("model-{step}.bin")), &model).map_err(|e| err(e.to_string()))?;
        write_atomic(&dir.join(format!("optim-{step}.bin")), &optim).map_err(|e| err(e.to_string()))?;
        // The pointer is written last: it names files that are complete.
        write_atomic(&dir.join("state.json"), &state).map_err(|e| err(e.to_string()))?;
        // Older step files are no longer referenced.
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                let old = ["model-", "optim-"].iter().any(|p| name.starts_with(p))
                    && name.ends_with(".bin")
                    && name != format!("model-{step}.bin")
                    && name != format!("optim-{step}.bin");
                if old {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(())
    }

    /// Continue from the checkpoint in `dir` (as written by [`Self::save`]).
    pub fn resume(mut self, dir: &Path) -> Result<Self, TrainError> {
        let err = |message: String| TrainError::Checkpoint { path: dir.display().to_string(), message };
        let state: TrainState = serde_json::from_slice(
            &std::fs::read(dir.join("state.json")).map_err(|e| err(format!("state.json: {e}")))?,
        )
        .map_err(|e| err(format!("state.json: {e}")))?;
        let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
        let step = state.step;
        let model_bytes = std::fs::read(dir.join(format!("model-{step}.bin"))).map_err(|e| err(format!("model-{step}.bin: {e}")))?;
        let optim_bytes = std::fs::read(dir.join(format!("optim-{step}.bin"))).map_err(|e| err(format!("optim-{step}.bin: {e}")))?;
        let record = recorder.load(model_bytes, &self.device).map_err(|e| err(e.to_string()))?;
        self.model = self.model.load_record(record);
        let record = recorder.load(optim_bytes, &self.device).map_err(|e| err(e.to_string()))?;
        self.optim = self.optim.load_record(record);
        self.state = state;
        self.pending.clear();
        self.accumulator = GradientsAccumulator::new();
        Ok(self)
    }
}
