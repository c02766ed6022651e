//! Evaluating one candidate: cost from the spec → budget check → measured latency (and the ONNX
//! runtime's, when an objective asks for it) → training (distilled when the study has a teacher;
//! as a detector's backbone in a detection study) → a finished [`Trial`].

use super::config::SearchConfig;
use super::detection::{DetectData, DetectTrial, DETECT_CHANNELS};
use super::latency::{measure_latency, LatencyMeasure};
use super::objective::Objective;
use super::store::Job;
use super::study::StudySpec;
use super::trials::{Stage, Trial};
use crate::cost::{cost, Cost, Profile};
use crate::data::{derive_seed, Splits};
use crate::distill::objective::DistillObjective;
use crate::distill::teacher::ReadyTeacher;
use crate::export::runtime::runtime_latency;
use crate::model::Network;
use crate::space::Arch;
use crate::train::epoch::Diverged;
use crate::train::objective::{BatchLoss, CrossEntropy};
use crate::train::recipe::TrainRecipe;
use crate::train::trainer::{train_network, RunOptions, TrainJob};
use anyhow::Result;
use candle_core::Device;
use indicatif::MultiProgress;
use std::sync::Arc;
use std::time::Instant;

/// A candidate to evaluate.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub index: usize,
    pub stage: Stage,
    /// Preset name for references; empty for searched candidates.
    pub label: String,
    pub arch: Arch,
    pub epochs: usize,
}

impl Candidate {
    /// The candidate as a queued job for a worker.
    pub fn job(&self) -> Job {
        Job {
            index: self.index,
            stage: self.stage,
            label: self.label.clone(),
            arch: self.arch.to_block_string(),
            epochs: self.epochs,
            promote: None,
        }
    }
}

/// What candidates are trained and scored on.
pub enum TaskData {
    /// Classification splits: candidates are classifiers, scored by validation top-1.
    Classify(Splits),
    /// A detection study's loaders: candidates are backbones of a YOLO11 detector, scored by
    /// validation box mAP50-95.
    Detect(Box<DetectData>),
}

impl TaskData {
    /// Side of the (square) network input.
    pub fn input_size(&self) -> usize {
        match self {
            TaskData::Classify(s) => s.input_size,
            TaskData::Detect(d) => d.input_size(),
        }
    }

    /// Input channels and classes of a candidate's architecture.
    pub fn io(&self) -> (usize, usize) {
        match self {
            TaskData::Classify(s) => (s.channels, s.num_classes),
            TaskData::Detect(d) => (DETECT_CHANNELS, d.classes),
        }
    }
}

/// Everything evaluating a candidate needs, fixed for the whole study.
pub struct Evaluator<'a> {
    pub study: &'a StudySpec,
    pub data: TaskData,
    pub profiles: Vec<Profile>,
    pub teacher: Option<ReadyTeacher>,
    pub bars: Option<MultiProgress>,
    pub quiet: bool,
}

/// Splits a training result into a candidate's outcome — its accuracy, or why it diverged — and
/// the errors that must stop the study (I/O, bad data, …).
pub fn diverged(result: Result<f64>) -> Result<Result<f64, String>> {
    match result {
        Ok(acc) => Ok(Ok(acc)),
        Err(e) if e.downcast_ref::<Diverged>().is_some() => {
            tracing::warn!("candidate failed: {e:#}");
            Ok(Err(format!("{e:#}")))
        }
        Err(e) => Err(e),
    }
}

/// Whether training trial `t` on to `epochs` would change it: it has fewer epochs, was trained,
/// and did not fail.
pub fn needs_promotion(t: &Trial, epochs: usize) -> bool {
    t.epochs < epochs && t.failed.is_none() && t.val_top1.is_some()
}

/// Sum of relative budget excesses (0 when within every budget).
fn violation(cfg: &SearchConfig, params: u64, macs: u64, latency: f64) -> f64 {
    let over = |v: f64, max: Option<f64>| max.map(|m| ((v - m) / m).max(0.0)).unwrap_or(0.0);
    over(params as f64, cfg.max_params.map(|m| m as f64))
        + over(macs as f64, cfg.max_macs.map(|m| m as f64))
        + over(latency, cfg.max_latency_ms)
}

impl Evaluator<'_> {
    /// `arch` with the data's input channels and classes.
    pub fn with_io(&self, arch: &Arch) -> Arch {
        let (channels, classes) = self.data.io();
        arch.clone().with_io(channels, classes)
    }

    /// The cost and measured latency of `arch` (already with the data's input and classes):
    /// of the classifier, or of the whole detector in a detection study.
    pub fn cost_and_latency(&self, arch: &Arch) -> Result<(Cost, LatencyMeasure)> {
        let repeats = self.study.search.latency_repeats;
        match &self.data {
            TaskData::Classify(s) => {
                let n = s.input_size;
                let c = cost(arch, n, n, &self.profiles);
                Ok((c, measure_latency(arch, n, repeats)?))
            }
            TaskData::Detect(d) => Ok((d.cost(arch, &self.profiles)?, d.latency(arch, repeats)?)),
        }
    }

    /// The ONNX runtime latency of `arch` (already with the data's input and classes) at the
    /// data's input size, when an objective ranks on it; `None` otherwise, at no cost.
    pub fn runtime_latency(&self, arch: &Arch) -> Result<Option<f64>> {
        let cfg = &self.study.search;
        if !cfg.objectives.contains(&Objective::RuntimeLatencyMs) {
            return Ok(None);
        }
        runtime_latency(arch, self.data.input_size(), cfg.latency_repeats).map(Some)
    }

    /// Costs, budgets, then (when feasible) training: one finished trial.
    pub fn evaluate(&self, c: &Candidate) -> Result<Trial> {
        let started = Instant::now();
        let cfg = &self.study.search;
        let arch = self.with_io(&c.arch);
        let (cost, latency) = self.cost_and_latency(&arch)?;
        let violation = violation(cfg, cost.params, cost.macs, latency.ms);
        let seed = derive_seed(&[self.study.seed, c.index as u64]);
        let mut trial = Trial {
            index: c.index,
            stage: c.stage,
            strategy: cfg.strategy,
            label: c.label.clone(),
            arch: arch.to_block_string(),
            hash: arch.hash_hex(),
            feasible: violation <= 0.0,
            violation,
            params: cost.params,
            macs: cost.macs,
            latency_ms: latency.ms,
            latency_ratio: Some(latency.ratio),
            latency_ratio_ci: Some(latency.ratio_ci),
            runtime_latency_ms: self.runtime_latency(&arch)?,
            roofline_ms: cost.roofline_ms.into_iter().collect(),
            seed,
            ..Trial::default()
        };
        if trial.feasible {
            match diverged(self.train(c.index, &arch, c.epochs, seed))? {
                Ok(acc) => (trial.val_top1, trial.stage_val_top1) = (Some(acc), Some(acc)),
                Err(why) => trial.failed = Some(why),
            }
            trial.epochs = c.epochs;
        }
        trial.wall_seconds = started.elapsed().as_secs_f64();
        Ok(trial)
    }

    /// Trains trial `t` on to `epochs` (unless it got there before an interruption, failed, or
    /// was not trained), adding the time to its wall seconds. Its `stage_val_top1` stays.
    pub fn promote(&self, t: &mut Trial, epochs: usize) -> Result<()> {
        if !needs_promotion(t, epochs) {
            return Ok(());
        }
        let started = Instant::now();
        let arch = Arch::from_block_string(&t.arch)?;
        match diverged(self.train(t.index, &arch, epochs, t.seed))? {
            Ok(acc) => t.val_top1 = Some(acc),
            Err(why) => t.failed = Some(why),
        }
        t.epochs = epochs;
        t.wall_seconds += started.elapsed().as_secs_f64();
        Ok(())
    }

    /// A queued job's result: the evaluated candidate, or the promoted trial.
    pub fn run_job(&self, job: &Job) -> Result<Trial> {
        if let Some(t) = &job.promote {
            let mut t = (**t).clone();
            self.promote(&mut t, job.epochs)?;
            return Ok(t);
        }
        self.evaluate(&Candidate {
            index: job.index,
            stage: job.stage,
            label: job.label.clone(),
            arch: Arch::from_block_string(&job.arch)?,
            epochs: job.epochs,
        })
    }

    /// Trains (or resumes) candidate `index` for `epochs` with weight seed `seed`; returns its
    /// best validation score (top-1, or the detector's box mAP50-95).
    pub fn train(&self, index: usize, arch: &Arch, epochs: usize, seed: u64) -> Result<f64> {
        let s = self.study;
        let name = format!("t{index:04}");
        let run_dir = s.run_dir().join("trials").join(&name);
        let recipe = TrainRecipe {
            epochs,
            ..s.train.clone()
        };
        let splits = match &self.data {
            TaskData::Classify(splits) => splits,
            TaskData::Detect(d) => {
                let trial = DetectTrial {
                    name,
                    run_dir,
                    recipe,
                    seed,
                    arch,
                };
                return d.train(trial);
            }
        };
        let job = TrainJob {
            run_dir,
            name,
            seed: s.seed,
            recipe,
            data: s.data.clone(),
            checkpoint_every: s.output.checkpoint_every,
        };
        let net = Network::new(arch, &Device::Cpu, seed)?;
        let opts = RunOptions {
            resume: job.run_dir.join("checkpoints/last.json").exists(),
            quiet: self.quiet,
            skip_test: true,
            bars: self.bars.clone(),
            ..Default::default()
        };
        let mut loss = self.objective(&net, splits)?;
        Ok(train_network(&job, &net, splits, loss.as_mut(), &opts)?.best_val_top1)
    }

    /// Distillation from the study's teacher, or plain cross-entropy without one.
    fn objective(&self, student: &Network, splits: &Splits) -> Result<Box<dyn BatchLoss>> {
        let smoothing = self.study.train.label_smoothing;
        Ok(match &self.teacher {
            Some(t) => Box::new(DistillObjective::new(
                &self.study.distill,
                smoothing,
                student,
                Arc::clone(&t.net),
                splits.train.dataset().n,
                t.cache_key.clone(),
                self.study.seed,
            )?),
            None => Box::new(CrossEntropy { smoothing }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diverged_run_is_a_result_and_other_errors_stop_the_study() {
        let nan = Diverged {
            loss: f64::NAN,
            epoch: 2,
            batch: 5,
        };
        let why = diverged(Err(anyhow::Error::new(nan).context("training t0003")))
            .unwrap()
            .unwrap_err();
        assert!(why.contains("loss became NaN at epoch 2 batch 5"), "{why}");
        assert_eq!(diverged(Ok(0.5)).unwrap(), Ok(0.5));
        assert!(diverged(Err(anyhow::anyhow!("disk full"))).is_err());
    }
}
