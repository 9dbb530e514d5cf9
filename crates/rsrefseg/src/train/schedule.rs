//! Learning-rate schedule of the released configs (reference §7), per optimizer step.
//!
//! mmengine `LinearLR(start_factor=0.01)` over the first `warmup_epochs`, then constant, then
//! `CosineAnnealingLR(begin=0.1·E, end=E, T_max=cosine_t_max·E, eta_min=0.01·lr)`, all converted
//! to iterations. `T_max` longer than the cosine segment truncates the curve: with the released
//! `T_max = 1.3·E` the final lr is ≈0.22·lr, never `eta_min`.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleConfig {
    pub base_lr: f64,
    /// Linear warm-up length in epochs (5 in the released configs).
    pub warmup_epochs: f64,
    /// Warm-up starts at `warmup_start_factor · base_lr`.
    pub warmup_start_factor: f64,
    /// The cosine starts at this fraction of the run (0.1).
    pub cosine_begin_fraction: f64,
    /// Cosine period in units of the run length (1.3; 1.8 for RefSegRS).
    pub cosine_t_max: f64,
    /// `eta_min = eta_min_ratio · base_lr` (0.01).
    pub eta_min_ratio: f64,
}

impl ScheduleConfig {
    /// RRSIS-D / RISBench configs: lr 1e-4, T_max 1.3·E.
    pub fn released() -> Self {
        Self {
            base_lr: 1e-4,
            warmup_epochs: 5.0,
            warmup_start_factor: 0.01,
            cosine_begin_fraction: 0.1,
            cosine_t_max: 1.3,
            eta_min_ratio: 0.01,
        }
    }

    /// Learning rate at optimizer step `step` (0-based) of a run of `epochs × steps_per_epoch`.
    pub fn lr_at(&self, step: usize, steps_per_epoch: usize, epochs: usize) -> f64 {
        let spe = steps_per_epoch.max(1) as f64;
        let total = epochs as f64 * spe;
        let s = step as f64;
        let warmup = self.warmup_epochs * spe;
        let mut factor = 1.0;
        if s < warmup {
            factor = self.warmup_start_factor + (1.0 - self.warmup_start_factor) * s / warmup;
        }
        let begin = (self.cosine_begin_fraction * epochs as f64).round() * spe;
        let lr = if s >= begin {
            let t_max = self.cosine_t_max * total;
            let eta_min = self.eta_min_ratio * self.base_lr;
            eta_min + (self.base_lr - eta_min) * (1.0 + (std::f64::consts::PI * (s - begin) / t_max).cos()) / 2.0
        } else {
            self.base_lr
        };
        // mmengine multiplies the schedulers' factors when they overlap (warm-up longer than
        // the constant segment).
        lr * factor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_schedule_shape() {
        let s = ScheduleConfig::released();
        let (spe, epochs) = (100, 300);
        assert!((s.lr_at(0, spe, epochs) - 1e-6).abs() < 1e-12, "warm-up starts at 1 %");
        assert!((s.lr_at(250, spe, epochs) - (0.01 + 0.99 * 0.5) * 1e-4).abs() < 1e-12);
        assert_eq!(s.lr_at(1000, spe, epochs), 1e-4, "constant between warm-up and cosine");
        assert_eq!(s.lr_at(3000, spe, epochs), 1e-4, "cosine starts at 0.1·E at the base lr");
        let last = s.lr_at(epochs * spe - 1, spe, epochs);
        // eta_min + (lr − eta_min)·(1 + cos(π·0.9/1.3))/2 = 0.01 + 0.99·0.216 ≈ 0.224·lr
        assert!((last / 1e-4 - 0.2238).abs() < 1e-3, "{last}");
        let mut prev = f64::MAX;
        for step in (3000..30000).step_by(997) {
            let lr = s.lr_at(step, spe, epochs);
            assert!(lr <= prev);
            prev = lr;
        }
    }
}
