//! What a training step minimizes: the [`BatchLoss`] seam. The trainer defaults to
//! [`CrossEntropy`]; distillation plugs in its own objective.

use super::loss::cross_entropy;
use crate::data::Batch;
use crate::model::{Mode, Network, ParamKind};
use anyhow::Result;
use candle_core::{Tensor, Var};

/// Where in training a batch falls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// 0-based epoch.
    pub epoch: usize,
    /// Position of the batch within the epoch.
    pub batch: usize,
    /// Batches per epoch.
    pub batches: usize,
}

impl Step {
    /// Epochs done so far, fractional (e.g. 1.5 halfway through the second epoch).
    pub fn progress(&self) -> f64 {
        self.epoch as f64 + self.batch as f64 / self.batches.max(1) as f64
    }
}

/// The loss of one training batch.
pub trait BatchLoss: Send {
    /// Returns (loss to minimize, student logits) for one batch.
    fn loss(&mut self, net: &Network, batch: &Batch, step: Step) -> Result<(Tensor, Tensor)>;

    /// Extra trainable tensors the loss owns (e.g. feature adapters), optimized with the model.
    fn extra_params(&self) -> Vec<(String, Var, ParamKind)> {
        Vec::new()
    }

    /// Called after the last batch of every epoch (e.g. to flush a cache).
    fn end_epoch(&mut self, _epoch: usize) -> Result<()> {
        Ok(())
    }
}

/// Plain cross-entropy with label smoothing.
pub struct CrossEntropy {
    pub smoothing: f64,
}

impl BatchLoss for CrossEntropy {
    fn loss(&mut self, net: &Network, batch: &Batch, _: Step) -> Result<(Tensor, Tensor)> {
        let logits = net.forward(&batch.images, Mode::Train)?;
        Ok((
            cross_entropy(&logits, &batch.labels, self.smoothing)?,
            logits,
        ))
    }
}
