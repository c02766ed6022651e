//! `[search]`: the space, the strategy, the objectives and budgets, and each stage's budget.

use super::strategy::StrategyKind;
use crate::space::ModelSpec;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One stage's budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StageBudget {
    /// Candidates proposed in this stage (0 skips the stage).
    pub trials: usize,
    /// Epochs each candidate trains.
    pub epochs: usize,
    /// Successive halving: after the stage, the best `halving_keep` fraction (by validation
    /// accuracy) continues to `halving_epochs`; 0 turns it off.
    pub halving_keep: f64,
    pub halving_epochs: usize,
}

impl Default for StageBudget {
    fn default() -> Self {
        Self {
            trials: 8,
            epochs: 1,
            halving_keep: 0.0,
            halving_epochs: 0,
        }
    }
}

/// The search settings of an experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchConfig {
    /// Search space file.
    pub space: PathBuf,
    pub strategy: StrategyKind,
    /// Objectives of the front: `val_top1` (maximized) first, then any of `params`, `macs`,
    /// `latency_ms` (measured here) or `roofline:<profile>` (minimized).
    pub objectives: Vec<String>,
    /// Budgets: candidates over any of these are recorded as infeasible without training.
    pub max_params: Option<u64>,
    pub max_macs: Option<u64>,
    pub max_latency_ms: Option<f64>,
    /// Hardware profiles for the roofline objectives (default: the built-in ones).
    pub profiles: Option<PathBuf>,
    /// Population (evolution, NSGA-II) and tournament size (evolution).
    pub population: usize,
    pub tournament: usize,
    /// Timed runs for the measured latency (median reported, after 3 warm-up runs).
    pub latency_repeats: usize,
    pub coarse: StageBudget,
    pub fine: StageBudget,
    /// Presets trained with the fine stage's budget and drawn as labelled reference points.
    pub reference: Vec<ModelSpec>,
    /// Where the report goes (default `reports/<name>`).
    pub report_dir: Option<PathBuf>,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            space: PathBuf::from("search_spaces/small.toml"),
            strategy: StrategyKind::Nsga2,
            objectives: vec!["val_top1".into(), "latency_ms".into()],
            max_params: None,
            max_macs: None,
            max_latency_ms: None,
            profiles: None,
            population: 6,
            tournament: 3,
            latency_repeats: 15,
            coarse: StageBudget::default(),
            fine: StageBudget::default(),
            reference: Vec::new(),
            report_dir: None,
        }
    }
}
