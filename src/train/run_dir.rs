//! A run folder and every file a run writes into it: `arch.toml`, the metrics history, the
//! checkpoints (tensor files first, the sidecar last — the sidecar is the commit), the curves
//! and `summary.json`.

use super::checkpoint::{self, Sidecar};
use super::history::{self, EpochRow};
use crate::fsutil::{atomic_write, atomic_write_with};
use crate::model::ParamStore;
use crate::space::Arch;
use anyhow::{Context, Result};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// `[output]`: where run folders go and how often they checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Folder that holds run folders (default `runs`); a run is `dir/<name>/`.
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

impl OutputConfig {
    /// Checks the checkpoint interval.
    pub fn check(&self) -> Result<()> {
        anyhow::ensure!(
            self.checkpoint_every >= 1,
            "output.checkpoint_every must be at least 1"
        );
        Ok(())
    }
}

/// A run folder.
#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// Creates `root/` and `root/checkpoints/`.
    pub fn create(root: &Path) -> Result<Self> {
        let ckpt = root.join("checkpoints");
        std::fs::create_dir_all(&ckpt).with_context(|| format!("creating {}", ckpt.display()))?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The sidecar of the latest checkpoint.
    pub fn last_sidecar(&self) -> PathBuf {
        self.root.join("checkpoints/last.json")
    }

    /// The sidecar of the best-on-validation checkpoint.
    pub fn best_sidecar(&self) -> PathBuf {
        self.root.join("checkpoints/best.json")
    }

    /// Writes `arch.toml`.
    pub fn write_arch(&self, arch: &Arch) -> Result<()> {
        atomic_write(
            &self.root.join("arch.toml"),
            arch.to_toml_string().as_bytes(),
        )
    }

    /// Writes the metrics table.
    pub fn write_metrics(&self, rows: &[EpochRow]) -> Result<()> {
        history::write_metrics(&self.root, rows)
    }

    /// Reads the first `epochs` rows of the metrics table back.
    pub fn read_metrics(&self, epochs: usize) -> Result<Vec<EpochRow>> {
        history::read_metrics(&self.root, epochs)
    }

    /// Reads the optimizer / EMA state file a sidecar names.
    pub fn read_state(&self, s: &Sidecar) -> Result<HashMap<String, Tensor>> {
        let path = self.root.join("checkpoints").join(&s.state);
        candle_core::safetensors::load(&path, &candle_core::Device::Cpu)
            .with_context(|| format!("reading {}", path.display()))
    }

    /// Saves a checkpoint: weights and state first, then the sidecars (`best.json` when
    /// `is_best`, then `last.json`), then removes epoch files no sidecar names.
    pub fn save_checkpoint(
        &self,
        params: &ParamStore,
        state: &HashMap<String, Tensor>,
        mut sidecar: Sidecar,
        is_best: bool,
    ) -> Result<()> {
        let dir = self.root.join("checkpoints");
        let (wf, sf) = checkpoint::epoch_files(sidecar.epoch);
        params.save_safetensors(&dir.join(&wf))?;
        atomic_write_with(&dir.join(&sf), |tmp| {
            candle_core::safetensors::save(state, tmp).context("writing optimizer state")
        })?;
        (sidecar.weights, sidecar.state) = (wf, sf);
        if is_best {
            checkpoint::write_sidecar(&self.best_sidecar(), &sidecar)?;
        }
        checkpoint::write_sidecar(&self.last_sidecar(), &sidecar)?;
        let best = checkpoint::read_sidecar(&self.best_sidecar())?;
        checkpoint::prune(&dir, &[&sidecar, &best])
    }

    /// Draws the learning curves.
    pub fn write_curves(&self, name: &str, rows: &[EpochRow]) -> Result<()> {
        history::write_curves(&self.root, name, rows)
    }

    /// Writes `summary.json`.
    pub fn write_summary(&self, summary: &serde_json::Value) -> Result<()> {
        atomic_write(
            &self.root.join("summary.json"),
            serde_json::to_string_pretty(summary)?.as_bytes(),
        )
    }
}
