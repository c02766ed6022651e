//! The builder: a lowered [`Detector`] becomes a trainable candle network whose tensors carry
//! Ultralytics' state-dict names (`model.<row>…`), and a MobileNetV4 backbone's timm names under
//! `backbone.`.

use super::blocks::Block;
use super::decode::{decode, Detections};
use super::graph::{Detector, NodeOp, STRIDE};
use super::head::{DetectHead, LEVEL_STRIDES};
use super::modules::{C2psa, C3k2, Sppf, YoloConv};
use super::sheet::ConvUnit;
use crate::model::blocks::BlockModule;
use crate::model::{Mode, ParamStore};
use crate::space::lower::{LayerSpec, Op};
use anyhow::{bail, ensure, Result};
use candle_core::{Device, Tensor};

/// What one node (before the head) became.
enum Module {
    Mnv4(BlockModule),
    Conv(YoloConv),
    C3k2(C3k2),
    Sppf(Sppf),
    C2psa(C2psa),
    Upsample,
    Concat,
}

/// A built node and the earlier nodes it reads (none: the image).
struct Built {
    module: Module,
    inputs: Vec<usize>,
}

/// A YOLO11 detector (with its own or a MobileNetV4 backbone) as candle modules.
pub struct DetectNet {
    pub params: ParamStore,
    /// What was built.
    detector: Detector,
    in_chans: usize,
    body: Vec<Built>,
    head: DetectHead,
    /// The nodes the head reads (P3, P4, P5).
    head_inputs: Vec<usize>,
    /// Their channels.
    level_channels: Vec<usize>,
    /// Classes the head scores.
    classes: usize,
}

impl DetectNet {
    /// Builds every node of `detector`; initial weights come from `seed` (same seed → same
    /// weights).
    pub fn new(detector: &Detector, device: &Device, seed: u64) -> Result<Self> {
        let plans = detector.plan(STRIDE, STRIDE)?;
        let channels: Vec<usize> = plans.iter().map(|p| p.row.out_shape[0]).collect();
        let mut ps = ParamStore::new(device, seed);
        let Some((last, nodes)) = detector.nodes.split_last() else {
            bail!("a detector without nodes");
        };
        let mut body = Vec::with_capacity(nodes.len());
        for (node, plan) in nodes.iter().zip(&plans) {
            let cin = plan.row.in_shape[0];
            let module = match &node.op {
                NodeOp::Yolo(block) => yolo_module(&mut ps, &node.name, block, cin)?,
                NodeOp::Mnv4 { layer, .. } => ps.scoped("backbone", |ps| mnv4_module(ps, layer))?,
            };
            body.push(Built {
                module,
                inputs: node.inputs.clone(),
            });
        }
        let NodeOp::Yolo(Block::Detect { classes, reg_max }) = last.op else {
            bail!(
                "the detector's last node {} is not a detect head",
                last.name
            );
        };
        let levels: Vec<usize> = last.inputs.iter().map(|&j| channels[j]).collect();
        let head = DetectHead::new(&mut ps, &last.name, &levels, classes, reg_max)?;
        Ok(DetectNet {
            params: ps,
            detector: detector.clone(),
            in_chans: detector.in_chans,
            body,
            head,
            head_inputs: last.inputs.clone(),
            level_channels: levels,
            classes,
        })
    }

    /// The detector this network was built from.
    pub fn detector(&self) -> &Detector {
        &self.detector
    }

    /// The raw head maps for a batch `[B, C, H, W]` (sides multiples of 32): one
    /// `[B, 4·reg_max + classes, H/s, W/s]` map per level s = 8, 16, 32.
    /// The pass runs on the kernels' worker pool ([`crate::ops::on_workers`]).
    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Vec<Tensor>> {
        Ok(self.forward_with_levels(x, mode)?.0)
    }

    /// [`DetectNet::forward`]'s head maps and the P3, P4, P5 feature maps the head read.
    pub fn forward_with_levels(
        &self,
        x: &Tensor,
        mode: Mode,
    ) -> Result<(Vec<Tensor>, Vec<Tensor>)> {
        let (_, c, h, w) = x.dims4()?;
        ensure!(
            c == self.in_chans,
            "input has {c} channels but the detector expects {}",
            self.in_chans
        );
        ensure!(
            h.is_multiple_of(STRIDE) && w.is_multiple_of(STRIDE) && h > 0 && w > 0,
            "input {h}×{w}: a YOLO11 detector needs sides that are positive multiples of {STRIDE}"
        );
        crate::ops::on_workers(|| self.forward_inner(x, mode))
    }

    /// Channels of the P3, P4, P5 feature maps.
    pub fn level_channels(&self) -> &[usize] {
        &self.level_channels
    }

    /// Number of classes the head scores.
    pub fn classes(&self) -> usize {
        self.classes
    }

    fn forward_inner(&self, x: &Tensor, mode: Mode) -> Result<(Vec<Tensor>, Vec<Tensor>)> {
        let mut outs: Vec<Tensor> = Vec::with_capacity(self.body.len());
        for node in &self.body {
            let inputs: Vec<&Tensor> = match node.inputs.is_empty() {
                true => vec![x],
                false => node.inputs.iter().map(|&j| &outs[j]).collect(),
            };
            let y = run(&node.module, &inputs, mode)?;
            outs.push(y);
        }
        let levels: Vec<Tensor> = self.head_inputs.iter().map(|&j| outs[j].clone()).collect();
        Ok((self.head.forward(&levels, mode)?, levels))
    }

    /// Boxes (xyxy, input pixels) and class scores at every anchor, from [`DetectNet::forward`]'s
    /// maps.
    pub fn decode(&self, maps: &[Tensor]) -> Result<Detections> {
        decode(maps, &self.head_bins()?, &LEVEL_STRIDES)
    }

    /// The DFL bins `0 … reg_max − 1` the head's box distributions are read with.
    pub fn head_bins(&self) -> Result<Tensor> {
        self.head.bins()
    }
}

/// Runs one module on its inputs (several for Concat, one otherwise).
fn run(module: &Module, inputs: &[&Tensor], mode: Mode) -> Result<Tensor> {
    let x = inputs[0];
    Ok(match module {
        Module::Mnv4(b) => b.forward(x, mode)?,
        Module::Conv(c) => c.forward(x, mode)?,
        Module::C3k2(c) => c.forward(x, mode)?,
        Module::Sppf(s) => s.forward(x, mode)?,
        Module::C2psa(c) => c.forward(x, mode)?,
        Module::Upsample => {
            let (_, _, h, w) = x.dims4()?;
            x.upsample_nearest2d(2 * h, 2 * w)?
        }
        Module::Concat => Tensor::cat(inputs, 1)?,
    })
}

/// A YOLO11 module on `cin` input channels.
fn yolo_module(ps: &mut ParamStore, name: &str, block: &Block, cin: usize) -> Result<Module> {
    Ok(match *block {
        Block::Conv { out, k, stride } => Module::Conv(YoloConv::new(
            ps,
            name,
            cin,
            ConvUnit::conv(out, k, stride),
            0.0,
        )?),
        Block::C3k2 { out, n, c3k, e } => Module::C3k2(C3k2::new(ps, name, cin, out, n, c3k, e)?),
        Block::Sppf { out, k } => Module::Sppf(Sppf::new(ps, name, cin, out, k)?),
        Block::C2psa { n } => Module::C2psa(C2psa::new(ps, name, cin, n)?),
        Block::Upsample => Module::Upsample,
        Block::Concat => Module::Concat,
        Block::Detect { .. } => bail!("{name}: a detect head before the last node"),
    })
}

/// A lowered MobileNetV4 layer (stem, block or `features` conv) under its timm names.
fn mnv4_module(ps: &mut ParamStore, layer: &LayerSpec) -> Result<Module> {
    Ok(Module::Mnv4(match &layer.op {
        Op::Convs(c) => BlockModule::chain(ps, c, layer.out_ch)?,
        Op::Mqa(m) => BlockModule::mqa(ps, m, layer.in_ch)?,
        Op::Pool | Op::Classifier { .. } => {
            bail!("{}: a classifier head layer inside a detector", layer.name)
        }
    }))
}
