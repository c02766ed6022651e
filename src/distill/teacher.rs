//! Finding the teacher: explicit weights, a finished run of its [`TeacherPlan`] (its own
//! experiment, trained for its own sake, or the students' data with the teacher's epochs), or —
//! when there is none — that run trained first, as a separate, visible run.

use super::cache::cache_key;
use super::config::DistillConfig;
use crate::data::{build_splits, DataConfig, Splits};
use crate::fsutil::file_sha256;
use crate::model::{Ensemble, Network};
use crate::space::{Arch, ModelSpec};
use crate::train::checkpoint::{read_sidecar, weights_path};
use crate::train::evaluate::{evaluate, EvalMetrics};
use crate::train::objective::CrossEntropy;
use crate::train::recipe::TrainRecipe;
use crate::train::run_dir::OutputConfig;
use crate::train::trainer::{train_network, RunOptions, TrainJob};
use anyhow::{bail, Context, Result};
use candle_core::Device;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How the teacher is had when no weights are given: its model and the run that trains it, with
/// its own data, recipe and seed. A finished run of it in `runs_dir` is reused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeacherPlan {
    pub model: ModelSpec,
    pub data: DataConfig,
    pub recipe: TrainRecipe,
    pub seed: u64,
    /// Folder that holds run folders.
    pub runs_dir: PathBuf,
    /// Run name; `None`: `teacher-<arch>-<hash of arch, data, recipe and seed>`.
    pub name: Option<String>,
    pub checkpoint_every: usize,
    /// Further members when the teacher is an ensemble (mean logits, feature maps side by
    /// side), each trained as a run of its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ensemble: Vec<TeacherPlan>,
}

impl TeacherPlan {
    /// The teacher of `[distill]` alone: trained on the students' data with the students'
    /// recipe, changed by `teacher_epochs` and `teacher_lr`.
    pub fn inline(
        cfg: &DistillConfig,
        data: &DataConfig,
        students: &TrainRecipe,
        seed: u64,
        output: &OutputConfig,
    ) -> Self {
        Self {
            model: cfg.teacher.clone(),
            data: data.clone(),
            recipe: cfg.teacher_recipe(students),
            seed,
            runs_dir: output.dir.clone(),
            name: None,
            checkpoint_every: output.checkpoint_every,
            ensemble: Vec::new(),
        }
    }

    /// The runs that make the teacher: this one, then the ensemble's further members.
    pub fn members(&self) -> Vec<&TeacherPlan> {
        std::iter::once(self).chain(&self.ensemble).collect()
    }

    /// Refuses a teacher that trained on the students' validation images or sees other inputs:
    /// the same dataset and split seed, a validation split at least as large (so it contains
    /// the students'), the same channels, and the input size the teacher is fed.
    pub fn check_against(&self, students: &DataConfig, teacher_res: Option<usize>) -> Result<()> {
        let (t, s) = (&self.data, students);
        if (&t.dataset, &t.path, t.split_seed) != (&s.dataset, &s.path, s.split_seed) {
            bail!(
                "the teacher's data ({:?}, split seed {}) is not the students' ({:?}, split seed {}): it may have trained on their validation images",
                t.dataset, t.split_seed, s.dataset, s.split_seed
            );
        }
        if t.val_size < s.val_size {
            bail!(
                "the teacher holds out {} validation images, the students {}: it trained on some of the students' validation images (give the teacher data.val_size >= {})",
                t.val_size, s.val_size, s.val_size
            );
        }
        let want = teacher_res.unwrap_or(s.augment.input_size);
        if (t.augment.input_size, t.augment.channels) != (want, s.augment.channels) {
            bail!(
                "the teacher trains on {}×{} inputs with {} channels, but is fed {want}×{want} with {} (set distill.teacher_res or the teacher's data.augment)",
                t.augment.input_size, t.augment.input_size, t.augment.channels, s.augment.channels
            );
        }
        Ok(())
    }

    /// The teacher's training job for the resolved `arch`.
    pub fn job(&self, arch: &Arch) -> TrainJob {
        let name = self.name.clone().unwrap_or_else(|| {
            let key =
                serde_json::to_string(&(&self.data, &self.recipe, self.seed)).unwrap_or_default();
            format!(
                "teacher-{}-{}",
                arch.name
                    .as_deref()
                    .unwrap_or("arch")
                    .replace(['/', ' '], "_"),
                &cache_key(&arch.hash_hex(), &key)[..8]
            )
        });
        TrainJob {
            run_dir: self.runs_dir.join(&name),
            name,
            seed: self.seed,
            recipe: self.recipe.clone(),
            data: self.data.clone(),
            checkpoint_every: self.checkpoint_every,
        }
    }
}

/// What finding (or training) a teacher for a group of students needs to know.
#[derive(Debug, Clone, Copy)]
pub struct TeacherRequest<'a> {
    /// The losses, the cache and explicit teacher weights.
    pub cfg: &'a DistillConfig,
    /// The students' data: the teacher's views are theirs.
    pub data: &'a DataConfig,
    /// The students' seed (their augmentation, hence the teacher's views).
    pub seed: u64,
    pub plan: &'a TeacherPlan,
    pub quiet: bool,
}

impl<'a> TeacherRequest<'a> {
    /// The request of students trained on `data` with `seed`, distilled as `cfg` says, from the
    /// teacher `plan` describes.
    pub fn new(
        cfg: &'a DistillConfig,
        data: &'a DataConfig,
        seed: u64,
        plan: &'a TeacherPlan,
        quiet: bool,
    ) -> Self {
        Self {
            cfg,
            data,
            seed,
            plan,
            quiet,
        }
    }
}

/// A loaded teacher (one network, or an ensemble) and where its weights came from.
pub struct Teacher {
    pub net: Ensemble,
    /// Each member's weights file, in member order.
    pub weights: Vec<PathBuf>,
    pub source: String,
}

/// A teacher ready to teach: frozen network, its test metrics and its logit-cache key.
pub struct ReadyTeacher {
    pub net: Arc<Ensemble>,
    pub source: String,
    pub test: EvalMetrics,
    /// On the students' validation split: what a student must not reach to be taught.
    pub val: EvalMetrics,
    /// Key of the offline distillation dataset, when the cache applies.
    pub cache_key: Option<String>,
    /// Seconds spent finding (or training) and evaluating the teacher.
    pub prepare_seconds: f64,
}

/// The cache key `key`, made for students of data seed `prepared`, for students of data seed
/// `seed`: a view holds the teacher's outputs on one seed's augmented images, so students of
/// another seed need views of their own.
pub fn cache_key_for_seed(key: &str, prepared: u64, seed: u64) -> String {
    match seed == prepared {
        true => key.to_string(),
        false => cache_key(key, &format!("data seed {seed}")),
    }
}

/// The key of the offline distillation dataset for the teacher whose members' weights are
/// `weights`: the weights' hashes and everything that changes a view (the students' data and seed, the teacher's input
/// size, the tapped features, which a view holds whether or not this run's losses read them,
/// and the forward that computes them).
/// `None` when the cache is off or cannot apply (teacher BN in train mode makes outputs depend
/// on the batch).
pub fn teacher_cache_key(req: &TeacherRequest, weights: &[PathBuf]) -> Result<Option<String>> {
    let d = req.cfg;
    if !d.cache || d.teacher_train_bn {
        return Ok(None);
    }
    // The forward that computes the views is part of their identity: views of the training
    // path's forward and of the native engine differ in float rounding.
    let forward = "native engine";
    let settings =
        serde_json::to_string(&(req.data, req.seed, d.teacher_res, &d.feature_taps, forward))?;
    let hashes = weights
        .iter()
        .map(|w| file_sha256(w))
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(cache_key(&hashes.join("+"), &settings)))
}

/// Resolves the teacher, evaluates it on test (refusing one whose outputs are not finite) and
/// computes its cache key.
pub fn prepare_teacher(req: &TeacherRequest, splits: &Splits) -> Result<ReadyTeacher> {
    let started = std::time::Instant::now();
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
        prepare_seconds: started.elapsed().as_secs_f64(),
    })
}

/// Looks for a finished teacher run with this architecture, data and recipe: the job's own run
/// folder first, then any run beside it (the seed may differ).
fn find_trained(job: &TrainJob, arch: &Arch) -> Option<PathBuf> {
    let matches = |p: &PathBuf| {
        let Ok(s) = read_sidecar(p) else { return false };
        let finished =
            read_sidecar(&p.with_file_name("last.json")).is_ok_and(|l| l.epoch == l.recipe.epochs);
        s.arch.canonical() == arch.canonical()
            && s.data == job.data
            && s.recipe == job.recipe
            && finished
    };
    let own = job.run_dir.join("checkpoints").join("best.json");
    if own.exists() && matches(&own) {
        return Some(own);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(job.run_dir.parent()?)
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
        net: Ensemble::new(vec![net])?,
        weights: vec![weights],
        source: format!("given weights {}", w.display()),
    })
}

/// Resolves the teacher (see the module docs): given weights, or each member of the plan found
/// or trained.
pub fn resolve_teacher(req: &TeacherRequest, splits: &Splits) -> Result<Teacher> {
    if let Some(w) = &req.cfg.teacher_weights {
        let arch = req
            .plan
            .model
            .to_arch(splits.channels, splits.num_classes)?;
        return load_given(w, arch, splits, req.seed);
    }
    let (mut nets, mut weights, mut sources) = (Vec::new(), Vec::new(), Vec::new());
    for member in req.plan.members() {
        let (net, w, sidecar) = resolve_member(member, req, splits)?;
        nets.push(net);
        weights.push(w);
        sources.push(sidecar.display().to_string());
    }
    let source = match sources.len() {
        1 => format!("trained teacher {}", sources[0]),
        n => format!("ensemble of {n} trained teachers {}", sources.join(" + ")),
    };
    Ok(Teacher {
        net: Ensemble::new(nets)?,
        weights,
        source,
    })
}

/// One member's network, weights file and sidecar: a finished run of its plan, or trained now.
fn resolve_member(
    plan: &TeacherPlan,
    req: &TeacherRequest,
    splits: &Splits,
) -> Result<(Network, PathBuf, PathBuf)> {
    let arch = plan.model.to_arch(splits.channels, splits.num_classes)?;
    let job = plan.job(&arch);
    let sidecar = match find_trained(&job, &arch) {
        Some(p) => p,
        None => train_teacher(&job, &arch, req.quiet)?,
    };
    let s = read_sidecar(&sidecar)?;
    let weights = weights_path(&sidecar, &s);
    let net = Network::new(&s.arch, &Device::Cpu, req.seed)?;
    net.params
        .load_safetensors(&weights, &[])
        .with_context(|| format!("loading teacher weights {}", weights.display()))?;
    Ok((net, weights, sidecar))
}

/// Trains the teacher as its own run, on its own data splits; returns its best sidecar.
fn train_teacher(job: &TrainJob, arch: &Arch, quiet: bool) -> Result<PathBuf> {
    tracing::info!(
        "no trained {} teacher for this data in {}; training it first ({} epochs) in {}",
        arch.name.as_deref().unwrap_or("teacher"),
        job.run_dir.parent().unwrap_or(Path::new(".")).display(),
        job.recipe.epochs,
        job.run_dir.display()
    );
    let r = &job.recipe;
    let splits = build_splits(&job.data, r.batch_size, r.eval_batch_size, job.seed)
        .context("building the teacher's data")?;
    let net = Network::new(arch, &Device::Cpu, job.seed)?;
    let mut ce = CrossEntropy {
        smoothing: r.label_smoothing,
    };
    let opts = RunOptions {
        resume: job.run_dir.join("checkpoints/last.json").exists(),
        quiet,
        ..Default::default()
    };
    train_network(job, &net, &splits, &mut ce, &opts)?;
    Ok(job.run_dir.join("checkpoints/best.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_data_seed_has_its_own_cache_key() {
        let key = "0123456789abcdef01234567";
        assert_eq!(cache_key_for_seed(key, 3, 3), key);
        let (four, five) = (cache_key_for_seed(key, 3, 4), cache_key_for_seed(key, 3, 5));
        assert!(four != key && five != key && four != five);
        assert_eq!(four, cache_key_for_seed(key, 3, 4));
    }

    #[test]
    fn the_cache_key_changes_with_every_setting_a_view_depends_on() {
        let dir = std::env::temp_dir().join(format!("mnv4-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let weights = vec![dir.join("w.safetensors")];
        std::fs::write(&weights[0], b"weights one").unwrap();
        let base_cfg = DistillConfig::default();
        let base_data = DataConfig::default();
        let plan = TeacherPlan::inline(
            &base_cfg,
            &base_data,
            &TrainRecipe::default(),
            0,
            &OutputConfig::default(),
        );
        let key = |cfg: &DistillConfig, data: &DataConfig, seed: u64| {
            let req = TeacherRequest {
                cfg,
                data,
                seed,
                plan: &plan,
                quiet: true,
            };
            teacher_cache_key(&req, &weights).unwrap()
        };
        let base = key(&base_cfg, &base_data, 0).unwrap();
        assert_eq!(key(&base_cfg, &base_data, 0).unwrap(), base);
        let with_cfg = |f: &dyn Fn(&mut DistillConfig)| {
            let mut c = base_cfg.clone();
            f(&mut c);
            key(&c, &base_data, 0)
        };
        let with_data = |f: &dyn Fn(&mut DataConfig)| {
            let mut d = base_data.clone();
            f(&mut d);
            key(&base_cfg, &d, 0).unwrap()
        };
        let changed = [
            key(&base_cfg, &base_data, 1).unwrap(),
            with_cfg(&|c| c.feature_taps = vec![3]).unwrap(),
            with_cfg(&|c| c.teacher_res = Some(64)).unwrap(),
            with_data(&|d| d.augment.pad += 1),
            with_data(&|d| d.augment.flip = !d.augment.flip),
            with_data(&|d| d.augment.erase = 0.25),
            with_data(&|d| d.augment.input_size = 28),
            with_data(&|d| d.train_limit = 100),
            with_data(&|d| d.val_size += 1),
            with_data(&|d| d.split_seed += 1),
        ];
        for (i, k) in changed.iter().enumerate() {
            assert_ne!(*k, base, "setting {i} did not change the key");
        }
        // A view holds the taps whether or not the losses read them: logit-only runs share it.
        assert_eq!(with_cfg(&|c| c.feature_weight = 0.0).unwrap(), base);
        // No cache when it is off or the teacher's BN trains (outputs depend on the batch).
        assert!(with_cfg(&|c| c.cache = false).is_none());
        assert!(with_cfg(&|c| c.teacher_train_bn = true).is_none());
        // Other weights, other key.
        std::fs::write(&weights[0], b"weights two").unwrap();
        let two = key(&base_cfg, &base_data, 0).unwrap();
        assert_ne!(two, base);
        // An ensemble's key covers every member's weights.
        let other = dir.join("other.safetensors");
        std::fs::write(&other, b"member two").unwrap();
        let pair = |weights: &[PathBuf]| {
            let req = TeacherRequest::new(&base_cfg, &base_data, 0, &plan, true);
            teacher_cache_key(&req, weights).unwrap().unwrap()
        };
        let ab = pair(&[weights[0].clone(), other.clone()]);
        assert!(ab != two && ab != pair(&[other.clone(), weights[0].clone()]));
        std::fs::write(&other, b"member two, retrained").unwrap();
        assert_ne!(pair(&[weights[0].clone(), other]), ab);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_teacher_that_saw_the_students_validation_images_is_refused() {
        let students = DataConfig {
            val_size: 2000,
            ..DataConfig::default()
        };
        let mut plan = TeacherPlan::inline(
            &DistillConfig::default(),
            &students,
            &TrainRecipe::default(),
            0,
            &OutputConfig::default(),
        );
        plan.data.val_size = 5000;
        plan.data.train_limit = 0;
        plan.check_against(&students, None).unwrap();
        plan.data.val_size = 1000;
        let e = plan.check_against(&students, None).unwrap_err().to_string();
        assert!(e.contains("val_size >= 2000"), "{e}");
        plan.data.val_size = 5000;
        plan.data.split_seed = 3;
        let e = plan.check_against(&students, None).unwrap_err().to_string();
        assert!(e.contains("split seed"), "{e}");
        plan.data.split_seed = 0;
        let e = plan
            .check_against(&students, Some(64))
            .unwrap_err()
            .to_string();
        assert!(e.contains("teacher_res"), "{e}");
    }
}
