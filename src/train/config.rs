//! The experiment file (`experiments/*.toml`): `[data]`, `[model]`, `[train]`, `[output]`.
//! Every field has a default; unknown keys are rejected by name; `--set section.key=value`
//! overrides any field.

use super::optim::OptimizerConfig;
use crate::data::augment::AugmentConfig;
use crate::space::ModelSpec;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A whole experiment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Experiment {
    /// Run name; default: the experiment file's stem.
    pub name: String,
    /// Master seed: weights, data order, augmentation, dropout.
    pub seed: u64,
    pub data: DataConfig,
    pub model: ModelSpec,
    pub train: TrainConfig,
    pub output: OutputConfig,
    /// `[distill]`, read by `mnv4-lab distill` and the search.
    pub distill: crate::distill::config::DistillConfig,
    /// `[search]`, read by `mnv4-lab search`.
    pub search: crate::search::config::SearchConfig,
}

/// `[data]`: which dataset, the validation split, preprocessing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// `fashion-mnist` (default), `mnist`, `cifar10`, `cifar100` or `folder`.
    pub dataset: String,
    /// Where the files are; default: looked up (for Fashion-MNIST: `data/fashion-mnist/`, then
    /// `/usr/share/datasets/fashion-mnist/`). For `folder`: `path/train/` and `path/test/`.
    pub path: Option<PathBuf>,
    /// Training images held out for validation (selection happens on these, never on test).
    pub val_size: usize,
    /// Seed of the train/validation split, kept apart from `seed` so that runs with different
    /// seeds (and their teacher) share one split and no model trains on another's validation set.
    pub split_seed: u64,
    /// Use only the first N training images (after the validation split); 0 = all. For smoke runs.
    pub train_limit: usize,
    /// Use only the first N validation / test images; 0 = all.
    pub eval_limit: usize,
    /// Preprocessing and augmentation.
    pub augment: AugmentConfig,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            dataset: "fashion-mnist".into(),
            path: None,
            val_size: 5000,
            split_seed: 0,
            train_limit: 0,
            eval_limit: 0,
            augment: AugmentConfig::default(),
        }
    }
}

/// `[train]`: the recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
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

impl Default for TrainConfig {
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

/// `[output]`: where runs go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Folder that holds run folders (default `runs`); the run is `dir/<name>/`.
    pub dir: PathBuf,
    /// Save `last` every N epochs (default 1).
    pub checkpoint_every: usize,
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("runs"),
            checkpoint_every: 1,
        }
    }
}

/// Parses the right-hand side of `--set key=value` as TOML (number, bool, string, array), falling
/// back to a plain string.
fn parse_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.into()),
    }
}

/// Applies `section.key=value` overrides to a TOML table.
pub fn apply_overrides(table: &mut toml::Table, sets: &[String]) -> Result<()> {
    for set in sets {
        let (key, raw) = set
            .split_once('=')
            .with_context(|| format!("--set '{set}': expected section.key=value"))?;
        let path: Vec<&str> = key.trim().split('.').collect();
        if path.iter().any(|p| p.is_empty()) {
            bail!("--set '{set}': empty key segment");
        }
        let mut cur = &mut *table;
        for seg in &path[..path.len() - 1] {
            let entry = cur
                .entry(seg.to_string())
                .or_insert_with(|| toml::Value::Table(Default::default()));
            cur = entry
                .as_table_mut()
                .with_context(|| format!("--set '{set}': '{seg}' is not a section"))?;
        }
        cur.insert(path[path.len() - 1].to_string(), parse_value(raw.trim()));
    }
    Ok(())
}

impl Experiment {
    /// Parses TOML text plus overrides; `default_name` fills an empty `name`.
    pub fn from_toml(
        text: &str,
        sets: &[String],
        default_name: &str,
        origin: &str,
    ) -> Result<Self> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        apply_overrides(&mut table, sets)?;
        let mut exp: Experiment = toml::Value::Table(table)
            .try_into()
            .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        if exp.name.is_empty() {
            exp.name = default_name.to_string();
        }
        exp.check().with_context(|| format!("in {origin}"))?;
        Ok(exp)
    }

    /// Reads an experiment file; the run name defaults to the file stem.
    pub fn load(path: &Path, sets: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading experiment {}", path.display()))?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "run".into());
        Self::from_toml(&text, sets, &stem, &path.display().to_string())
    }

    /// Value checks serde cannot express.
    pub fn check(&self) -> Result<()> {
        let t = &self.train;
        if t.epochs == 0 {
            bail!("train.epochs must be at least 1");
        }
        if t.batch_size == 0 || t.eval_batch_size == 0 {
            bail!("train.batch_size and train.eval_batch_size must be positive");
        }
        if !(t.lr > 0.0 && t.lr.is_finite()) || t.min_lr < 0.0 || t.min_lr > t.lr {
            bail!("train.lr must be positive and train.min_lr in [0, lr]");
        }
        if !(0.0..1.0).contains(&t.label_smoothing) {
            bail!("train.label_smoothing must be in [0, 1)");
        }
        if let Some(d) = t.ema_decay {
            if !(0.0..1.0).contains(&d) {
                bail!("train.ema_decay must be in [0, 1)");
            }
        }
        if t.grad_clip < 0.0 || t.warmup_epochs < 0.0 {
            bail!("train.grad_clip and train.warmup_epochs must not be negative");
        }
        const DATASETS: [&str; 5] = ["fashion-mnist", "mnist", "cifar10", "cifar100", "folder"];
        if !DATASETS.contains(&self.data.dataset.as_str()) {
            bail!(
                "data.dataset '{}' is not one of {}",
                self.data.dataset,
                DATASETS.join(", ")
            );
        }
        if self.data.dataset == "folder" && self.data.path.is_none() {
            bail!("data.dataset = \"folder\" needs data.path");
        }
        let d = &self.distill;
        for (k, v) in [
            ("ce_weight", d.ce_weight),
            ("kd_weight", d.kd_weight),
            ("feature_weight", d.feature_weight),
            ("at_weight", d.at_weight),
            ("dkd_weight", d.dkd_weight),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                bail!("distill.{k} must be a non-negative number, got {v}");
            }
        }
        if d.temperature <= 0.0 || d.dkd_temperature <= 0.0 {
            bail!("distill.temperature and distill.dkd_temperature must be positive");
        }
        if self.output.checkpoint_every == 0 {
            bail!("output.checkpoint_every must be at least 1");
        }
        if self.name.is_empty() || self.name.contains(['/', '\\']) {
            bail!(
                "name '{}' must be non-empty and contain no path separators",
                self.name
            );
        }
        Ok(())
    }

    /// The run folder: `output.dir/name`.
    pub fn run_dir(&self) -> PathBuf {
        self.output.dir.join(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides_apply() {
        let e = Experiment::from_toml(
            "[train]\nepochs = 3\n",
            &[
                "train.lr=0.05".into(),
                "model.arch=hybrid-medium".into(),
                "data.augment.flip=false".into(),
            ],
            "x",
            "test",
        )
        .unwrap();
        assert_eq!(e.name, "x");
        assert_eq!(e.train.epochs, 3);
        assert_eq!(e.train.lr, 0.05);
        assert_eq!(e.model.arch, "hybrid-medium");
        assert!(!e.data.augment.flip);
        assert_eq!(e.data.val_size, 5000);
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = Experiment::from_toml("[train]\nepocs = 3\n", &[], "x", "exp.toml").unwrap_err();
        assert!(format!("{e:#}").contains("epocs"), "{e:#}");
        let e = Experiment::from_toml("", &["trian.epochs=3".into()], "x", "exp.toml").unwrap_err();
        assert!(format!("{e:#}").contains("trian"), "{e:#}");
    }

    #[test]
    fn bad_values_are_rejected_with_the_field() {
        let e = Experiment::from_toml("[train]\nepochs = 0\n", &[], "x", "exp.toml").unwrap_err();
        assert!(format!("{e:#}").contains("train.epochs"), "{e:#}");
        let e =
            Experiment::from_toml("[data]\ndataset = \"imagenet\"\n", &[], "x", "e").unwrap_err();
        assert!(format!("{e:#}").contains("imagenet"), "{e:#}");
    }
}
