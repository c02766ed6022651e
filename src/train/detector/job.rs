//! What one detector training run is given: the detector, its recipe, how predictions are
//! made for validation, the data settings it records, and its run folder.

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
}

impl DetectTrainJob {
    /// The settings a resume must match: recipe, prediction and data.
    pub fn settings(&self) -> serde_json::Value {
        serde_json::json!({
            "recipe": self.recipe,
            "predict": self.predict,
            "data": self.data,
        })
    }
}
