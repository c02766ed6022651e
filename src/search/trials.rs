//! What a trial is: one evaluated (or rejected) candidate, as every trial store records it
//! (see [`super::store`]).

use super::strategy::StrategyKind;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Which part of the search produced a trial.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Widths and depths with a fixed inverted bottleneck.
    #[default]
    Coarse,
    /// Per-block UIB choices and MQA placement on the coarse front's skeletons.
    Fine,
    /// A MobileNetV4 preset trained with the candidates' budget, for comparison.
    Reference,
    /// A front member trained again with another weight seed, to measure the noise; its label
    /// names the member (`t0007`).
    Repeat,
}

impl Stage {
    /// Whether trials of this stage are searched candidates (ranked on the front).
    pub fn is_candidate(self) -> bool {
        matches!(self, Stage::Coarse | Stage::Fine)
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Coarse => "coarse",
            Stage::Fine => "fine",
            Stage::Reference => "reference",
            Stage::Repeat => "repeat",
        })
    }
}

/// One evaluated (or rejected) candidate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    /// Position in the search (0-based, over all stages).
    pub index: usize,
    pub stage: Stage,
    pub strategy: StrategyKind,
    /// A label for reference points (the preset name); empty otherwise.
    #[serde(default)]
    pub label: String,
    /// The architecture as a one-line block string.
    pub arch: String,
    /// Hash of the canonical architecture.
    pub hash: String,
    /// Within every budget.
    pub feasible: bool,
    /// Sum of relative budget excesses (0 when feasible).
    pub violation: f64,
    /// Index of the earlier trial with the same architecture, whose results this one reuses.
    pub duplicate_of: Option<usize>,
    /// Best validation score (fraction) after all training: top-1, or box mAP50-95 in a
    /// detection study (`search.detect`); absent when not trained.
    pub val_top1: Option<f64>,
    /// The validation score at the stage's budget, before successive halving — what the
    /// strategy saw.
    pub stage_val_top1: Option<f64>,
    pub params: u64,
    pub macs: u64,
    /// Measured latency on this machine: batch 1, median after warm-up, milliseconds.
    pub latency_ms: f64,
    /// Latency relative to the reference network ([`super::latency::REFERENCE`]), measured in
    /// interleaved pairs: the median ratio and its 95 % interval. Absent in older trials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ratio_ci: Option<[f64; 2]>,
    /// Batch-1 latency of the exported ONNX model in the tract runtime on this machine (median
    /// after warm-up, milliseconds); measured only when an objective asks for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_latency_ms: Option<f64>,
    /// Roofline latency per hardware profile, milliseconds.
    pub roofline_ms: BTreeMap<String, f64>,
    /// Epochs trained.
    pub epochs: usize,
    /// Seed of the candidate's weights.
    pub seed: u64,
    pub wall_seconds: f64,
    /// Why training failed (it diverged), when it did; such a trial is a result, never retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

impl Trial {
    /// The index of the front member a [`Stage::Repeat`] trial repeats.
    pub fn repeat_of(&self) -> Option<usize> {
        if self.stage != Stage::Repeat {
            return None;
        }
        self.label.strip_prefix('t')?.parse().ok()
    }
}
