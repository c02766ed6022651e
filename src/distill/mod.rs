//! Knowledge distillation: a frozen teacher's logits and features train a student.
//!
//! * [`config`] — the `[distill]` section.
//! * [`losses`] — KD, DKD, feature MSE, attention transfer.
//! * [`cache`] — the offline distillation dataset (teacher logits and features per view).
//! * [`frozen`] — the frozen teacher on the native inference engine.
//! * [`objective`] — the combined per-batch loss plugged into the shared trainer.
//! * [`teacher`] — finding, training and preparing the teacher.

pub mod cache;
pub mod config;
pub mod frozen;
pub mod losses;
pub mod objective;
pub mod teacher;

use crate::data::Splits;
use crate::model::Network;
use crate::space::Arch;
use crate::train::evaluate::EvalMetrics;
use crate::train::trainer::{train_network, RunOptions, Summary, TrainJob};
use anyhow::Result;
use candle_core::Device;
use objective::DistillObjective;
use teacher::{prepare_teacher, TeacherRequest};

/// What a distillation run reports.
pub struct DistillReport {
    pub student: Summary,
    pub teacher_test: EvalMetrics,
    pub teacher_source: String,
    pub teacher_seconds: f64,
    /// Batches whose teacher outputs came from the offline distillation dataset.
    pub cached_batches: usize,
    /// Batches for which the teacher ran.
    pub live_batches: usize,
    /// Bytes per training sample in a cached view (logits and features), when cached.
    pub cache_bytes_per_sample: Option<usize>,
}

/// Distills the student `arch` (trained as `job`) from the teacher `teacher` asks for (found or
/// trained first).
pub fn distill(
    job: &TrainJob,
    arch: &Arch,
    teacher: &TeacherRequest,
    splits: &Splits,
    opts: &RunOptions,
) -> Result<DistillReport> {
    let t = prepare_teacher(teacher, splits)?;
    let student = Network::new(arch, &Device::Cpu, job.seed)?;
    let d = teacher.cfg;
    tracing::info!(
        "{}: teacher from {} (test top-1 {:.2}%)",
        job.name,
        t.source,
        100.0 * t.test.top1
    );
    tracing::info!("{}: {}", job.name, d.describe());
    let mut obj = DistillObjective::new(
        d,
        job.recipe.label_smoothing,
        &student,
        t.net,
        splits.train.dataset().n,
        t.cache_key,
        job.seed,
    )?;
    let summary = train_network(job, &student, splits, &mut obj, opts)?;
    Ok(DistillReport {
        student: summary,
        teacher_test: t.test,
        teacher_source: t.source,
        teacher_seconds: obj.teacher_seconds,
        cached_batches: obj.cached_batches,
        live_batches: obj.live_batches,
        cache_bytes_per_sample: obj.cache_bytes_per_sample(),
    })
}
