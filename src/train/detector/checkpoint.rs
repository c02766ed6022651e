//! A detector run's checkpoints: weights and optimizer state per epoch, and the `last.json` /
//! `best.json` sidecars that name them (written after the files, atomically).

use super::evaluate::PredictConfig;
use super::job::DetectTrainJob;
use crate::data::DetectDataSection;
use crate::detect::DetectNet;
use crate::detect::DetectorSpec;
use crate::fsutil::atomic_write_with;
use crate::model::ParamStore;
use crate::train::checkpoint::{epoch_files, prune_files};
use anyhow::{ensure, Context, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Format marker of a detector sidecar.
pub const FORMAT: &str = "mnv4-lab detector checkpoint v1";

/// What a detector checkpoint is: the detector, how it trains, and where it stands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DetectSidecar {
    pub format: String,
    pub spec: DetectorSpec,
    pub seed: u64,
    /// The job's settings as JSON (recipe, data, prediction): a resume must match them.
    pub settings: serde_json::Value,
    /// Epochs completed.
    pub epoch: usize,
    pub optimizer_step: u64,
    /// Weights and optimizer-state files, relative to the sidecar's folder.
    pub weights: String,
    pub state: String,
    /// Metrics of the last completed epoch.
    pub metrics: BTreeMap<String, f64>,
    /// Best validation mAP50-95 so far and its epoch.
    pub best_map: f64,
    pub best_epoch: usize,
}

impl DetectSidecar {
    /// The weights file this sidecar names.
    pub fn weights_path(&self, sidecar: &Path) -> PathBuf {
        sidecar.with_file_name(&self.weights)
    }
}

/// Reads a detector sidecar; errors say what the file is not.
pub fn read_detect_sidecar(path: &Path) -> Result<DetectSidecar> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let s: DetectSidecar = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a detector checkpoint sidecar", path.display()))?;
    ensure!(
        s.format == FORMAT,
        "{}: format '{}', expected '{FORMAT}'",
        path.display(),
        s.format
    );
    Ok(s)
}

/// A detector checkpoint opened: its sidecar, recorded data and prediction settings, network.
pub struct LoadedDetector {
    pub sidecar: DetectSidecar,
    pub data: DetectDataSection,
    pub predict: PredictConfig,
    pub net: DetectNet,
}

/// Opens a detector checkpoint: the sidecar, the settings it trained with, its weights.
pub fn load_detector(path: &Path) -> Result<LoadedDetector> {
    let sidecar = read_detect_sidecar(path)?;
    let setting = |key: &str| sidecar.settings[key].clone();
    let data: DetectDataSection = serde_json::from_value(setting("data"))
        .with_context(|| format!("{}: no data settings", path.display()))?;
    let predict: PredictConfig = serde_json::from_value(setting("predict"))
        .with_context(|| format!("{}: no prediction settings", path.display()))?;
    let net = DetectNet::new(&sidecar.spec.lower()?, &Device::Cpu, sidecar.seed)?;
    net.params
        .load_safetensors(&sidecar.weights_path(path), &[])?;
    Ok(LoadedDetector {
        sidecar,
        data,
        predict,
        net,
    })
}

/// The sidecar of `job` after `epoch` (files named for that epoch).
pub fn sidecar_for(job: &DetectTrainJob, epoch: usize, step: u64) -> DetectSidecar {
    let (weights, state) = epoch_files(epoch);
    DetectSidecar {
        format: FORMAT.into(),
        spec: job.spec.clone(),
        seed: job.seed,
        settings: job.settings(),
        epoch,
        optimizer_step: step,
        weights,
        state,
        metrics: BTreeMap::new(),
        best_map: f64::NEG_INFINITY,
        best_epoch: 0,
    }
}

/// Saves weights and state, then `best.json` (when `is_best`) and `last.json`, then removes
/// epoch files neither names.
pub fn save(
    dir: &Path,
    params: &ParamStore,
    state: &HashMap<String, Tensor>,
    sidecar: &DetectSidecar,
    is_best: bool,
) -> Result<()> {
    params.save_safetensors(&dir.join(&sidecar.weights))?;
    atomic_write_with(&dir.join(&sidecar.state), |tmp| {
        candle_core::safetensors::save(state, tmp).context("writing optimizer state")
    })?;
    let json = serde_json::to_vec_pretty(sidecar)?;
    if is_best {
        crate::fsutil::atomic_write(&dir.join("best.json"), &json)?;
    }
    crate::fsutil::atomic_write(&dir.join("last.json"), &json)?;
    let best = read_detect_sidecar(&dir.join("best.json"))?;
    let keep = [
        sidecar.weights.as_str(),
        sidecar.state.as_str(),
        best.weights.as_str(),
        best.state.as_str(),
    ];
    prune_files(dir, &keep)
}
