//! Knowledge distillation: a frozen teacher's logits and features train a student.
//!
//! * [`config`] — the `[distill]` section.
//! * [`losses`] — KD, DKD, feature MSE, attention transfer.
//! * [`cache`] — the offline teacher-logit cache.
//! * [`objective`] — the combined per-batch loss plugged into the shared trainer.
//! * [`teacher`] — finding or training the teacher.

pub mod cache;
pub mod config;
pub mod losses;
pub mod objective;
pub mod teacher;

use crate::model::Network;
use crate::train::config::Experiment;
use crate::train::splits::Splits;
use crate::train::trainer::{evaluate, train_network, EvalMetrics, RunOptions, Summary};
use anyhow::Result;
use candle_core::Device;
use objective::DistillObjective;

/// What a distillation run reports.
pub struct DistillReport {
    pub student: Summary,
    pub teacher_test: EvalMetrics,
    pub teacher_source: String,
    pub teacher_seconds: f64,
    pub cached_batches: usize,
}

/// The teacher-cache key for `exp` with the teacher weights at `weights`, or `None` when the
/// cache is off or cannot apply (feature losses, teacher BN in train mode).
pub fn teacher_cache_key(exp: &Experiment, weights: &std::path::Path) -> Result<Option<String>> {
    let d = &exp.distill;
    if !d.cache || d.teacher_train_bn || d.needs_features() {
        return Ok(None);
    }
    let settings = serde_json::to_string(&(&exp.data, exp.seed, d.teacher_res))?;
    Ok(Some(cache::cache_key(
        &cache::file_sha256(weights)?,
        &settings,
    )))
}

/// Distills the experiment's student from its teacher (found or trained first).
pub fn distill(exp: &Experiment, splits: &Splits, opts: &RunOptions) -> Result<DistillReport> {
    let t = teacher::resolve_teacher(exp, splits, opts.quiet)?;
    let teacher_test = evaluate(&t.net, &splits.test)?;
    let arch = exp.model.to_arch(splits.channels, splits.num_classes)?;
    let student = Network::new(&arch, &Device::Cpu, exp.seed)?;
    let d = &exp.distill;
    tracing::info!(
        "{}: teacher from {} (test top-1 {:.2}%)",
        exp.name,
        t.source,
        100.0 * teacher_test.top1
    );
    tracing::info!("{}: {}", exp.name, d.describe());
    let cache_key = teacher_cache_key(exp, &t.weights)?;
    let mut obj = DistillObjective::new(
        d,
        exp.train.label_smoothing,
        &student,
        std::sync::Arc::new(t.net),
        splits.train.clone(),
        cache_key,
        exp.seed,
    )?;
    let summary = train_network(exp, &student, splits, &mut obj, opts)?;
    Ok(DistillReport {
        student: summary,
        teacher_test,
        teacher_source: t.source,
        teacher_seconds: obj.teacher_seconds,
        cached_batches: obj.cached_batches,
    })
}
