//! `[data]` of a detection experiment (and of a detection search's `[search.detect]`): the YOLO
//! dataset file, the network's input size and the training augmentation.

use super::{DetectAugment, DetectLoaderConfig};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

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

    /// Checks the input size and the augmentation; `at` names the section in errors
    /// (`data`, `search.detect.data`).
    pub fn check(&self, at: &str) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.imgsz > 0 && self.imgsz.is_multiple_of(32),
            "{at}.imgsz must be a positive multiple of 32, got {}",
            self.imgsz
        );
        if let Some(a) = self.train_loader(1, 0).augment {
            a.check().map_err(|e| anyhow::anyhow!("[{at}]: {e}"))?;
        }
        Ok(())
    }
}
