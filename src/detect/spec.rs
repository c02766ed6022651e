//! What a detector is: a backbone, a YOLO11 scale and a class count; lowered to a graph and
//! costed from that alone.

use super::graph::{Detector, Node, NodeOp, STRIDE};
use super::scale::Yolo11Scale;
use super::yolo11::{self, BACKBONE_TAPS, NECK_START, ROWS};
use crate::cost::{totals, Cost, Layer, Profile};
use crate::space::lower::{lower, tap_at, Role};
use crate::space::{Arch, LayerSpec};
use anyhow::{anyhow, bail, ensure, Result};
use serde::{Deserialize, Serialize};

/// The network whose stride-8, -16 and -32 maps feed YOLO11's neck.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Backbone {
    /// YOLO11's own backbone (layers 0–8 of `yolo11.yaml`) at the detector's scale.
    Yolo11,
    /// A MobileNetV4 (a preset at any width, or a searched architecture) in place of YOLO11's
    /// layers 0–8. Its stem, blocks and final 1×1 `features` conv are kept; the classifier
    /// head (pooling, `conv_head`, classifier) is dropped. The neck reads the feature taps
    /// ([`Arch::feature_taps`]) at strides 8 and 16 (stage ends) and 32 (the `features` conv,
    /// 960 channels in the presets, scaled with the width). YOLO11's SPPF and C2PSA sit on
    /// that stride-32 map, as in the seed system, and keep YOLO11's scaled widths, like the
    /// rest of the neck and head.
    Mnv4 { arch: Arch },
}

/// A detector: backbone, YOLO11 scale (neck and head widths and depths) and class count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorSpec {
    pub backbone: Backbone,
    pub scale: Yolo11Scale,
    pub num_classes: usize,
}

impl DetectorSpec {
    /// YOLO11 with its own backbone.
    pub fn yolo11(scale: Yolo11Scale, num_classes: usize) -> Self {
        DetectorSpec {
            backbone: Backbone::Yolo11,
            scale,
            num_classes,
        }
    }

    /// YOLO11's neck and head on a MobileNetV4 backbone.
    pub fn mnv4(arch: Arch, scale: Yolo11Scale, num_classes: usize) -> Self {
        DetectorSpec {
            backbone: Backbone::Mnv4 { arch },
            scale,
            num_classes,
        }
    }

    /// Display name: `yolo11n`, or `yolo11n+conv-small-w0.75` with a MobileNetV4 backbone.
    pub fn name(&self) -> String {
        match &self.backbone {
            Backbone::Yolo11 => format!("yolo11{}", self.scale),
            Backbone::Mnv4 { arch } => {
                let name = arch.name.as_deref().unwrap_or("mnv4");
                format!("yolo11{}+{name}", self.scale)
            }
        }
    }

    /// The graph: backbone nodes, then YOLO11's SPPF, C2PSA, neck and detect head.
    pub fn lower(&self) -> Result<Detector> {
        ensure!(self.num_classes > 0, "a detector needs at least one class");
        let mut nodes = Vec::new();
        let mut placed = [None; ROWS];
        let (in_chans, start) = match &self.backbone {
            Backbone::Yolo11 => (3, 0),
            Backbone::Mnv4 { arch } => {
                let taps = mnv4_backbone(arch, &mut nodes)?;
                for (row, node) in BACKBONE_TAPS.into_iter().zip(taps) {
                    placed[row] = Some(node);
                }
                (arch.in_chans, NECK_START)
            }
        };
        yolo11::append(&mut nodes, &mut placed, start, self.scale, self.num_classes)?;
        let [Some(p3), Some(p4), Some(p5)] = BACKBONE_TAPS.map(|row| placed[row]) else {
            bail!("the backbone's stride-8/16/32 layers were not placed");
        };
        Ok(Detector {
            in_chans,
            nodes,
            taps: [p3, p4, p5],
        })
    }

    /// Parameters (as PyTorch counts them: weights, biases, BN affine; not BN statistics).
    pub fn params(&self) -> Result<u64> {
        Ok(self.cost(STRIDE, STRIDE, &[])?.params)
    }

    /// Multiply-accumulates for one `height`×`width` image.
    pub fn macs(&self, height: usize, width: usize) -> Result<u64> {
        Ok(self.cost(height, width, &[])?.macs)
    }

    /// Totals and roofline latencies for one `height`×`width` image.
    pub fn cost(&self, height: usize, width: usize, profiles: &[Profile]) -> Result<Cost> {
        Ok(totals(&self.units(height, width)?, profiles))
    }

    /// Every primitive row (conv, attention, pooling, …) for one `height`×`width` image.
    pub fn units(&self, height: usize, width: usize) -> Result<Vec<Layer>> {
        let plans = self.lower()?.plan(height, width)?;
        Ok(plans.into_iter().flat_map(|p| p.units).collect())
    }
}

/// Appends the MobileNetV4 backbone's nodes; returns the nodes of its stride-8, -16 and -32
/// feature taps.
fn mnv4_backbone(arch: &Arch, nodes: &mut Vec<Node>) -> Result<[usize; 3]> {
    crate::space::validate(arch)?;
    let total = arch.total_stride();
    ensure!(
        total == STRIDE,
        "a MobileNetV4 backbone for YOLO11 needs total stride {STRIDE}, this one has {total}"
    );
    let mut tapped = Vec::new();
    for layer in lower(arch) {
        if layer.role == Role::Head {
            continue; // pooling, conv_head, classifier
        }
        if let Some(at) = tap_at(arch, layer.role) {
            tapped.push((at, nodes.len()));
        }
        let inputs = nodes.len().checked_sub(1).into_iter().collect();
        nodes.push(Node {
            name: format!("backbone.{}", layer.name),
            inputs,
            op: NodeOp::Mnv4 {
                kind: mnv4_kind(arch, &layer),
                layer,
            },
        });
    }
    let taps = arch.feature_taps();
    let node_at = |stride: usize| -> Result<usize> {
        let tap = taps.iter().find(|t| t.reduction == stride).ok_or_else(|| {
            let have: Vec<String> = taps.iter().map(|t| t.reduction.to_string()).collect();
            anyhow!(
                "the MobileNetV4 backbone has no feature map at stride {stride} (it has strides {})",
                have.join(", ")
            )
        })?;
        let found = tapped.iter().find(|(at, _)| *at == tap.after_stage);
        found
            .map(|&(_, node)| node)
            .ok_or_else(|| anyhow!("no backbone layer ends at the stride-{stride} tap"))
    };
    Ok([node_at(8)?, node_at(16)?, node_at(32)?])
}

/// What a MobileNetV4 layer is, for tables: `stem 3x3/s2`, `ExtraDW/s2`, `features 1x1`.
fn mnv4_kind(arch: &Arch, layer: &LayerSpec) -> String {
    match layer.role {
        Role::Stem => format!("stem {0}x{0}/s{1}", arch.stem_kernel, arch.stem_stride),
        Role::Block { stage, index } => {
            let block = arch.stages.get(stage).and_then(|s| s.blocks.get(index));
            match block {
                Some(b) if b.stride() > 1 => format!("{}/s{}", b.kind_name(), b.stride()),
                Some(b) => b.kind_name().to_string(),
                None => "block".into(),
            }
        }
        Role::Features => "features 1x1".into(),
        Role::Head => "head".into(),
    }
}
