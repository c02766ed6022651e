//! `[model]` of a detection experiment: which backbone (YOLO11's own, or a MobileNetV4 preset,
//! arch file or block string at a width) under which YOLO11 scale.

use super::scale::Yolo11Scale;
use super::spec::DetectorSpec;
use crate::space::Arch;
use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};

/// The detector an experiment trains; classes come from its dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectModelConfig {
    /// `yolo11` (YOLO11's own backbone) or a MobileNetV4 preset, arch file or block string.
    pub backbone: String,
    /// Width multiplier of a MobileNetV4 backbone (1.0 with YOLO11's own).
    pub width: f64,
    /// YOLO11's scale of the neck and head (and of its own backbone): n, s, m, l or x.
    pub scale: Yolo11Scale,
}

impl Default for DetectModelConfig {
    fn default() -> Self {
        Self {
            backbone: "conv-small".into(),
            width: 0.75,
            scale: Yolo11Scale::N,
        }
    }
}

impl DetectModelConfig {
    /// The detector for `classes` classes; errors name the field.
    pub fn to_spec(&self, classes: usize) -> Result<DetectorSpec> {
        if self.backbone == "yolo11" {
            ensure!(
                self.width == 1.0,
                "model.width scales a MobileNetV4 backbone; YOLO11's own is scaled by model.scale"
            );
            return Ok(DetectorSpec::yolo11(self.scale, classes));
        }
        let arch = Arch::resolve(&self.backbone, self.width)
            .with_context(|| format!("model.backbone = '{}'", self.backbone))?;
        Ok(DetectorSpec::mnv4(arch, self.scale, classes))
    }
}
