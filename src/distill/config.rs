//! `[distill]`: the teacher, each loss with its own explicit weight, and the teacher cache.

use crate::space::ModelSpec;
use crate::train::recipe::TrainRecipe;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Distillation settings. The student is the experiment's `[model]`; its recipe is `[train]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistillConfig {
    /// The teacher architecture (default `conv-large`), trained on the students' data when it
    /// has to be trained; see `teacher_experiment` for a teacher with its own data and recipe.
    pub teacher: ModelSpec,
    /// An experiment file whose `[model]` is the teacher, trained by its own `[data]`, `[train]`
    /// and seed into its own run folder (`mnv4-lab train` of that file makes the same run).
    /// A list of files makes the teacher an ensemble of their runs (mean logits, feature maps
    /// side by side). Replaces `teacher`, `teacher_epochs` and `teacher_lr`.
    pub teacher_experiment: Option<TeacherExperiments>,
    /// Teacher weights: an mnv4-lab sidecar (`.json`) or a safetensors file (ours or timm's).
    /// Absent: reuse a teacher trained earlier on the same data, or train one first.
    pub teacher_weights: Option<PathBuf>,
    /// Epochs when the teacher has to be trained first (default: `train.epochs`).
    pub teacher_epochs: Option<usize>,
    /// Peak learning rate when training the teacher (default: `train.lr`).
    pub teacher_lr: Option<f64>,
    /// Teacher input side; a multiple of the student's (the batch is upsampled, nearest).
    pub teacher_res: Option<usize>,
    /// Run the teacher's BN in train mode (updating its statistics). Default: eval mode.
    pub teacher_train_bn: bool,
    /// Weight of the cross-entropy with the labels (label smoothing from `train`).
    pub ce_weight: f64,
    /// Weight of Hinton KD.
    pub kd_weight: f64,
    /// KD temperature T.
    pub temperature: f64,
    /// Weight of FitNets-style feature KD (1×1 conv + BN adapters, MSE against the teacher map
    /// standardized per channel).
    pub feature_weight: f64,
    /// Feature taps (indices of `Arch::feature_taps`; 0…4 = strides 2…32 in the presets).
    /// Default `[2]`, stride 8: a 4×4 map at 32×32 inputs, where stride 16 leaves 2×2
    /// (`reports/distill_fashion_mnist.md` compares the two). The offline distillation dataset
    /// holds these maps even for runs whose losses read only logits.
    pub feature_taps: Vec<usize>,
    /// Weight of attention transfer at `feature_taps`.
    pub at_weight: f64,
    /// Weight of Decoupled KD.
    pub dkd_weight: f64,
    pub dkd_alpha: f64,
    pub dkd_beta: f64,
    pub dkd_temperature: f64,
    /// Epochs over which the DKD term ramps up linearly.
    pub dkd_warmup_epochs: f64,
    /// Keep the teacher's outputs (logits and tapped features) on disk: the offline
    /// distillation dataset (not with `teacher_train_bn`).
    pub cache: bool,
    /// Where the teacher cache lives.
    pub cache_dir: PathBuf,
}

/// `distill.teacher_experiment`: one experiment file, or a list of them (an ensemble teacher).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    untagged,
    expecting = "an experiment file, or a list of experiment files"
)]
pub enum TeacherExperiments {
    One(PathBuf),
    Ensemble(Vec<PathBuf>),
}

impl TeacherExperiments {
    /// The experiment files, in order (the first is the ensemble's first member).
    pub fn paths(&self) -> &[PathBuf] {
        match self {
            Self::One(p) => std::slice::from_ref(p),
            Self::Ensemble(ps) => ps,
        }
    }
}

impl Default for DistillConfig {
    fn default() -> Self {
        Self {
            teacher: ModelSpec {
                arch: "conv-large".into(),
                ..ModelSpec::default()
            },
            teacher_experiment: None,
            teacher_weights: None,
            teacher_epochs: None,
            teacher_lr: None,
            teacher_res: None,
            teacher_train_bn: false,
            ce_weight: 1.0,
            kd_weight: 1.0,
            temperature: 4.0,
            feature_weight: 1.0,
            feature_taps: vec![2],
            at_weight: 0.0,
            dkd_weight: 0.0,
            dkd_alpha: 1.0,
            dkd_beta: 8.0,
            dkd_temperature: 4.0,
            dkd_warmup_epochs: 1.0,
            cache: true,
            cache_dir: PathBuf::from("runs/.teacher-cache"),
        }
    }
}

impl DistillConfig {
    /// True when any teacher term is weighted (otherwise training is plain cross-entropy).
    pub fn uses_teacher(&self) -> bool {
        self.kd_weight > 0.0
            || self.dkd_weight > 0.0
            || self.feature_weight > 0.0
            || self.at_weight > 0.0
    }

    /// The teacher's recipe when it has to be trained first: the students' recipe with the
    /// teacher's epochs and learning rate.
    pub fn teacher_recipe(&self, students: &TrainRecipe) -> TrainRecipe {
        let mut r = students.clone();
        if let Some(e) = self.teacher_epochs {
            r.epochs = e;
        }
        if let Some(lr) = self.teacher_lr {
            r.lr = lr;
            r.min_lr = r.min_lr.min(lr);
        }
        r
    }

    /// Value checks serde cannot express; errors name the field and the valid range.
    pub fn check(&self) -> Result<()> {
        for (k, v) in [
            ("ce_weight", self.ce_weight),
            ("kd_weight", self.kd_weight),
            ("feature_weight", self.feature_weight),
            ("at_weight", self.at_weight),
            ("dkd_weight", self.dkd_weight),
            ("dkd_alpha", self.dkd_alpha),
            ("dkd_beta", self.dkd_beta),
            ("dkd_warmup_epochs", self.dkd_warmup_epochs),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                bail!("distill.{k} must be a finite number >= 0, got {v}");
            }
        }
        for (k, v) in [
            ("temperature", self.temperature),
            ("dkd_temperature", self.dkd_temperature),
        ] {
            if !(v > 0.0 && v.is_finite()) {
                bail!("distill.{k} must be positive and finite, got {v}");
            }
        }
        if self.teacher_epochs == Some(0) {
            bail!("distill.teacher_epochs must be at least 1");
        }
        if let Some(lr) = self.teacher_lr {
            if !(lr > 0.0 && lr.is_finite()) {
                bail!("distill.teacher_lr must be positive and finite, got {lr}");
            }
        }
        if self.teacher_experiment.is_some()
            && (self.teacher != Self::default().teacher
                || self.teacher_epochs.is_some()
                || self.teacher_lr.is_some())
        {
            bail!("distill.teacher_experiment names the teacher and how it trains: drop distill.teacher, teacher_epochs and teacher_lr");
        }
        if self
            .teacher_experiment
            .as_ref()
            .is_some_and(|t| t.paths().is_empty())
        {
            bail!("distill.teacher_experiment is an empty list: name at least one experiment file");
        }
        if self.teacher_res == Some(0) {
            bail!("distill.teacher_res must be positive");
        }
        Ok(())
    }

    /// True when some loss needs the teacher's intermediate features (no logit cache then).
    pub fn needs_features(&self) -> bool {
        self.feature_weight > 0.0 || self.at_weight > 0.0
    }

    /// One line with every resolved weight, printed at start (toolkits disagree on "alpha").
    pub fn describe(&self) -> String {
        format!(
            "loss = {} · CE + {} · KD(T={}) + {} · feature-MSE{:?} + {} · AT{:?} + {} · DKD(α={}, β={}, T={}, warm-up {} epochs)",
            self.ce_weight,
            self.kd_weight,
            self.temperature,
            self.feature_weight,
            self.feature_taps,
            self.at_weight,
            self.feature_taps,
            self.dkd_weight,
            self.dkd_alpha,
            self.dkd_beta,
            self.dkd_temperature,
            self.dkd_warmup_epochs
        )
    }
}
