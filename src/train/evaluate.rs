//! Loss, top-1 and top-5 of a model over a loader, in eval mode.

use super::loss::{correct_topk, cross_entropy};
use crate::data::DataLoader;
use crate::model::{Classifier, Mode};
use anyhow::Result;

/// Loss, top-1 and top-5 (fractions) of a model on a loader.
#[derive(Debug, Clone, Copy, Default)]
pub struct EvalMetrics {
    pub loss: f64,
    pub top1: f64,
    pub top5: f64,
}

impl EvalMetrics {
    /// Metrics of an evaluation that did not run (e.g. no test pass in a search trial).
    pub fn not_measured() -> Self {
        Self {
            loss: f64::NAN,
            top1: f64::NAN,
            top5: f64::NAN,
        }
    }
}

/// Evaluates `net` in eval mode over every batch of `loader`.
pub fn evaluate(net: &impl Classifier, loader: &DataLoader) -> Result<EvalMetrics> {
    let (mut loss, mut c1, mut c5, mut n) = (0f64, 0usize, 0usize, 0usize);
    for batch in loader.epoch(0) {
        let batch = batch?;
        let logits = net.logits(&batch.images, Mode::Eval)?;
        let b = batch.indices.len();
        loss += cross_entropy(&logits, &batch.labels, 0.0)?.to_scalar::<f32>()? as f64 * b as f64;
        let labels = batch.labels.to_vec1::<u32>()?;
        c1 += correct_topk(&logits, &labels, 1)?;
        c5 += correct_topk(&logits, &labels, 5.min(net.classes()))?;
        n += b;
    }
    anyhow::ensure!(n > 0, "evaluation set is empty");
    Ok(EvalMetrics {
        loss: loss / n as f64,
        top1: c1 as f64 / n as f64,
        top5: c5 as f64 / n as f64,
    })
}
