//! What a detector training run is opened with: a dataset's training and validation loaders, and
//! a teacher detector with what a distilled run records about it. `detect train` and a detection
//! study open them alike.

use super::checkpoint::load_detector;
use super::distill::DetectDistillWeights;
use super::job::DetectDistillJob;
use crate::data::{DetectDataSection, DetectLoader, DetectLoaderConfig, DetectSet, DetectSplit};
use crate::detect::DetectNet;
use crate::fsutil::file_sha256;
use crate::train::recipe::TrainRecipe;
use anyhow::{Context, Result};
use std::path::Path;

/// A dataset's training and validation loaders and its class count.
pub struct DetectLoaders {
    pub train: DetectLoader,
    pub val: DetectLoader,
    /// Classes of the dataset (`names` in its YAML file).
    pub classes: usize,
}

/// Opens `data`'s training and validation splits with the recipe's batch sizes, data order and
/// augmentation from `seed`; `at` names the dataset setting in errors (`data.dataset`).
pub fn open_loaders(
    data: &DetectDataSection,
    recipe: &TrainRecipe,
    seed: u64,
    at: &str,
) -> Result<DetectLoaders> {
    let open = |split| {
        DetectSet::open(&data.dataset, split)
            .with_context(|| format!("{at} = {}", data.dataset.display()))
    };
    let (train_set, val_set) = (open(DetectSplit::Train)?, open(DetectSplit::Val)?);
    let classes = train_set.names().len();
    let val_cfg = DetectLoaderConfig::val(data.imgsz, recipe.eval_batch_size);
    Ok(DetectLoaders {
        train: DetectLoader::new(train_set, data.train_loader(recipe.batch_size, seed))?,
        val: DetectLoader::new(val_set, val_cfg)?,
        classes,
    })
}

/// The teacher detector of checkpoint `path`, and the record of distilling it with `weights`
/// (its weights file's hash: a resume must see the same teacher).
pub fn open_teacher(
    path: &Path,
    weights: DetectDistillWeights,
) -> Result<(DetectNet, DetectDistillJob)> {
    let t = load_detector(path)?;
    let job = DetectDistillJob {
        weights,
        teacher: path.to_path_buf(),
        teacher_weights_sha256: file_sha256(&t.sidecar.weights_path(path))?,
    };
    Ok((t.net, job))
}
