//! One training epoch: every batch through the objective, backward, (clipped) optimizer step and
//! EMA update, with a progress bar.

use super::ema::Ema;
use super::loss::correct_topk;
use super::objective::{BatchLoss, Step};
use super::optim::Optimizer;
use super::schedule::CosineSchedule;
use crate::data::DataLoader;
use crate::model::Network;
use anyhow::Result;
use candle_core::Tensor;
use indicatif::ProgressBar;
use std::time::Instant;

/// Training diverged: the loss became NaN or infinite. A property of the run (its architecture
/// and recipe), not a fault of the machine, so a search records it as the trial's result.
#[derive(Debug, thiserror::Error)]
#[error("loss became {loss} at epoch {epoch} batch {batch}; lower train.lr")]
pub struct Diverged {
    pub loss: f64,
    /// 1-based epoch.
    pub epoch: usize,
    pub batch: usize,
}

/// What one epoch of training measured.
#[derive(Debug, Clone, Copy)]
pub struct EpochStats {
    /// Mean training loss.
    pub loss: f64,
    /// Top-1 on the (augmented) training batches.
    pub top1: f64,
    /// Learning rate of the last step.
    pub lr: f64,
    pub images: usize,
}

/// The parts of training one epoch touches.
pub struct EpochCtx<'a> {
    pub net: &'a Network,
    pub loader: &'a DataLoader,
    pub objective: &'a mut dyn BatchLoss,
    pub optimizer: &'a mut Optimizer,
    pub schedule: &'a CosineSchedule,
    pub ema: Option<&'a Ema>,
    /// Global-norm clipping threshold; 0 = off.
    pub grad_clip: f64,
}

/// Trains `epoch` (0-based) over every batch of the loader.
pub fn train_epoch(ctx: EpochCtx, epoch: usize, pb: &ProgressBar) -> Result<EpochStats> {
    let t0 = Instant::now();
    let batches = ctx.loader.len();
    let (mut loss_sum, mut correct, mut seen) = (0f64, 0usize, 0usize);
    let mut lr = ctx.schedule.lr(ctx.optimizer.step);
    for (bi, batch) in ctx.loader.epoch(epoch as u64).enumerate() {
        let batch = batch?;
        lr = ctx.schedule.lr(ctx.optimizer.step);
        let step = Step {
            epoch,
            batch: bi,
            batches,
        };
        // The whole step runs on the worker pool (see `ops::on_workers`).
        let (loss, logits) = crate::ops::on_workers(|| -> Result<(Tensor, Tensor)> {
            let (loss, logits) = ctx.objective.loss(ctx.net, &batch, step)?;
            let grads = loss.backward()?;
            let scale = clip_scale(ctx.optimizer, &grads, ctx.grad_clip)?;
            ctx.optimizer.step(&grads, lr, scale)?;
            if let Some(e) = ctx.ema {
                e.update(ctx.net)?;
            }
            Ok((loss, logits))
        })?;
        let b = batch.indices.len();
        let l = loss.to_scalar::<f32>()? as f64;
        if !l.is_finite() {
            return Err(Diverged {
                loss: l,
                epoch: epoch + 1,
                batch: bi,
            }
            .into());
        }
        loss_sum += l * b as f64;
        correct += correct_topk(&logits.detach(), &batch.labels.to_vec1::<u32>()?, 1)?;
        seen += b;
        pb.inc(1);
        pb.set_message(format!(
            "loss {:.4} acc {:.2}% {:.0} img/s",
            loss_sum / seen as f64,
            100.0 * correct as f64 / seen as f64,
            seen as f64 / t0.elapsed().as_secs_f64()
        ));
    }
    Ok(EpochStats {
        loss: loss_sum / seen.max(1) as f64,
        top1: correct as f64 / seen.max(1) as f64,
        lr,
        images: seen,
    })
}

/// The factor that brings the global gradient norm down to `clip` (1 when off or below it).
fn clip_scale(opt: &Optimizer, grads: &candle_core::backprop::GradStore, clip: f64) -> Result<f64> {
    if clip <= 0.0 {
        return Ok(1.0);
    }
    let norm = opt.grad_norm(grads)?;
    Ok(if norm > clip { clip / norm } else { 1.0 })
}
