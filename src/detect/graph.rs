//! A detector lowered to a graph of nodes (YOLO11 modules and MobileNetV4 layers), and its
//! plan: every node's rows with shapes, parameters and MACs at one input size.

use super::blocks::Block;
use super::sheet::{Shape, Sheet};
use crate::cost::plan::sum;
use crate::cost::{plan_layer, Layer};
use crate::space::LayerSpec;
use anyhow::{anyhow, ensure, Result};

/// What a node computes.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeOp {
    /// A YOLO11 module.
    Yolo(Block),
    /// A lowered MobileNetV4 layer (stem, block or `features` conv) and its kind for tables.
    Mnv4 { layer: LayerSpec, kind: String },
}

/// One node of a detector.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Module path: `model.13` for YOLO11's layers, `backbone.blocks.2.0` for MobileNetV4's.
    pub name: String,
    /// The earlier nodes it reads, in order; empty = the input image.
    pub inputs: Vec<usize>,
    pub op: NodeOp,
}

/// A detector as nodes in forward order; the last one is the detect head.
#[derive(Debug, Clone, PartialEq)]
pub struct Detector {
    pub in_chans: usize,
    pub nodes: Vec<Node>,
    /// The backbone nodes whose outputs the neck reads at strides 8, 16 and 32.
    pub taps: [usize; 3],
}

/// One node's summary row (totals over its units) and its primitive rows.
#[derive(Debug, Clone)]
pub struct NodePlan {
    pub row: Layer,
    pub units: Vec<Layer>,
}

/// The detector's largest stride: input sides must be multiples of it so that every
/// upsampled map meets its skip connection at the same size.
pub const STRIDE: usize = 32;

impl Detector {
    /// Plans every node for one `height`×`width` image.
    pub fn plan(&self, height: usize, width: usize) -> Result<Vec<NodePlan>> {
        ensure!(
            height > 0
                && width > 0
                && height.is_multiple_of(STRIDE)
                && width.is_multiple_of(STRIDE),
            "resolution {height}×{width}: a YOLO11 detector needs sides that are positive \
             multiples of its stride {STRIDE} (e.g. 640)"
        );
        let image = [self.in_chans, height, width];
        let mut shapes: Vec<Shape> = Vec::with_capacity(self.nodes.len());
        let mut plans = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            let inputs = node
                .inputs
                .iter()
                .map(|&j| {
                    shapes.get(j).copied().ok_or_else(|| {
                        anyhow!(
                            "node {} reads node {j}, which does not come before it",
                            node.name
                        )
                    })
                })
                .collect::<Result<Vec<Shape>>>()?;
            let (x, rest) = inputs.split_first().unwrap_or((&image, &[]));
            let (units, out) = plan_node(node, *x, rest);
            shapes.push(out);
            plans.push(NodePlan {
                row: summary(node, *x, out, &units),
                units,
            });
        }
        Ok(plans)
    }

    /// Channels of the backbone maps the neck reads at strides 8, 16 and 32.
    pub fn neck_inputs(&self) -> Result<[usize; 3]> {
        let plans = self.plan(STRIDE, STRIDE)?;
        let channels = |n: usize| plans.get(n).map(|p| p.row.out_shape[0]);
        match self.taps.map(channels) {
            [Some(a), Some(b), Some(c)] => Ok([a, b, c]),
            _ => Err(anyhow!("a backbone tap points past the detector's nodes")),
        }
    }
}

/// The rows of one node and its output shape.
fn plan_node(node: &Node, x: Shape, rest: &[Shape]) -> (Vec<Layer>, Shape) {
    match &node.op {
        NodeOp::Yolo(block) => {
            let mut sheet = Sheet::default();
            let out = block.plan(&mut sheet, &node.name, x, rest);
            (sheet.rows, out)
        }
        NodeOp::Mnv4 { layer, .. } => {
            let (mut rows, out) = plan_layer(layer, x);
            for r in &mut rows {
                r.name = format!("backbone.{}", r.name);
            }
            (rows, out)
        }
    }
}

fn summary(node: &Node, x: Shape, out: Shape, units: &[Layer]) -> Layer {
    let total = |f: fn(&Layer) -> u64| sum(&units.iter().map(f).collect::<Vec<_>>());
    Layer {
        name: node.name.clone(),
        kind: match &node.op {
            NodeOp::Yolo(b) => b.kind(),
            NodeOp::Mnv4 { kind, .. } => kind.clone(),
        },
        in_shape: x,
        out_shape: out,
        params: total(|l| l.params),
        macs: total(|l| l.macs),
        weight_elems: total(|l| l.weight_elems),
        act_elems: total(|l| l.act_elems),
    }
}
