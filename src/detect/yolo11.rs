//! YOLO11 as Ultralytics' `yolo11.yaml` defines it (nominal widths and repeats), and its
//! lowering at a scale: widths capped, scaled and rounded up to multiples of 8, repeats scaled
//! by the depth gain, C3k2 blocks nested at m/l/x.
//!
//! One difference from Ultralytics' parser: it leaves a layer unscaled when its nominal width
//! happens to equal the class count (a rule meant for classifier heads); here every layer is
//! scaled, so a detector with e.g. 256 classes keeps YOLO11's shape.

use super::blocks::{Block, REG_MAX};
use super::graph::{Node, NodeOp};
use super::scale::Yolo11Scale;
use anyhow::{anyhow, Result};

/// A module with its nominal (unscaled) arguments.
#[derive(Debug, Clone, Copy)]
enum Module {
    Conv {
        c: usize,
        k: usize,
        s: usize,
    },
    C3k2 {
        c: usize,
        n: usize,
        c3k: bool,
        e: f64,
    },
    Sppf {
        c: usize,
        k: usize,
    },
    /// Keeps its input width (1024 nominal in the yaml, as SPPF's output).
    C2psa {
        n: usize,
    },
    Upsample,
    Concat,
    Detect,
}

/// One layer: the layers it reads (-1 = the one before; the first layer reads the image).
struct Row {
    from: &'static [isize],
    module: Module,
}

const fn prev(module: Module) -> Row {
    Row {
        from: &[-1],
        module,
    }
}

const fn conv(c: usize) -> Module {
    Module::Conv { c, k: 3, s: 2 }
}

const fn c3k2(c: usize, c3k: bool, e: f64) -> Module {
    Module::C3k2 { c, n: 2, c3k, e }
}

/// Rows 0–8: YOLO11's backbone; 9–10: SPPF and C2PSA on the stride-32 map; 11–22: the neck
/// (top-down, then bottom-up); 23: the detect head on rows 16, 19, 22 (strides 8, 16, 32).
const LAYERS: [Row; 24] = [
    prev(conv(64)),
    prev(conv(128)),
    prev(c3k2(256, false, 0.25)),
    prev(conv(256)),
    prev(c3k2(512, false, 0.25)),
    prev(conv(512)),
    prev(c3k2(512, true, 0.5)),
    prev(conv(1024)),
    prev(c3k2(1024, true, 0.5)),
    prev(Module::Sppf { c: 1024, k: 5 }),
    prev(Module::C2psa { n: 2 }),
    prev(Module::Upsample),
    Row {
        from: &[-1, 6],
        module: Module::Concat,
    },
    prev(c3k2(512, false, 0.5)),
    prev(Module::Upsample),
    Row {
        from: &[-1, 4],
        module: Module::Concat,
    },
    prev(c3k2(256, false, 0.5)),
    prev(conv(256)),
    Row {
        from: &[-1, 13],
        module: Module::Concat,
    },
    prev(c3k2(512, false, 0.5)),
    prev(conv(512)),
    Row {
        from: &[-1, 10],
        module: Module::Concat,
    },
    prev(c3k2(1024, true, 0.5)),
    Row {
        from: &[16, 19, 22],
        module: Module::Detect,
    },
];

/// Number of YOLO11 layers.
pub const ROWS: usize = LAYERS.len();

/// The rows whose outputs are the backbone's stride-8, -16 and -32 maps.
pub const BACKBONE_TAPS: [usize; 3] = [4, 6, 8];

/// The first row after YOLO11's own backbone (SPPF).
pub const NECK_START: usize = 9;

impl Module {
    fn scaled(self, scale: Yolo11Scale, classes: usize) -> Block {
        match self {
            Module::Conv { c, k, s } => Block::Conv {
                out: scale.channels(c),
                k,
                stride: s,
            },
            Module::C3k2 { c, n, c3k, e } => Block::C3k2 {
                out: scale.channels(c),
                n: scale.repeats(n),
                c3k: c3k || scale.forces_c3k(),
                e,
            },
            Module::Sppf { c, k } => Block::Sppf {
                out: scale.channels(c),
                k,
            },
            Module::C2psa { n } => Block::C2psa {
                n: scale.repeats(n),
            },
            Module::Upsample => Block::Upsample,
            Module::Concat => Block::Concat,
            Module::Detect => Block::Detect {
                classes,
                reg_max: REG_MAX,
            },
        }
    }
}

/// The node holding the output of the layer that row `r` reads through `from`; `None` for the
/// image.
fn source(from: isize, r: usize, placed: &[Option<usize>; ROWS]) -> Result<Option<usize>> {
    let row = if from < 0 {
        match r.checked_sub(from.unsigned_abs()) {
            Some(row) => row,
            None => return Ok(None),
        }
    } else {
        from.unsigned_abs()
    };
    match placed.get(row).copied().flatten() {
        Some(node) => Ok(Some(node)),
        None => Err(anyhow!(
            "YOLO11 layer {r} reads layer {row}, which is not placed"
        )),
    }
}

/// Appends YOLO11's layers from row `start` on to `nodes`, named `model.<row>` as Ultralytics
/// names them. `placed[r]` is the node holding row `r`'s output: filled in here for the rows
/// appended, and by the caller for the earlier rows it replaces (a different backbone).
pub fn append(
    nodes: &mut Vec<Node>,
    placed: &mut [Option<usize>; ROWS],
    start: usize,
    scale: Yolo11Scale,
    classes: usize,
) -> Result<()> {
    for (r, row) in LAYERS.iter().enumerate().skip(start) {
        let mut inputs = Vec::new();
        for &from in row.from {
            inputs.extend(source(from, r, placed)?);
        }
        placed[r] = Some(nodes.len());
        nodes.push(Node {
            name: format!("model.{r}"),
            inputs,
            op: NodeOp::Yolo(row.module.scaled(scale, classes)),
        });
    }
    Ok(())
}
