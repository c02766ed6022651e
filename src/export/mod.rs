//! Deployment: a built [`Network`] as an ONNX model (IR version 8, opset 17), written from the
//! lowered layer list ([`crate::space::lower`]) like the builder and the cost model read it.
//!
//! Input `input0` is `[batch, C, H, W]` with a dynamic batch axis, output `output0` the logits
//! `[batch, classes]`. Batch norm is folded into the convolution before it (or kept as
//! `BatchNormalization` nodes), GELU is written in its erf form, depthwise convolutions as grouped
//! `Conv`, Mobile MQA as convolutions with `Reshape` / `Transpose` / `MatMul` / `Softmax`,
//! pooling as `GlobalAveragePool` and the classifier as `Gemm`.

mod emit;
pub mod engine;
pub mod fold;
pub mod graph;
mod mqa;
pub mod proto;
pub mod runtime;
pub mod weights;

use crate::model::Network;
use crate::space::lower;
use crate::space::lower::tap_at;
use crate::space::lower::{ConvChain, Op};
use anyhow::{ensure, Context, Result};
use emit::{conv_out, Emitter};
use graph::Dim;
use prost::Message;
use proto::{ModelProto, OperatorSetIdProto};

/// ONNX IR version of the exported files.
pub const IR_VERSION: i64 = 8;
/// The `ai.onnx` operator set the exported files use.
pub const OPSET: i64 = 17;
/// Name of the graph input.
pub const INPUT: &str = "input0";
/// Name of the logits output.
pub const OUTPUT: &str = "output0";

/// What to export besides the logits, and how.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// Keep `BatchNormalization` nodes instead of folding them into the convolutions.
    pub keep_bn: bool,
    /// Also output the feature taps ([`crate::space::Arch::feature_taps`]) as `feature0`, ….
    pub feature_outputs: bool,
    /// Stored in the model's doc string after the block string (e.g. where the weights came from).
    pub doc: String,
}

/// Spatial size after a conv chain.
fn chain_hw(chain: &ConvChain, hw: (usize, usize)) -> (usize, usize) {
    chain.convs.iter().fold(hw, |(h, w), c| {
        let (k, s) = (c.conv.kernel, c.conv.stride);
        (conv_out(h, k, s), conv_out(w, k, s))
    })
}

/// A feature tap's value, channels and spatial size.
type TapValue = (String, usize, (usize, usize));

/// The ONNX model of `net` in eval mode at input resolution `res` = (H, W), encoded.
pub fn export_onnx(net: &Network, res: (usize, usize), opts: &ExportOptions) -> Result<Vec<u8>> {
    let arch = &net.arch;
    let (h, w) = res;
    ensure!(
        h > 0 && w > 0,
        "the input resolution must be positive, got {h}×{w}"
    );
    let batch = || Dim::Named("batch".into());
    let mut e = Emitter::new(net.params.tensors(), opts.keep_bn);
    let input = [
        batch(),
        Dim::Fixed(arch.in_chans),
        Dim::Fixed(h),
        Dim::Fixed(w),
    ];
    let mut y = e.graph.input(INPUT, &input);
    let taps = arch.feature_taps();
    let mut tapped: Vec<Option<TapValue>> = vec![None; taps.len()];
    let mut hw = res;
    for layer in lower(arch) {
        y = match &layer.op {
            Op::Convs(c) => {
                hw = chain_hw(c, hw);
                e.chain(&y, c, &layer.name, layer.out_ch)?
            }
            Op::Mqa(m) => e.mqa(&y, m, layer.in_ch, hw)?,
            Op::Pool => {
                hw = (1, 1);
                e.pool(&y, &layer.name)
            }
            Op::Classifier { .. } => e.classifier(&y, &layer.name, layer.in_ch, layer.out_ch)?,
        };
        if let Some(at) = tap_at(arch, layer.role) {
            for (i, tap) in taps.iter().enumerate() {
                if tap.after_stage == at {
                    tapped[i] = Some((y.clone(), layer.out_ch, hw));
                }
            }
        }
    }
    e.graph
        .output(&y, OUTPUT, &[batch(), Dim::Fixed(arch.num_classes)]);
    if opts.feature_outputs {
        for (i, t) in tapped.into_iter().enumerate() {
            let (value, c, (th, tw)) = t.with_context(|| format!("feature tap {i} not found"))?;
            let shape = [batch(), Dim::Fixed(c), Dim::Fixed(th), Dim::Fixed(tw)];
            e.graph.output(&value, &format!("feature{i}"), &shape);
        }
    }
    let name = arch.name.clone().unwrap_or_else(|| "mobilenetv4".into());
    let model = ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        producer_name: "mnv4-lab".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: format!("{}\n{}", arch.to_block_string(), opts.doc),
        graph: Some(e.graph.finish(&name)),
    };
    Ok(model.encode_to_vec())
}
