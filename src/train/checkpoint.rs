//! Checkpoints: `eNNNN.safetensors` (model weights in timm naming, loadable by timm),
//! `eNNNN.state.safetensors` (optimizer moments and EMA weights) and a JSON sidecar `last.json`
//! / `best.json` that names them together with what the checkpoint needs: the arch, the seed, the
//! data it trained on, its recipe, the epoch and the metrics. Tensor files are written first, the sidecar last, each atomically: the sidecar is
//! the commit, so a crash at any point leaves the previous checkpoint intact.

use super::recipe::TrainRecipe;
use crate::data::DataConfig;
use crate::fsutil::atomic_write;
use crate::space::Arch;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The JSON sidecar of a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sidecar {
    /// Format marker.
    pub format: String,
    pub arch: Arch,
    pub arch_string: String,
    /// The run's seed (weights, data order, augmentation, dropout).
    pub seed: u64,
    /// The data the run trained on.
    pub data: DataConfig,
    /// The recipe it trained with.
    pub recipe: TrainRecipe,
    /// Epochs completed.
    pub epoch: usize,
    /// Optimizer updates applied.
    pub optimizer_step: u64,
    /// Weights file, relative to the sidecar's folder.
    pub weights: String,
    /// Optimizer / EMA state file, relative to the sidecar's folder.
    pub state: String,
    /// Metrics of the last completed epoch.
    pub metrics: BTreeMap<String, f64>,
    /// Best validation top-1 so far and its epoch.
    pub best_val_top1: f64,
    pub best_epoch: usize,
    /// Everything random is derived from (seed, epoch, index), so resuming needs only `seed`
    /// and `epoch`; recorded here for the reader.
    pub rng: String,
}

pub const FORMAT: &str = "mnv4-lab checkpoint v2";
/// The format before v2, which embedded the whole experiment; still read.
const FORMAT_V1: &str = "mnv4-lab checkpoint v1";

/// File names for the checkpoint of `epoch`.
pub fn epoch_files(epoch: usize) -> (String, String) {
    (
        format!("e{epoch:04}.safetensors"),
        format!("e{epoch:04}.state.safetensors"),
    )
}

/// Writes a sidecar atomically.
pub fn write_sidecar(path: &Path, s: &Sidecar) -> Result<()> {
    atomic_write(path, serde_json::to_string_pretty(s)?.as_bytes())
}

/// Reads a sidecar, naming the file in errors.
pub fn read_sidecar(path: &Path) -> Result<Sidecar> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading checkpoint {}", path.display()))?;
    let malformed = || format!("checkpoint sidecar {} is malformed", path.display());
    let mut value: serde_json::Value = serde_json::from_str(&text).with_context(malformed)?;
    let format = value["format"].as_str().unwrap_or_default().to_string();
    if format == FORMAT_V1 {
        value = upgrade_v1(value);
    }
    anyhow::ensure!(
        value["format"] == FORMAT,
        "checkpoint {}: unknown format '{format}' (this version reads '{FORMAT}' and '{FORMAT_V1}')",
        path.display()
    );
    serde_json::from_value(value).with_context(malformed)
}

/// Lifts what a checkpoint needs out of a v1 sidecar's embedded experiment.
fn upgrade_v1(mut v: serde_json::Value) -> serde_json::Value {
    let exp = v["experiment"].take();
    v["seed"] = exp["seed"].clone();
    v["data"] = exp["data"].clone();
    v["recipe"] = exp["train"].clone();
    v["format"] = FORMAT.into();
    v
}

/// Resolves the weights file a sidecar names.
pub fn weights_path(sidecar_path: &Path, s: &Sidecar) -> PathBuf {
    sidecar_path
        .parent()
        .unwrap_or(Path::new("."))
        .join(&s.weights)
}

/// Removes epoch files no sidecar in `dir` refers to.
pub fn prune(dir: &Path, keep: &[&Sidecar]) -> Result<()> {
    let keep: Vec<&str> = keep
        .iter()
        .flat_map(|s| [s.weights.as_str(), s.state.as_str()])
        .collect();
    prune_files(dir, &keep)
}

/// Removes the epoch files (`e….safetensors`) in `dir` other than `keep`.
pub fn prune_files(dir: &Path, keep: &[&str]) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with('e') && name.ends_with(".safetensors") && !keep.contains(&name.as_str())
        {
            std::fs::remove_file(&path)
                .with_context(|| format!("removing old checkpoint {}", path.display()))?;
        }
    }
    Ok(())
}
