//! `[search]`: the space, the strategy, the objectives and budgets, and each stage's budget.

use super::detection::DetectTask;
use super::objective::Objective;
use super::strategy::StrategyKind;
use crate::cost::load_profiles;
use crate::space::ModelSpec;
use anyhow::{bail, ensure, Context, Result};
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
    /// Objectives of the front: the score first (`val_top1`, or `val_map` in a detection study;
    /// maximized), then any of `params`, `macs`,
    /// `latency_ms` (measured here), `latency_ratio` (measured here, relative to a reference
    /// network timed alongside), `runtime_latency_ms` (the exported ONNX model in the tract
    /// runtime, measured here) or `roofline:<profile>` (minimized).
    pub objectives: Vec<Objective>,
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
    /// Front members trained again with another weight seed after the search, to measure the
    /// noise floor the report states (0: none).
    pub repeat_front: usize,
    /// Presets trained with the fine stage's budget and drawn as labelled reference points.
    pub reference: Vec<ModelSpec>,
    /// Where the report goes (default `reports/<name>`).
    pub report_dir: Option<PathBuf>,
    /// `[search.detect]`: rank backbones by the box mAP of a YOLO11 detector built on each
    /// (trained on this detection data with `[train]`) instead of classification top-1.
    pub detect: Option<DetectTask>,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            space: PathBuf::from("search_spaces/small.toml"),
            strategy: StrategyKind::Nsga2,
            objectives: vec![Objective::ValTop1, Objective::LatencyMs],
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
            repeat_front: 2,
            report_dir: None,
            detect: None,
        }
    }
}

impl StageBudget {
    /// Checks one stage's budget; `stage` names it in errors.
    fn check(&self, stage: &str) -> Result<()> {
        ensure!(
            self.trials == 0 || self.epochs >= 1,
            "search.{stage}.epochs must be at least 1"
        );
        ensure!(
            (0.0..=1.0).contains(&self.halving_keep),
            "search.{stage}.halving_keep must be in [0, 1] (0 = off), got {}",
            self.halving_keep
        );
        Ok(())
    }
}

impl StageBudget {
    /// The epochs its candidates are evaluated at: the stage's, then the promoted ones.
    pub fn budgets(&self) -> Vec<usize> {
        let mut b = vec![self.epochs];
        if self.halving_keep > 0.0 && self.halving_epochs > self.epochs {
            b.push(self.halving_epochs);
        }
        b
    }
}

impl SearchConfig {
    /// The score the study ranks on: detection mAP with `[search.detect]`, else top-1.
    pub fn score(&self) -> Objective {
        match self.detect {
            Some(_) => Objective::ValMap,
            None => Objective::ValTop1,
        }
    }

    /// Every budget (epochs) a candidate of this search can be evaluated at, ascending. The
    /// reference presets are trained at each, by the same promotions, so that every candidate
    /// has references at its own budget.
    pub fn budgets(&self) -> Vec<usize> {
        let stages = [&self.coarse, &self.fine];
        let mut b: Vec<usize> = stages
            .iter()
            .filter(|s| s.trials > 0)
            .flat_map(|s| s.budgets())
            .collect();
        b.sort_unstable();
        b.dedup();
        b
    }

    /// Checks everything that can be checked before any work: objectives, sizes, budgets, the
    /// roofline profiles named by objectives, and that every reference preset resolves.
    pub fn check(&self) -> Result<()> {
        let o = &self.objectives;
        let score = self.score();
        ensure!(
            (2..=3).contains(&o.len()) && o[0] == score,
            "search.objectives must be {score} followed by one or two costs{}, got {o:?}",
            match &self.detect {
                Some(_) => " (a detection study, [search.detect], ranks on val_map)",
                None => " (val_map ranks detectors: add [search.detect])",
            }
        );
        for (i, a) in o.iter().enumerate().skip(1) {
            ensure!(
                !a.is_score() && !o[..i].contains(a),
                "search.objectives: '{a}' is listed twice or is a second score"
            );
        }
        if let Some(d) = &self.detect {
            d.check()?;
            ensure!(
                !o.contains(&Objective::RuntimeLatencyMs),
                "search.objectives: runtime_latency_ms times the exported classifier; a detection study ranks the whole detector by latency_ms or latency_ratio"
            );
        }
        let profiles = load_profiles(self.profiles.as_deref())?;
        for obj in o {
            if let Objective::Roofline(p) = obj {
                ensure!(
                    profiles.iter().any(|q| &q.name == p),
                    "search.objectives: no hardware profile '{p}' (have: {})",
                    profiles
                        .iter()
                        .map(|q| q.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        ensure!(
            self.population >= 2 && self.tournament >= 1,
            "search.population must be >= 2 and search.tournament >= 1"
        );
        ensure!(
            self.latency_repeats >= 1,
            "search.latency_repeats must be at least 1"
        );
        self.coarse.check("coarse")?;
        self.fine.check("fine")?;
        ensure!(
            self.max_params != Some(0) && self.max_macs != Some(0),
            "search.max_params and search.max_macs must be positive"
        );
        if let Some(l) = self.max_latency_ms {
            if !(l > 0.0 && l.is_finite()) {
                bail!("search.max_latency_ms must be positive and finite, got {l}");
            }
        }
        for (i, m) in self.reference.iter().enumerate() {
            m.to_arch(3, 10)
                .with_context(|| format!("search.reference[{i}] ('{}')", m.arch))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_trained_at_every_budget_a_candidate_gets() {
        let stage = |trials, epochs, keep, halving| StageBudget {
            trials,
            epochs,
            halving_keep: keep,
            halving_epochs: halving,
        };
        let mut cfg = SearchConfig {
            coarse: stage(10, 2, 0.0, 0),
            fine: stage(10, 2, 0.3, 4),
            ..SearchConfig::default()
        };
        assert_eq!(
            cfg.budgets(),
            vec![2, 4],
            "the quick search: 2 epochs, promoted to 4"
        );
        cfg.coarse = stage(4, 1, 0.5, 3);
        cfg.fine = stage(0, 5, 0.5, 8);
        assert_eq!(cfg.budgets(), vec![1, 3], "a skipped stage adds no budget");
        for s in [&cfg.coarse, &cfg.fine] {
            if s.trials > 0 {
                assert!(s.budgets().iter().all(|b| cfg.budgets().contains(b)));
            }
        }
    }
}
