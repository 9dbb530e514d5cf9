//! Training: the released recipe (AdamW, weight decay 0.05, global-norm clipping 3.0, warm-up
//! then truncated cosine), resumable runs with atomic checkpoints, data-parallel steps over
//! several devices.

pub mod checkpoint_io;
pub mod clip;
pub mod data_parallel;
pub mod schedule;
pub mod split_mix;
pub mod stages;
pub mod step;
pub mod trainer;

pub use schedule::ScheduleConfig;
pub use split_mix::SplitMix64;
pub use step::{Batch, TrainModel};
pub use trainer::{OptimConfig, StepReport, TrainError, TrainState, Trainer};
