//! Finding the teacher: explicit weights, a teacher trained earlier on the same data, or —
//! when there is none — a teacher trained first as a separate, visible run.

use super::cache::{cache_key, file_sha256};
use super::config::DistillConfig;
use crate::data::{DataConfig, Splits};
use crate::model::Network;
use crate::space::Arch;
use crate::train::checkpoint::{read_sidecar, weights_path};
use crate::train::evaluate::{evaluate, EvalMetrics};
use crate::train::objective::CrossEntropy;
use crate::train::recipe::TrainRecipe;
use crate::train::run_dir::OutputConfig;
use crate::train::trainer::{train_network, RunOptions, TrainJob};
use anyhow::{bail, Context, Result};
use candle_core::Device;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What finding (or training) a teacher needs to know.
#[derive(Debug, Clone, Copy)]
pub struct TeacherRequest<'a> {
    pub cfg: &'a DistillConfig,
    pub data: &'a DataConfig,
    /// The students' recipe; the teacher's is derived from it ([`DistillConfig::teacher_recipe`]).
    pub students: &'a TrainRecipe,
    pub seed: u64,
    /// Where runs live: a trained teacher is looked up, or trained, here.
    pub output: &'a OutputConfig,
    pub quiet: bool,
}

/// A loaded teacher and where its weights came from.
pub struct Teacher {
    pub net: Network,
    pub weights: PathBuf,
    pub source: String,
}

/// A teacher ready to teach: frozen network, its test metrics and its logit-cache key.
pub struct ReadyTeacher {
    pub net: Arc<Network>,
    pub source: String,
    pub test: EvalMetrics,
    /// On the students' validation split: what a student must not reach to be taught.
    pub val: EvalMetrics,
    /// Key of the offline logit cache, when the cache applies.
    pub cache_key: Option<String>,
}

/// The teacher-cache key for teacher weights at `weights`, or `None` when the cache is off or
/// cannot apply (feature losses, teacher BN in train mode).
pub fn teacher_cache_key(req: &TeacherRequest, weights: &Path) -> Result<Option<String>> {
    let d = req.cfg;
    if !d.cache || d.teacher_train_bn || d.needs_features() {
        return Ok(None);
    }
    let settings = serde_json::to_string(&(req.data, req.seed, d.teacher_res))?;
    Ok(Some(cache_key(&file_sha256(weights)?, &settings)))
}

/// Resolves the teacher, evaluates it on test (refusing one whose outputs are not finite) and
/// computes its cache key.
pub fn prepare_teacher(req: &TeacherRequest, splits: &Splits) -> Result<ReadyTeacher> {
    let t = resolve_teacher(req, splits)?;
    let test = evaluate(&t.net, &splits.test)?;
    anyhow::ensure!(
        test.loss.is_finite(),
        "the teacher from {} gives non-finite outputs (test loss {}); retrain it or give other weights",
        t.source,
        test.loss
    );
    Ok(ReadyTeacher {
        val: evaluate(&t.net, &splits.val)?,
        cache_key: teacher_cache_key(req, &t.weights)?,
        net: Arc::new(t.net),
        source: t.source,
        test,
    })
}

/// The teacher's training job: its own run folder, named by architecture, data and recipe.
pub fn teacher_job(req: &TeacherRequest, arch: &Arch) -> TrainJob {
    let recipe = req.cfg.teacher_recipe(req.students);
    let key = serde_json::to_string(&(req.data, &recipe, req.seed)).unwrap_or_default();
    let name = format!(
        "teacher-{}-{}",
        arch.name
            .as_deref()
            .unwrap_or("arch")
            .replace(['/', ' '], "_"),
        &cache_key(&arch.hash_hex(), &key)[..8]
    );
    TrainJob {
        run_dir: req.output.dir.join(&name),
        name,
        seed: req.seed,
        recipe,
        data: req.data.clone(),
        checkpoint_every: req.output.checkpoint_every,
    }
}

/// Looks for a finished teacher run in `runs_dir` with this architecture, data and recipe (the
/// seed may differ).
fn find_trained(runs_dir: &Path, arch: &Arch, job: &TrainJob) -> Option<PathBuf> {
    let matches = |p: &PathBuf| {
        let Ok(s) = read_sidecar(p) else { return false };
        let finished =
            read_sidecar(&p.with_file_name("last.json")).is_ok_and(|l| l.epoch == l.recipe.epochs);
        s.arch.canonical() == arch.canonical()
            && s.data == job.data
            && s.recipe == job.recipe
            && finished
    };
    let mut found: Vec<PathBuf> = std::fs::read_dir(runs_dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("checkpoints").join("best.json"))
        .filter(|p| p.exists() && matches(p))
        .collect();
    found.sort();
    found.into_iter().next()
}

/// Loads teacher weights given explicitly (a sidecar or a safetensors file).
fn load_given(w: &Path, arch: Arch, splits: &Splits, seed: u64) -> Result<Teacher> {
    let (arch, weights) = if w.extension().is_some_and(|e| e == "json") {
        let s = read_sidecar(w)?;
        (s.arch.clone(), weights_path(w, &s))
    } else {
        (arch, w.to_path_buf())
    };
    if arch.num_classes != splits.num_classes || arch.in_chans != splits.channels {
        bail!(
            "teacher {} predicts {} classes from {} channels; the data has {} classes and {} channels",
            w.display(),
            arch.num_classes,
            arch.in_chans,
            splits.num_classes,
            splits.channels
        );
    }
    let net = Network::new(&arch, &Device::Cpu, seed)?;
    net.params
        .load_safetensors(&weights, &[])
        .with_context(|| format!("loading teacher weights {}", weights.display()))?;
    Ok(Teacher {
        net,
        weights,
        source: format!("given weights {}", w.display()),
    })
}

/// Resolves the teacher (see the module docs).
pub fn resolve_teacher(req: &TeacherRequest, splits: &Splits) -> Result<Teacher> {
    let arch = req
        .cfg
        .teacher
        .to_arch(splits.channels, splits.num_classes)?;
    if let Some(w) = &req.cfg.teacher_weights {
        return load_given(w, arch, splits, req.seed);
    }
    let job = teacher_job(req, &arch);
    let sidecar = match find_trained(&req.output.dir, &arch, &job) {
        Some(p) => p,
        None => {
            tracing::info!(
                "no trained {} teacher for this data in {}; training it first ({} epochs) in {}",
                arch.name.as_deref().unwrap_or("teacher"),
                req.output.dir.display(),
                job.recipe.epochs,
                job.run_dir.display()
            );
            let net = Network::new(&arch, &Device::Cpu, job.seed)?;
            let mut ce = CrossEntropy {
                smoothing: job.recipe.label_smoothing,
            };
            let opts = RunOptions {
                resume: job.run_dir.join("checkpoints/last.json").exists(),
                quiet: req.quiet,
                ..Default::default()
            };
            train_network(&job, &net, splits, &mut ce, &opts)?;
            job.run_dir.join("checkpoints/best.json")
        }
    };
    let s = read_sidecar(&sidecar)?;
    let weights = weights_path(&sidecar, &s);
    let net = Network::new(&s.arch, &Device::Cpu, req.seed)?;
    net.params.load_safetensors(&weights, &[])?;
    Ok(Teacher {
        net,
        weights,
        source: format!("trained teacher {}", sidecar.display()),
    })
}
