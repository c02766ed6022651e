//! A detection experiment file (`mnv4-lab detect train EXP.toml`): `name`, `seed`, `[data]`
//! (a YOLO dataset file, input size, augmentation), `[model]` (backbone and YOLO11 scale),
//! `[train]` (the shared recipe), `[predict]` (validation thresholds), `[distill]` (an optional
//! teacher detector), `[output]`. Unknown keys are refused by name; `--set section.key=value`
//! overrides any field.

use super::apply_overrides;
pub use crate::data::DetectDataSection;
use crate::detect::config::DetectModelConfig;
use crate::train::detector::distill::DetectDistillWeights;
use crate::train::detector::evaluate::PredictConfig;
use crate::train::recipe::TrainRecipe;
use crate::train::run_dir::OutputConfig;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

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
        self.data.check("data")?;
        self.model.to_spec(1).context("in [model]")?;
        self.train.check()?;
        self.predict.check()?;
        self.distill.weights().check()?;
        self.output.check()
    }

    /// The run folder.
    pub fn run_dir(&self) -> PathBuf {
        self.output.dir.join(&self.name)
    }
}
