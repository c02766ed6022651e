//! `[train]`: the training recipe — everything the trainer needs to know about how to train,
//! and nothing about what (model, data) or why (search, distillation).

use super::optim::OptimizerConfig;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// The recipe of one training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainRecipe {
    pub epochs: usize,
    pub batch_size: usize,
    /// Peak learning rate (after warm-up).
    pub lr: f64,
    /// Final learning rate of the cosine decay.
    pub min_lr: f64,
    pub warmup_epochs: f64,
    pub optimizer: OptimizerConfig,
    pub label_smoothing: f64,
    /// Global-norm gradient clipping; 0 = off.
    pub grad_clip: f64,
    /// EMA decay of the weights (e.g. 0.999); absent = no EMA.
    pub ema_decay: Option<f64>,
    /// Worker threads for the math (0 = all cores).
    pub threads: usize,
    /// Batch size for evaluation.
    pub eval_batch_size: usize,
}

impl Default for TrainRecipe {
    fn default() -> Self {
        Self {
            epochs: 10,
            batch_size: 128,
            lr: 0.1,
            min_lr: 0.0,
            warmup_epochs: 1.0,
            optimizer: OptimizerConfig::Sgd {
                momentum: 0.9,
                nesterov: true,
                weight_decay: 5e-5,
            },
            label_smoothing: 0.1,
            grad_clip: 0.0,
            ema_decay: None,
            threads: 0,
            eval_batch_size: 500,
        }
    }
}

/// The most worker threads a run may ask for.
pub const MAX_THREADS: usize = 1024;

impl TrainRecipe {
    /// Value checks serde cannot express; errors name the field and the valid range.
    pub fn check(&self) -> Result<()> {
        if self.epochs == 0 {
            bail!("train.epochs must be at least 1");
        }
        if self.batch_size == 0 || self.eval_batch_size == 0 {
            bail!("train.batch_size and train.eval_batch_size must be positive");
        }
        let lr_ok = self.lr > 0.0 && self.lr.is_finite();
        if !(lr_ok && self.min_lr >= 0.0 && self.min_lr <= self.lr) {
            bail!("train.lr must be positive and finite and train.min_lr in [0, lr]");
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            bail!("train.label_smoothing must be in [0, 1)");
        }
        if let Some(d) = self.ema_decay {
            if !(0.0..1.0).contains(&d) {
                bail!("train.ema_decay must be in [0, 1)");
            }
        }
        for (name, v) in [
            ("grad_clip", self.grad_clip),
            ("warmup_epochs", self.warmup_epochs),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                bail!("train.{name} must be a finite number >= 0, got {v}");
            }
        }
        if self.threads > MAX_THREADS {
            bail!(
                "train.threads = {} is more than {MAX_THREADS} (0 = all cores)",
                self.threads
            );
        }
        self.optimizer.check()
    }
}
