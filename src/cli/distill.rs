//! `mnv4-lab distill`: train a student from a teacher's logits and features.

use super::{claim_run_dir, open_splits};
use crate::experiment::Experiment;
use crate::train::trainer::RunOptions;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

/// Arguments of `mnv4-lab distill`.
#[derive(Debug, Args)]
pub struct DistillArgs {
    /// Experiment file (data, student recipe, [distill] weights). Default: all defaults.
    pub experiment: Option<PathBuf>,
    /// Teacher: preset (large, hybrid-medium, …), arch file or block string. Without
    /// --teacher-weights, a teacher trained earlier on the same data is reused, or one is trained first.
    #[arg(long)]
    pub teacher: Option<String>,
    /// Teacher width multiplier.
    #[arg(long)]
    pub teacher_width: Option<f64>,
    /// Teacher weights: an mnv4-lab checkpoint sidecar (.json) or a safetensors file (ours or timm's).
    #[arg(long)]
    pub teacher_weights: Option<PathBuf>,
    /// Student: preset, arch file or block string.
    #[arg(long)]
    pub student: Option<String>,
    /// Student width multiplier.
    #[arg(long)]
    pub student_width: Option<f64>,
    #[command(flatten)]
    pub run: super::RunFlags,
}

pub fn run(args: &DistillArgs) -> Result<()> {
    let sidecar = args
        .teacher_weights
        .as_ref()
        .is_some_and(|w| w.extension().is_some_and(|e| e == "json"));
    anyhow::ensure!(
        !(sidecar && (args.teacher.is_some() || args.teacher_width.is_some())),
        "--teacher-weights names a checkpoint sidecar, which records its own architecture; drop --teacher / --teacher-width"
    );
    let mut sets = Vec::new();
    let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    if let Some(t) = &args.teacher {
        sets.push(format!("distill.teacher.arch={}", q(t)));
    }
    if let Some(w) = args.teacher_width {
        sets.push(format!("distill.teacher.width={w}"));
    }
    if let Some(w) = &args.teacher_weights {
        sets.push(format!(
            "distill.teacher_weights={}",
            q(&w.to_string_lossy())
        ));
    }
    if let Some(s) = &args.student {
        sets.push(format!("model.arch={}", q(s)));
    }
    if let Some(w) = args.student_width {
        sets.push(format!("model.width={w}"));
    }
    sets.extend(args.run.sets.iter().cloned());
    let exp = match &args.experiment {
        Some(p) => Experiment::load(p, &sets)?,
        None => Experiment::from_toml("", &sets, "distill", "defaults")?,
    };
    super::check_memory(&exp, super::Trains::ModelAndTeacher)?;
    super::set_threads(exp.train.threads);
    let splits = open_splits(&exp)?;
    let opts = RunOptions {
        resume: args.run.resume,
        quiet: args.run.quiet,
        ..Default::default()
    };
    let arch = exp.model.to_arch(splits.channels, splits.num_classes)?;
    let _lock = claim_run_dir(&exp, args.run.resume)?;
    let job = exp.train_job();
    let plan = exp.teacher_plan()?;
    let teacher = exp.teacher_request(&plan, args.run.quiet);
    let r = crate::distill::distill(&job, &arch, &teacher, &splits, &opts)?;
    println!(
        "{}: teacher test top-1 {:.2}% | student best val top-1 {:.2}% (epoch {}), test top-1 {:.2}% | teacher time {:.1}s, {} batches from the teacher cache, {} live | run folder {}",
        exp.name,
        100.0 * r.teacher_test.top1,
        100.0 * r.student.best_val_top1,
        r.student.best_epoch,
        100.0 * r.student.test.top1,
        r.teacher_seconds,
        r.cached_batches,
        r.live_batches,
        r.student.run_dir.display()
    );
    let json = serde_json::json!({
        "name": exp.name,
        "teacher_source": r.teacher_source,
        "teacher_test_top1": r.teacher_test.top1,
        "student_best_val_top1": r.student.best_val_top1,
        "student_test_top1": r.student.test.top1,
        "teacher_seconds": r.teacher_seconds,
        "cached_batches": r.cached_batches,
        "live_batches": r.live_batches,
        "cache_bytes_per_sample": r.cache_bytes_per_sample,
        "loss": exp.distill.describe(),
        "wall_seconds": r.student.wall_seconds,
    });
    crate::fsutil::atomic_write(
        &r.student.run_dir.join("distill.json"),
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )
}
