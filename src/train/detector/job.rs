//! What one detector training run is given: the detector, its recipe, how predictions are
//! made for validation, the data settings it records, and its run folder.

use super::distill::DetectDistillWeights;
use super::evaluate::PredictConfig;
use crate::detect::loss::LossGains;
use crate::detect::DetectorSpec;
use crate::train::recipe::TrainRecipe;
use std::path::PathBuf;

/// One detector training run.
#[derive(Debug, Clone)]
pub struct DetectTrainJob {
    pub name: String,
    /// Seed of the weights, data order and augmentation.
    pub seed: u64,
    pub spec: DetectorSpec,
    pub recipe: TrainRecipe,
    pub predict: PredictConfig,
    pub gains: LossGains,
    /// The data settings as the experiment states them, recorded in every checkpoint.
    pub data: serde_json::Value,
    pub run_dir: PathBuf,
    /// Distillation from a teacher detector, if any.
    pub distill: Option<DetectDistillJob>,
}

/// What a distilled run records about its teacher and losses.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DetectDistillJob {
    pub weights: DetectDistillWeights,
    /// The teacher's checkpoint sidecar, as given.
    pub teacher: PathBuf,
    /// SHA-256 of the teacher's weights file: a resume must see the same teacher.
    pub teacher_weights_sha256: String,
}

impl DetectTrainJob {
    /// The settings a resume must match: recipe, prediction, data and distillation.
    pub fn settings(&self) -> serde_json::Value {
        let mut s = serde_json::json!({
            "recipe": self.recipe,
            "predict": self.predict,
            "data": self.data,
        });
        if let Some(d) = &self.distill {
            s["distill"] = serde_json::json!(d);
        }
        s
    }
}
