//! A detection study (`[search.detect]`): each candidate backbone is ranked by the box mAP50-95
//! of a YOLO11 detector built on it (the study's YOLO11 scale, trained from scratch on the
//! detection data with the study's `[train]` recipe for the stage's epochs, distilled from a
//! teacher detector when one is named), against the cost and the measured latency of the whole
//! detector.

use super::latency::{time_pairs, LatencyMeasure, REFERENCE};
use crate::cost::{Cost, Profile};
use crate::data::{DetectDataSection, DetectLoader};
use crate::detect::loss::LossGains;
use crate::detect::{DetectNet, DetectorSpec, Yolo11Scale};
use crate::model::Mode;
use crate::space::Arch;
use crate::train::detector::distill::DetectDistillWeights;
use crate::train::detector::evaluate::PredictConfig;
use crate::train::detector::inputs::{open_loaders, open_teacher};
use crate::train::detector::job::{DetectDistillJob, DetectTrainJob};
use crate::train::detector::trainer::{train_detector, DetectRunOptions};
use crate::train::recipe::TrainRecipe;
use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Channels of a detection image (the loader gives RGB).
pub const DETECT_CHANNELS: usize = 3;

/// `[search.detect]`: the detection task candidates are ranked on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectTask {
    /// The YOLO dataset, the detector's input size and the training augmentation.
    pub data: DetectDataSection,
    /// YOLO11's scale of the neck and head put on every candidate.
    pub scale: Yolo11Scale,
    /// How validation predictions are made (score and NMS thresholds, detections per image).
    pub predict: PredictConfig,
    /// A trained detector (`runs/<name>/checkpoints/best.json`) distilled into every candidate
    /// through its class scores and P3–P5 maps; none: candidates learn from the labels alone.
    pub teacher: Option<PathBuf>,
    /// A detection experiment whose best checkpoint is the teacher, trained first when its run
    /// has not finished (instead of `teacher`).
    pub teacher_experiment: Option<PathBuf>,
    /// The distillation's weights and class temperature (with a teacher).
    pub distill: DetectDistillWeights,
}

impl Default for DetectTask {
    fn default() -> Self {
        Self {
            data: DetectDataSection::default(),
            scale: Yolo11Scale::N,
            predict: PredictConfig::default(),
            teacher: None,
            teacher_experiment: None,
            distill: DetectDistillWeights::default(),
        }
    }
}

impl DetectTask {
    /// Checks the data settings and thresholds.
    pub fn check(&self) -> Result<()> {
        self.data.check("search.detect.data")?;
        self.distill.check().context("in search.detect.distill")?;
        ensure!(
            self.teacher.is_none() || self.teacher_experiment.is_none(),
            "search.detect: name the teacher by `teacher` (a checkpoint) or by `teacher_experiment`, not both"
        );
        if let Some(t) = &self.teacher_experiment {
            ensure!(
                t.is_file(),
                "search.detect.teacher_experiment = {}: no such file",
                t.display()
            );
        }
        if let Some(t) = &self.teacher {
            ensure!(
                t.is_file(),
                "search.detect.teacher = {}: no such file (name a detector checkpoint, runs/<name>/checkpoints/best.json)",
                t.display()
            );
        }
        self.predict.check().context("in search.detect.predict")
    }
}

/// One detector training run of a study: which candidate, where, how long, with which seed.
pub struct DetectTrial<'a> {
    pub name: String,
    pub run_dir: PathBuf,
    pub recipe: TrainRecipe,
    /// Seed of the weights.
    pub seed: u64,
    pub arch: &'a Arch,
}

/// A detection study's data (and teacher), opened once for all its candidates.
pub struct DetectData {
    pub task: DetectTask,
    pub train: DetectLoader,
    pub val: DetectLoader,
    /// Classes of the dataset (`names` in its YAML file).
    pub classes: usize,
    /// The teacher network and what each distilled run records about it.
    pub teacher: Option<(DetectNet, DetectDistillJob)>,
}

impl DetectData {
    /// Opens the training and validation splits; `batch_size` and `eval_batch_size` from the
    /// recipe, data order and augmentation from `seed`.
    pub fn open(task: &DetectTask, recipe: &TrainRecipe, seed: u64) -> Result<Self> {
        let at = "search.detect.data.dataset";
        let loaders = open_loaders(&task.data, recipe, seed, at)?;
        let classes = loaders.classes;
        Ok(Self {
            task: task.clone(),
            train: loaders.train,
            val: loaders.val,
            classes,
            teacher: task
                .teacher
                .as_deref()
                .map(|p| teacher_for(p, task, classes))
                .transpose()?,
        })
    }

    /// Side of the detector's square input.
    pub fn input_size(&self) -> usize {
        self.task.data.imgsz
    }

    /// The detector on the backbone `arch`.
    pub fn spec(&self, arch: &Arch) -> DetectorSpec {
        DetectorSpec::mnv4(arch.clone(), self.task.scale, self.classes)
    }

    /// Parameters, MACs and roofline latencies of the whole detector on `arch`.
    pub fn cost(&self, arch: &Arch, profiles: &[Profile]) -> Result<Cost> {
        let s = self.input_size();
        self.spec(arch).cost(s, s, profiles)
    }

    /// Batch-1 latency of the whole detector on `arch` (raw head outputs, no NMS), timed in
    /// pairs with the same detector on the reference backbone ([`REFERENCE`]).
    pub fn latency(&self, arch: &Arch, repeats: usize) -> Result<LatencyMeasure> {
        let (name, width) = REFERENCE;
        let reference = crate::space::presets::preset(name, width)
            .map_err(anyhow::Error::msg)?
            .with_io(arch.in_chans, arch.num_classes);
        let build = |a: &Arch| DetectNet::new(&self.spec(a).lower()?, &Device::Cpu, 0);
        let nets = [build(arch)?, build(&reference)?];
        let s = self.input_size();
        let x = Tensor::zeros((1, DETECT_CHANNELS, s, s), DType::F32, &Device::Cpu)?;
        let run = |net: &DetectNet| -> Result<()> {
            for m in net.forward(&x, Mode::Eval)? {
                m.sum_all()?.to_scalar::<f32>()?;
            }
            Ok(())
        };
        time_pairs(&|| run(&nets[0]), &|| run(&nets[1]), repeats)
    }

    /// Trains (or resumes, when its folder has a last checkpoint) the detector of `trial`;
    /// returns its best validation box mAP50-95.
    pub fn train(&self, trial: DetectTrial) -> Result<f64> {
        let spec = self.spec(trial.arch);
        let net = DetectNet::new(&spec.lower()?, &Device::Cpu, trial.seed)?;
        let job = DetectTrainJob {
            name: trial.name,
            seed: trial.seed,
            spec,
            recipe: trial.recipe,
            predict: self.task.predict,
            gains: LossGains::default(),
            data: serde_json::to_value(&self.task.data)?,
            run_dir: trial.run_dir,
            distill: self.teacher.as_ref().map(|(_, job)| job.clone()),
        };
        let opts = DetectRunOptions {
            resume: job.run_dir.join("checkpoints/last.json").exists(),
            stop_after: None,
        };
        let teacher = self.teacher.as_ref().map(|(net, _)| net);
        Ok(train_detector(&job, &net, teacher, &self.train, &self.val, opts)?.best_map)
    }
}

/// The teacher detector at `path`, refused unless it detects the study's classes.
fn teacher_for(
    path: &Path,
    task: &DetectTask,
    classes: usize,
) -> Result<(DetectNet, DetectDistillJob)> {
    let at = || format!("search.detect.teacher = {}", path.display());
    let (net, job) = open_teacher(path, task.distill).with_context(at)?;
    ensure!(
        net.classes() == classes,
        "{}: the teacher detects {} classes, the study's data has {classes}",
        at(),
        net.classes()
    );
    Ok((net, job))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::config::SearchConfig;
    use crate::search::objective::Objective;

    #[test]
    fn a_detection_section_takes_defaults_and_refuses_unknown_keys() {
        let text = "objectives = [\"val_map\", \"latency_ratio\"]\n[detect]\nscale = \"s\"\n";
        let cfg: SearchConfig = toml::from_str(text).unwrap();
        let task = cfg.detect.as_ref().unwrap();
        assert_eq!(task.scale, Yolo11Scale::S);
        assert_eq!(task.data, DetectDataSection::default());
        assert!(task.teacher.is_none() && task.teacher_experiment.is_none());
        assert_eq!(cfg.score(), Objective::ValMap);
        cfg.check().unwrap();
        let err = toml::from_str::<SearchConfig>("[detect]\nimgsz = 64\n").unwrap_err();
        assert!(err.to_string().contains("imgsz"), "{err}");
    }
}
