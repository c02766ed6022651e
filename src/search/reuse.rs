//! Finished runs of `mnv4-lab train` and `mnv4-lab distill` that a retraining plan takes as its
//! own: the same architecture, data, recipe, distillation settings and seed make the same
//! computation, so the run is not trained again (e.g. the fidelity study's reference-budget
//! runs of the presets).

use super::study::StudySpec;
use crate::data::DataConfig;
use crate::distill::config::DistillConfig;
use crate::space::Arch;
use crate::train::recipe::TrainRecipe;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// One finished run found on disk.
#[derive(Debug, Clone)]
struct Finished {
    dir: PathBuf,
    canonical: String,
    seed: u64,
    /// Trained by `mnv4-lab distill` (it leaves `distill.json`).
    distilled: bool,
    data: DataConfig,
    train: TrainRecipe,
    distill: DistillConfig,
    test_top1: f64,
}

/// The finished runs under a folder.
#[derive(Debug, Clone, Default)]
pub struct Reusable {
    runs: Vec<Finished>,
}

impl Reusable {
    /// Reads every sub-folder of `dir` that holds a finished, tested run (`config.toml` and a
    /// `summary.json` with a test top-1); other folders are passed over.
    pub fn scan(dir: &Path) -> Result<Self> {
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("--reuse {}", dir.display()))?;
        let runs = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter_map(|p| read_finished(&p).ok().flatten())
            .collect();
        Ok(Self { runs })
    }

    /// How many finished runs were found.
    pub fn len(&self) -> usize {
        self.runs.len()
    }

    /// Whether none was found.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// The folder and test top-1 of a finished run that trained `arch` with seed `seed` under
    /// the study's data and recipe, distilled with the study's settings or not at all.
    pub fn find(
        &self,
        s: &StudySpec,
        arch: &Arch,
        seed: u64,
        distilled: bool,
    ) -> Option<(&Path, f64)> {
        let canonical = arch.canonical();
        self.runs
            .iter()
            .find(|f| {
                f.canonical == canonical
                    && f.seed == seed
                    && f.distilled == distilled
                    && f.data == s.data
                    && f.train == s.train
                    && (!distilled || f.distill == s.distill)
            })
            .map(|f| (f.dir.as_path(), f.test_top1))
    }
}

/// A finished run's settings and result; `None` when `dir` holds no tested run.
fn read_finished(dir: &Path) -> Result<Option<Finished>> {
    let (config, summary) = (dir.join("config.toml"), dir.join("summary.json"));
    if !config.exists() || !summary.exists() {
        return Ok(None);
    }
    let table: toml::Table = toml::from_str(&std::fs::read_to_string(&config)?)?;
    let section = |name: &str| table.get(name).cloned().context("missing section");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&summary)?)?;
    let (Some(test_top1), Some(arch)) = (v["test_top1"].as_f64(), v["arch"].as_str()) else {
        return Ok(None);
    };
    Ok(Some(Finished {
        dir: dir.to_path_buf(),
        canonical: Arch::from_block_string(arch)?.canonical(),
        seed: table
            .get("seed")
            .and_then(|s| s.as_integer())
            .context("seed")? as u64,
        distilled: dir.join("distill.json").exists(),
        data: section("data")?.try_into()?,
        train: section("train")?.try_into()?,
        distill: section("distill")?.try_into()?,
        test_top1,
    }))
}
