//! A detection experiment file (`mnv4-lab detect train EXP.toml`): `name`, `seed`, `[data]`
//! (a YOLO dataset file, input size, augmentation), `[model]` (backbone and YOLO11 scale),
//! `[train]` (the shared recipe), `[predict]` (validation thresholds), `[distill]` (an optional
//! teacher detector), `[output]`. Unknown keys are refused by name; `--set section.key=value`
//! overrides any field.

use super::apply_overrides;
use crate::data::{DetectAugment, DetectLoaderConfig};
use crate::detect::config::DetectModelConfig;
use crate::train::detector::distill::DetectDistillWeights;
use crate::train::detector::evaluate::PredictConfig;
use crate::train::recipe::TrainRecipe;
use crate::train::run_dir::OutputConfig;
use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// `[data]` of a detection experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectDataSection {
    /// The YOLO dataset file (`train`, `val`, `names`).
    pub dataset: PathBuf,
    /// Side of the square network input (letterboxed), a multiple of 32.
    pub imgsz: usize,
    /// Training augmentation: scale gain, translation (fraction of the side), flip probability.
    pub scale: f32,
    pub translate: f32,
    pub fliplr: f32,
}

impl Default for DetectDataSection {
    fn default() -> Self {
        let a = DetectAugment::default();
        Self {
            dataset: PathBuf::from("data/fashion-mnist-det/dataset.yaml"),
            imgsz: 96,
            scale: a.scale,
            translate: a.translate,
            fliplr: a.fliplr,
        }
    }
}

impl DetectDataSection {
    /// The training loader's settings for `batch` images and `seed`.
    pub fn train_loader(&self, batch: usize, seed: u64) -> DetectLoaderConfig {
        let mut c = DetectLoaderConfig::train(self.imgsz, batch, seed);
        c.augment = Some(DetectAugment {
            scale: self.scale,
            translate: self.translate,
            fliplr: self.fliplr,
        });
        c
    }
}

/// `[distill]` of a detection experiment: a trained detector to distil into the one trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectDistillSection {
    /// The teacher's checkpoint sidecar (`runs/<name>/checkpoints/best.json`); none: no
    /// distillation.
    pub teacher: Option<PathBuf>,
    /// Weight of the class-score divergence (per-class Bernoulli KL).
    pub cls_weight: f64,
    /// Weight of the P3–P5 feature regression through 1×1 adapters.
    pub feature_weight: f64,
    /// Temperature of the class scores.
    pub temperature: f64,
}

impl Default for DetectDistillSection {
    fn default() -> Self {
        let w = DetectDistillWeights::default();
        Self {
            teacher: None,
            cls_weight: w.cls_weight,
            feature_weight: w.feature_weight,
            temperature: w.temperature,
        }
    }
}

impl DetectDistillSection {
    /// The loss weights.
    pub fn weights(&self) -> DetectDistillWeights {
        DetectDistillWeights {
            cls_weight: self.cls_weight,
            feature_weight: self.feature_weight,
            temperature: self.temperature,
        }
    }
}

/// A whole detection experiment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectExperiment {
    /// Run name; default: the file's stem.
    pub name: String,
    pub seed: u64,
    pub data: DetectDataSection,
    pub model: DetectModelConfig,
    pub train: TrainRecipe,
    pub predict: PredictConfig,
    pub distill: DetectDistillSection,
    pub output: OutputConfig,
}

impl DetectExperiment {
    /// Reads an experiment file with `--set` overrides; every section is checked.
    pub fn load(path: &Path, sets: &[String]) -> Result<Self> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {origin}"))?;
        let mut table: toml::Table =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        apply_overrides(&mut table, sets)?;
        let mut exp: Self = toml::Value::Table(table)
            .try_into()
            .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        if exp.name.is_empty() {
            exp.name = path
                .file_stem()
                .map_or("detect".into(), |s| s.to_string_lossy().into_owned());
        }
        exp.check().with_context(|| format!("in {origin}"))?;
        Ok(exp)
    }

    /// Checks every section.
    pub fn check(&self) -> Result<()> {
        ensure!(
            self.data.imgsz > 0 && self.data.imgsz.is_multiple_of(32),
            "data.imgsz must be a positive multiple of 32, got {}",
            self.data.imgsz
        );
        self.train_loader_augment()?;
        self.model.to_spec(1).context("in [model]")?;
        self.train.check()?;
        self.predict.check()?;
        self.distill.weights().check()?;
        self.output.check()
    }

    fn train_loader_augment(&self) -> Result<()> {
        let c = self.data.train_loader(1, 0);
        if let Some(a) = c.augment {
            a.check().map_err(|e| anyhow::anyhow!("[data]: {e}"))?;
        }
        Ok(())
    }

    /// The run folder.
    pub fn run_dir(&self) -> PathBuf {
        self.output.dir.join(&self.name)
    }
}
