//! Distilling one YOLO11 detector into another: the teacher (frozen, eval mode) runs on every
//! training batch; the student learns its class scores ([`class_kd`]) and, through a trained
//! 1×1 adapter per level, its P3–P5 feature maps ([`feature_mse`]).

use crate::detect::kd::{class_kd, feature_mse};
use crate::detect::loss::{flatten_head, FlatHead};
use crate::detect::{DetectNet, LEVEL_STRIDES};
use crate::model::params::Init;
use crate::model::{Mode, ParamKind, ParamStore};
use crate::ops::conv1x1;
use anyhow::{ensure, Context, Result};
use candle_core::{Device, Tensor, Var};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// How much each distillation term weighs, and the class temperature.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectDistillWeights {
    /// Weight of the class-score divergence.
    pub cls_weight: f64,
    /// Weight of the P3–P5 feature regression (mean over levels).
    pub feature_weight: f64,
    /// Temperature of the class scores.
    pub temperature: f64,
}

impl Default for DetectDistillWeights {
    fn default() -> Self {
        Self {
            cls_weight: 1.0,
            feature_weight: 1.0,
            temperature: 1.0,
        }
    }
}

impl DetectDistillWeights {
    /// Errors name the field.
    pub fn check(&self) -> Result<()> {
        ensure!(
            self.cls_weight >= 0.0 && self.feature_weight >= 0.0,
            "distill.cls_weight and distill.feature_weight must be ≥ 0"
        );
        ensure!(
            self.temperature > 0.0,
            "distill.temperature must be positive"
        );
        Ok(())
    }
}

/// A batch's distillation terms: their weighted sum (to add to the detection loss) and each
/// term unweighted.
pub struct DistillTerms {
    pub total: Tensor,
    pub cls: f32,
    pub feature: f32,
}

/// The frozen teacher and the student's adapters.
pub struct Distiller<'a> {
    teacher: &'a DetectNet,
    weights: DetectDistillWeights,
    /// `adapter.{level}.weight`, `[teacher channels, student channels, 1, 1]`.
    pub adapters: ParamStore,
    kernels: Vec<Var>,
}

impl<'a> Distiller<'a> {
    /// Adapters from `student`'s levels to `teacher`'s, seeded; refuses detectors that score
    /// different classes.
    pub fn new(
        teacher: &'a DetectNet,
        student: &DetectNet,
        weights: DetectDistillWeights,
        seed: u64,
    ) -> Result<Self> {
        weights.check()?;
        ensure!(
            teacher.classes() == student.classes(),
            "the teacher scores {} classes and the student {}: distillation needs the same classes",
            teacher.classes(),
            student.classes()
        );
        let mut adapters = ParamStore::new(&Device::Cpu, seed);
        let mut kernels = Vec::new();
        for (i, (&ct, &cs)) in teacher
            .level_channels()
            .iter()
            .zip(student.level_channels())
            .enumerate()
        {
            let bound = 1.0 / (cs as f64).sqrt();
            let shape = [ct, cs, 1, 1];
            let name = format!("adapter.{i}.weight");
            kernels.push(adapters.create(
                &name,
                &shape,
                Init::Uniform(bound),
                ParamKind::Weight,
            )?);
        }
        Ok(Self {
            teacher,
            weights,
            adapters,
            kernels,
        })
    }

    /// The terms for a batch of `images`, given the student's P3–P5 `levels` and flattened head.
    pub fn terms(
        &self,
        images: &Tensor,
        levels: &[Tensor],
        head: &FlatHead,
    ) -> Result<DistillTerms> {
        let (maps, teacher_levels) = self
            .teacher
            .forward_with_levels(images, Mode::Eval)
            .context("the teacher's forward pass")?;
        let maps: Vec<Tensor> = maps.iter().map(Tensor::detach).collect();
        let teacher_head = flatten_head(&maps, &LEVEL_STRIDES, &self.teacher.head_bins()?)?;
        let cls = class_kd(&head.logits, &teacher_head.logits, self.weights.temperature)?;
        let mut feature = Tensor::new(0f32, &Device::Cpu)?;
        for ((s, t), k) in levels.iter().zip(&teacher_levels).zip(&self.kernels) {
            let adapted = conv1x1(s, k.as_tensor())?;
            feature = (feature + feature_mse(&adapted, t)?)?;
        }
        let feature = (feature / levels.len().max(1) as f64)?;
        let total =
            ((&cls * self.weights.cls_weight)? + (&feature * self.weights.feature_weight)?)?;
        Ok(DistillTerms {
            total,
            cls: cls.to_scalar::<f32>()?,
            feature: feature.to_scalar::<f32>()?,
        })
    }

    /// The adapters under `adapter.*` for the checkpoint's state file.
    pub fn state(&self) -> HashMap<String, Tensor> {
        self.adapters.tensors().into_iter().collect()
    }

    /// Restores the adapters from a checkpoint's state file.
    pub fn load_state(&self, state: &HashMap<String, Tensor>) -> Result<()> {
        let names = self.adapters.tensors();
        let w: HashMap<String, Tensor> = state
            .iter()
            .filter(|(k, _)| names.contains_key(k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.adapters.load_map(&w, &[], "the distillation adapters")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{DetectorSpec, Yolo11Scale};
    use crate::space::presets::preset;

    fn net(width: f64, classes: usize, seed: u64) -> DetectNet {
        let spec = DetectorSpec::mnv4(
            preset("conv-small", width).unwrap(),
            Yolo11Scale::N,
            classes,
        );
        DetectNet::new(&spec.lower().unwrap(), &Device::Cpu, seed).unwrap()
    }

    #[test]
    fn the_teacher_gets_no_gradient_and_the_student_and_adapters_do() {
        let (teacher, student) = (net(0.5, 4, 1), net(0.25, 4, 2));
        let d = Distiller::new(&teacher, &student, DetectDistillWeights::default(), 0).unwrap();
        let x = Tensor::rand(0f32, 1.0, (2, 3, 64, 64), &Device::Cpu).unwrap();
        let (maps, levels) = student.forward_with_levels(&x, Mode::Train).unwrap();
        let head = flatten_head(&maps, &LEVEL_STRIDES, &student.head_bins().unwrap()).unwrap();
        let t = d.terms(&x, &levels, &head).unwrap();
        assert!(t.cls > 0.0 && t.feature > 0.0);
        let grads = t.total.backward().unwrap();
        for (name, var, _) in teacher.params.trainable() {
            assert!(
                grads.get(var.as_tensor()).is_none(),
                "teacher {name} got a gradient"
            );
        }
        let has = |store: &ParamStore| {
            store
                .trainable()
                .iter()
                .any(|(_, v, _)| grads.get(v.as_tensor()).is_some())
        };
        assert!(has(&student.params) && has(&d.adapters));
    }

    #[test]
    fn detectors_of_other_classes_and_bad_weights_are_refused() {
        let (teacher, student) = (net(0.25, 4, 1), net(0.25, 5, 2));
        let e = Distiller::new(&teacher, &student, DetectDistillWeights::default(), 0)
            .err()
            .unwrap();
        assert!(e.to_string().contains("same classes"), "{e}");
        let bad = DetectDistillWeights {
            temperature: 0.0,
            ..Default::default()
        };
        assert!(bad
            .check()
            .unwrap_err()
            .to_string()
            .contains("distill.temperature"));
    }
}
