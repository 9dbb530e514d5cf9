//! The staged recipe of the nano model, trained from scratch the way RSRefSeg 2 assumes its
//! parts arrive (pretrained aligner + pretrained segmenter + a light prompter between them):
//!
//! 1. [`vision_language`]: nano-SigLIP learns words ↔ regions with SigLIP's sigmoid loss on the
//!    synthetic scenes' referring expressions (every object's region and every patch against
//!    every sentence of the batch), which also moves `logit_scale` / `logit_bias` to where the
//!    dense prompt has both signs;
//! 2. [`promptable`]: nano-SAM learns to segment whatever a point, a box or a coarse mask names,
//!    with a correction click and its previous mask fed back (SAM's interactive recipe);
//! 3. [`referring`]: RSRefSeg 2's own objective with the encoders of 1–2 frozen: each scene is
//!    encoded once (no gradient) and the encoding serves every expression of the scene; the text
//!    tower, the prompter and SAM's prompt encoder and decoder are trained.
//!
//! Data come from an endless seeded [`crate::synth::SceneStream`]: step `k` reads scenes
//! `k·n .. (k+1)·n`, so no scene is seen twice and a resumed run continues exactly.
//! [`StageRunner`] is the optimisation loop shared by the three stages (AdamW, warm-up then
//! cosine, global-norm clipping, atomic checkpoints); each stage module only builds its loss.

pub mod promptable;
pub mod referring;
pub mod vision_language;

use super::clip::clip_global_norm;
use super::schedule::ScheduleConfig;
use super::step::TrainModel;
use super::trainer::{load_training, save_training, Optim, OptimConfig, TrainError};
use crate::config::RsRefSegConfig;
use crate::encoders::TextTokenizer;
use burn::module::{AutodiffModule, Module};
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The three stages, in recipe order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    VisionLanguage,
    Promptable,
    Referring,
}

impl Stage {
    pub const ALL: [Stage; 3] = [Stage::VisionLanguage, Stage::Promptable, Stage::Referring];

    pub fn name(self) -> &'static str {
        match self {
            Stage::VisionLanguage => "vision-language",
            Stage::Promptable => "promptable",
            Stage::Referring => "referring",
        }
    }
}

/// A stage's loss for one step: the total to back-propagate and named scalars to log.
pub struct StageLoss<B: Backend> {
    pub total: Tensor<B, 1>,
    pub terms: Vec<(&'static str, Tensor<B, 1>)>,
}

impl<B: Backend> StageLoss<B> {
    /// The logged scalars (the total first).
    pub fn values(&self) -> Vec<(&'static str, f64)> {
        let mut out = vec![("total", scalar(&self.total))];
        out.extend(self.terms.iter().map(|(n, t)| (*n, scalar(t))));
        out
    }
}

fn scalar<B: Backend>(t: &Tensor<B, 1>) -> f64 {
    t.clone().into_data().convert::<f32>().to_vec::<f32>().map_or(f64::NAN, |v| v[0] as f64)
}

/// Progress of a stage that survives a restart.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StageState {
    /// Optimizer steps taken.
    pub step: usize,
}

/// Settings of one stage run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageConfig {
    pub stage: Stage,
    pub steps: usize,
    /// Scenes read per step (stage 3 answers every expression of each).
    pub scenes_per_step: usize,
    pub lr: f64,
    pub warmup_steps: usize,
    pub weight_decay: f64,
    pub grad_clip: f64,
    /// Seed of the scene stream and of the prompts drawn from it.
    pub data_seed: u64,
    /// Stage 3: fine-tune SAM's image encoder too (see [`referring`]).
    #[serde(default)]
    pub tune_sam_encoder: bool,
    /// Stage 3: fine-tune SigLIP's vision tower too (see [`referring`]).
    #[serde(default)]
    pub tune_siglip_vision: bool,
    /// Stage 3: a second answer per expression with one simulated correction click (see
    /// [`referring`]), so that the decoder learns to follow the page's clicks.
    #[serde(default)]
    pub correction_clicks: bool,
    /// Stage 3: weight of the dense-prompt term (see [`referring`]); 0 = RSRefSeg 2's loss alone.
    #[serde(default)]
    pub dense_loss: f64,
    /// Weight of the ranking forms in the training stream
    /// ([`crate::synth::SynthConfig::ranking_weight`]; checkpoints without it were made at 1).
    #[serde(default = "benchmark_mix")]
    pub ranking_weight: f32,
    /// Stage 3: weight of stage 2's interactive loss on the same scenes (see [`referring`]);
    /// 0 = none (checkpoints without it were made without).
    #[serde(default)]
    pub promptable_loss: f64,
}

fn benchmark_mix() -> f32 {
    1.0
}

impl StageConfig {
    /// The encoders stage 3 fine-tunes.
    pub fn encoder_tuning(&self) -> referring::EncoderTuning {
        referring::EncoderTuning { sam_encoder: self.tune_sam_encoder, siglip_vision: self.tune_siglip_vision }
    }
}

/// AdamW over a [`TrainModel`]: parameters that get no gradient in a stage (the parts it does
/// not train) are left exactly as they are.
pub struct StageRunner<B: AutodiffBackend> {
    pub model: TrainModel<B>,
    optim: Optim<B>,
    pub config: StageConfig,
    pub state: StageState,
}

impl<B: AutodiffBackend> StageRunner<B> {
    pub fn new(model: TrainModel<B>, config: StageConfig) -> Self {
        let optim = OptimConfig { weight_decay: config.weight_decay, ..OptimConfig::default() }.adamw();
        Self { model, optim, config, state: StageState::default() }
    }

    /// Linear warm-up from 1 % of `lr`, then cosine to 1 % at the last step.
    pub fn lr(&self) -> f64 {
        let s = ScheduleConfig {
            base_lr: self.config.lr,
            warmup_epochs: self.config.warmup_steps as f64,
            warmup_start_factor: 0.01,
            cosine_begin_fraction: 0.0,
            cosine_t_max: 1.0,
            eta_min_ratio: 0.01,
        };
        s.lr_at(self.state.step, 1, self.config.steps.max(1))
    }

    pub fn done(&self) -> bool {
        self.state.step >= self.config.steps
    }

    /// Back-propagate `loss`, clip, step. Returns (lr, gradient norm before clipping). A
    /// non-finite loss or gradient stops before touching the weights.
    pub fn apply(&mut self, loss: &StageLoss<B>) -> Result<(f64, f64), TrainError> {
        let value = scalar(&loss.total);
        if !value.is_finite() {
            return Err(TrainError::NonFinite { value, step: self.state.step, epoch: 0 });
        }
        let grads = loss.total.backward();
        let mut grads = GradientsParams::from_grads(grads, &self.model);
        let norm = clip_global_norm(&self.model, &mut grads, self.config.grad_clip);
        if !norm.is_finite() {
            return Err(TrainError::NonFinite { value: norm, step: self.state.step, epoch: 0 });
        }
        let lr = self.lr();
        self.model = self.optim.step(lr, self.model.clone(), grads);
        self.state.step += 1;
        Ok((lr, norm))
    }

    /// The checkpoint of this step (see [`save_training`]).
    pub fn save(&self, dir: &Path) -> Result<(), TrainError> {
        save_training(dir, self.state.step, &self.model, &self.optim, &(&self.state, &self.config))
    }

    /// Continue from the newest intact checkpoint of [`Self::save`]; the stage settings must be
    /// the ones saved.
    pub fn resume(mut self, dir: &Path, device: &B::Device) -> Result<Self, TrainError> {
        let own = self.config.clone();
        let ((state, _), model, optim) = load_training::<B, (StageState, StageConfig)>(dir, device, |(_, config)| {
            if *config != own {
                return Err(format!(
                    "the checkpoint was made with other stage settings ({config:?}); use the same options or a new --out"
                ));
            }
            Ok(())
        })?;
        self.model = self.model.load_record(model);
        self.optim = self.optim.load_record(optim);
        self.state = state;
        Ok(self)
    }

    /// The inference model.
    pub fn valid_model(&self) -> TrainModel<B::InnerBackend> {
        self.model.valid()
    }
}

/// `[b, 3, S, S]` model input of a batch of stream scenes.
pub fn scenes_x01<B: Backend>(samples: &[crate::synth::StreamSample], device: &B::Device) -> Tensor<B, 4> {
    let s = samples[0].scene.height;
    let mut data = Vec::with_capacity(samples.len() * 3 * s * s);
    for sample in samples {
        assert_eq!((sample.scene.height, sample.scene.width), (s, s), "stream scenes must all be S×S");
        data.extend(crate::synth::stream::scene_x01(&sample.scene));
    }
    Tensor::from_data(TensorData::new(data, [samples.len(), 3, s, s]), device)
}

/// Token ids and attention mask `[n, l]` of `sentences`, checked against the text tower.
pub fn tokens<B: Backend>(
    tokenizer: &TextTokenizer,
    config: &RsRefSegConfig,
    sentences: &[&str],
    device: &B::Device,
) -> Result<(Tensor<B, 2, Int>, Tensor<B, 2, Int>), String> {
    let t = tokenizer.encode_batch(sentences).map_err(|e| e.to_string())?;
    let tc = &config.siglip.text_config;
    let (n, l) = (t.input_ids.len(), t.len());
    if l > tc.max_position_embeddings {
        return Err(format!("{l} tokens but the text tower has {} positions", tc.max_position_embeddings));
    }
    let ids: Vec<i64> = t.input_ids.iter().flatten().map(|&x| x as i64).collect();
    if let Some(bad) = ids.iter().find(|&&id| id as usize >= tc.vocab_size) {
        return Err(format!("token id {bad} is outside the vocabulary (0..{})", tc.vocab_size));
    }
    let mask: Vec<i64> = t.attention_mask.iter().flatten().map(|&x| x as i64).collect();
    Ok((Tensor::from_data(TensorData::new(ids, [n, l]), device), Tensor::from_data(TensorData::new(mask, [n, l]), device)))
}

/// Integer index tensor `[n]`.
pub(crate) fn index<B: Backend>(rows: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
    Tensor::from_data(TensorData::new(rows.iter().map(|&r| r as i64).collect::<Vec<_>>(), [rows.len()]), device)
}

/// Object masks `[n, 1, S, S]` in {0, 1}.
pub(crate) fn masks<B: Backend>(masks: &[&[u8]], size: usize, device: &B::Device) -> Tensor<B, 4> {
    let data: Vec<f32> = masks.iter().flat_map(|m| m.iter().map(|&v| f32::from(v != 0))).collect();
    Tensor::from_data(TensorData::new(data, [masks.len(), 1, size, size]), device)
}
