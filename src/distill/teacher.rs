//! Finding the teacher: explicit weights, a teacher trained earlier on the same data, or —
//! when there is none — a teacher trained first as a separate, visible stage.

use crate::model::Network;
use crate::space::Arch;
use crate::train::checkpoint::{read_sidecar, weights_path};
use crate::train::config::Experiment;
use crate::train::splits::Splits;
use crate::train::trainer::{train_network, CrossEntropy, RunOptions};
use anyhow::{bail, Context, Result};
use candle_core::Device;
use std::path::{Path, PathBuf};

/// A loaded teacher and where its weights came from.
pub struct Teacher {
    pub net: Network,
    pub weights: PathBuf,
    pub source: String,
}

/// The teacher-training experiment derived from a distillation experiment: same data, split
/// and recipe, the teacher's architecture, the teacher's epochs and learning rate.
pub fn teacher_experiment(exp: &Experiment, arch: &Arch) -> Experiment {
    let mut t = exp.clone();
    t.model = exp.distill.teacher.clone();
    if let Some(e) = exp.distill.teacher_epochs {
        t.train.epochs = e;
    }
    if let Some(lr) = exp.distill.teacher_lr {
        t.train.lr = lr;
        t.train.min_lr = t.train.min_lr.min(lr);
    }
    t.distill = Default::default();
    t.name = format!(
        "teacher-{}-{}",
        arch.name
            .as_deref()
            .unwrap_or("arch")
            .replace(['/', ' '], "_"),
        &crate::distill::cache::cache_key(
            &arch.hash_hex(),
            &serde_json::to_string(&(&t.data, &t.train, t.seed)).unwrap_or_default()
        )[..8]
    );
    t
}

/// A teacher run can stand in for another when it saw the same data and split and followed the
/// same recipe (the seed may differ).
fn same_data_and_recipe(a: &Experiment, b: &Experiment) -> bool {
    a.data == b.data && a.train == b.train
}

/// Looks for a finished teacher run in `runs_dir` with this architecture, data and recipe.
fn find_trained(runs_dir: &Path, arch: &Arch, exp: &Experiment) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(runs_dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("checkpoints").join("best.json"))
        .filter(|p| p.exists())
        .filter(|p| {
            read_sidecar(p)
                .map(|s| {
                    s.arch.canonical() == arch.canonical()
                        && same_data_and_recipe(&s.experiment, exp)
                        && {
                            // Only finished runs: the last checkpoint reached the planned epochs.
                            let last = p.with_file_name("last.json");
                            read_sidecar(&last)
                                .map(|l| l.epoch == l.experiment.train.epochs)
                                .unwrap_or(false)
                        }
                })
                .unwrap_or(false)
        })
        .collect();
    found.sort();
    found.into_iter().next()
}

/// Resolves the teacher for `exp` (see the module docs).
pub fn resolve_teacher(exp: &Experiment, splits: &Splits, quiet: bool) -> Result<Teacher> {
    let d = &exp.distill;
    let arch = d.teacher.to_arch(splits.channels, splits.num_classes)?;
    let dev = Device::Cpu;
    if let Some(w) = &d.teacher_weights {
        let is_sidecar = w.extension().is_some_and(|e| e == "json");
        let (arch, weights) = if is_sidecar {
            let s = read_sidecar(w)?;
            (s.arch.clone(), weights_path(w, &s))
        } else {
            (arch, w.clone())
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
        let net = Network::new(&arch, &dev, exp.seed)?;
        net.params
            .load_safetensors(&weights, &[])
            .with_context(|| format!("loading teacher weights {}", weights.display()))?;
        return Ok(Teacher {
            net,
            weights,
            source: format!("given weights {}", w.display()),
        });
    }
    let texp = teacher_experiment(exp, &arch);
    let sidecar = match find_trained(&exp.output.dir, &arch, &texp) {
        Some(p) => p,
        None => {
            tracing::info!(
                "no trained {} teacher for this data in {}; training it first ({} epochs) in {}",
                arch.name.as_deref().unwrap_or("teacher"),
                exp.output.dir.display(),
                texp.train.epochs,
                texp.run_dir().display()
            );
            let net = Network::new(&arch, &dev, texp.seed)?;
            let mut ce = CrossEntropy {
                smoothing: texp.train.label_smoothing,
            };
            let resume = texp.run_dir().join("checkpoints/last.json").exists();
            train_network(
                &texp,
                &net,
                splits,
                &mut ce,
                &RunOptions {
                    resume,
                    quiet,
                    ..Default::default()
                },
            )?;
            texp.run_dir().join("checkpoints/best.json")
        }
    };
    let s = read_sidecar(&sidecar)?;
    let weights = weights_path(&sidecar, &s);
    let net = Network::new(&s.arch, &dev, exp.seed)?;
    net.params.load_safetensors(&weights, &[])?;
    Ok(Teacher {
        net,
        weights,
        source: format!("trained teacher {}", sidecar.display()),
    })
}
