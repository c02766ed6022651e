//! YOLO11's modules as data, with channel counts already scaled, and how each one expands into
//! primitive rows (see [`Sheet`]). Names follow Ultralytics' module paths (`model.2.m.0.cv1`),
//! so a later builder can name its tensors the same way.
//!
//! Every 3×3 bottleneck inside a C3k2, C3k or PSA block is residual (input and output widths
//! are equal there); additions, activations and softmax cost no MACs in this count.

use super::sheet::{gcd, ConvUnit, Shape, Sheet, Tail};
use serde::Serialize;

/// Bins per box side of the distribution-focal head (Ultralytics' `reg_max`).
pub const REG_MAX: usize = 16;

/// One YOLO11 module; its input channels are those of the map it reads.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    /// A bias-free k×k conv with stride, batch norm, SiLU.
    Conv { out: usize, k: usize, stride: usize },
    /// CSP block: a 1×1 conv to two halves of `int(out·e)` channels, `n` inner blocks chained
    /// on the second half (3×3 bottlenecks at expansion 0.5, or two-bottleneck C3ks when
    /// `c3k`), every intermediate map concatenated and fused by a 1×1 conv.
    C3k2 {
        out: usize,
        n: usize,
        c3k: bool,
        e: f64,
    },
    /// Spatial pyramid pooling: 1×1 conv to half the input, three chained k×k max pools,
    /// the four maps concatenated and fused by a 1×1 conv.
    Sppf { out: usize, k: usize },
    /// CSP block with `n` position-sensitive attention blocks on half of its channels;
    /// output width equals input width.
    C2psa { n: usize },
    /// Nearest-neighbour upsampling by 2.
    Upsample,
    /// Concatenation of its inputs along channels.
    Concat,
    /// The decoupled detect head over its inputs (P3, P4, P5), with DFL box decoding.
    Detect { classes: usize, reg_max: usize },
}

impl Block {
    /// Short description for tables, e.g. `C3k2 n1 c3k e0.5`.
    pub fn kind(&self) -> String {
        match *self {
            Block::Conv { k, stride, .. } => format!("Conv k{k} s{stride}"),
            Block::C3k2 { n, c3k, e, .. } => {
                format!("C3k2 n{n}{} e{e}", if c3k { " c3k" } else { "" })
            }
            Block::Sppf { k, .. } => format!("SPPF k{k}"),
            Block::C2psa { n } => format!("C2PSA n{n}"),
            Block::Upsample => "Upsample ×2".into(),
            Block::Concat => "Concat".into(),
            Block::Detect { classes, .. } => format!("Detect nc{classes}"),
        }
    }

    /// Writes the block's rows under `name` for its first input `x` and any further inputs
    /// `rest` (Concat, Detect); returns its output shape.
    pub fn plan(&self, sheet: &mut Sheet, name: &str, x: Shape, rest: &[Shape]) -> Shape {
        match *self {
            Block::Conv { out, k, stride } => {
                sheet.conv(name.into(), ConvUnit::conv(out, k, stride), x)
            }
            Block::C3k2 { out, n, c3k, e } => c3k2(sheet, name, out, n, c3k, e, x),
            Block::Sppf { out, k } => sppf(sheet, name, out, k, x),
            Block::C2psa { n } => c2psa(sheet, name, n, x),
            Block::Upsample => {
                let out = [x[0], x[1] * 2, x[2] * 2];
                sheet.free(name.into(), "upsample×2", &[x], out);
                out
            }
            Block::Concat => {
                let all: Vec<Shape> = std::iter::once(x).chain(rest.iter().copied()).collect();
                let out = [all.iter().map(|s| s[0]).sum(), x[1], x[2]];
                sheet.free(name.into(), "concat", &all, out);
                out
            }
            Block::Detect { classes, reg_max } => {
                let levels: Vec<Shape> = std::iter::once(x).chain(rest.iter().copied()).collect();
                detect(sheet, name, classes, reg_max, &levels)
            }
        }
    }
}

/// Two convs (k[0] then k[1]) through `int(c·e)` hidden channels, residual.
fn bottleneck(sheet: &mut Sheet, name: &str, k: [usize; 2], e: f64, x: Shape) -> Shape {
    let hidden = (x[0] as f64 * e) as usize;
    let y = sheet.conv(format!("{name}.cv1"), ConvUnit::conv(hidden, k[0], 1), x);
    sheet.conv(format!("{name}.cv2"), ConvUnit::conv(x[0], k[1], 1), y)
}

/// C3k at width `c`: two 1×1 convs to `c/2`, `n` 3×3 bottlenecks (expansion 1) on the first,
/// both halves fused by a 1×1 conv back to `c`.
fn c3k(sheet: &mut Sheet, name: &str, n: usize, x: Shape) -> Shape {
    let half = x[0] / 2;
    let mut y = sheet.conv(format!("{name}.cv1"), ConvUnit::conv(half, 1, 1), x);
    sheet.conv(format!("{name}.cv2"), ConvUnit::conv(half, 1, 1), x);
    for j in 0..n {
        y = bottleneck(sheet, &format!("{name}.m.{j}"), [3, 3], 1.0, y);
    }
    sheet.conv(
        format!("{name}.cv3"),
        ConvUnit::conv(x[0], 1, 1),
        [2 * half, y[1], y[2]],
    )
}

fn c3k2(
    sheet: &mut Sheet,
    name: &str,
    out: usize,
    n: usize,
    nested: bool,
    e: f64,
    x: Shape,
) -> Shape {
    let hidden = (out as f64 * e) as usize;
    let y = sheet.conv(format!("{name}.cv1"), ConvUnit::conv(2 * hidden, 1, 1), x);
    let mut part = [hidden, y[1], y[2]];
    for j in 0..n {
        let inner = format!("{name}.m.{j}");
        part = match nested {
            true => c3k(sheet, &inner, 2, part),
            false => bottleneck(sheet, &inner, [3, 3], 0.5, part),
        };
    }
    let cat = [(2 + n) * hidden, y[1], y[2]];
    sheet.conv(format!("{name}.cv2"), ConvUnit::conv(out, 1, 1), cat)
}

fn sppf(sheet: &mut Sheet, name: &str, out: usize, k: usize, x: Shape) -> Shape {
    let half = x[0] / 2;
    let y = sheet.conv(format!("{name}.cv1"), ConvUnit::conv(half, 1, 1), x);
    let pooled = [3 * half, y[1], y[2]];
    sheet.free(
        format!("{name}.m"),
        &format!("maxpool{k}×3"),
        &[y; 3],
        pooled,
    );
    let cat = [4 * half, y[1], y[2]];
    sheet.conv(format!("{name}.cv2"), ConvUnit::conv(out, 1, 1), cat)
}

fn c2psa(sheet: &mut Sheet, name: &str, n: usize, x: Shape) -> Shape {
    let half = x[0] / 2;
    let y = sheet.conv(format!("{name}.cv1"), ConvUnit::conv(2 * half, 1, 1), x);
    let mut part = [half, y[1], y[2]];
    for j in 0..n {
        part = psa_block(sheet, &format!("{name}.m.{j}"), part);
    }
    let cat = [2 * half, y[1], y[2]];
    sheet.conv(format!("{name}.cv2"), ConvUnit::conv(x[0], 1, 1), cat)
}

/// Attention (one head per 64 channels, keys half a head wide, a depthwise 3×3 positional
/// conv on the values) and a 2× feed-forward, both residual.
fn psa_block(sheet: &mut Sheet, name: &str, x: Shape) -> Shape {
    let c = x[0];
    let heads = (c / 64).max(1);
    let key_dim = c / heads / 2;
    let linear = |out, k| ConvUnit::conv(out, k, 1).with(Tail::Bn);
    let qkv = linear(c + 2 * key_dim * heads, 1);
    sheet.conv(format!("{name}.attn.qkv"), qkv, x);
    sheet.attention(format!("{name}.attn"), heads, key_dim, x);
    sheet.conv(format!("{name}.attn.pe"), linear(c, 3).grouped(c), x);
    sheet.conv(format!("{name}.attn.proj"), linear(c, 1), x);
    let h = sheet.conv(format!("{name}.ffn.0"), ConvUnit::conv(2 * c, 1, 1), x);
    sheet.conv(format!("{name}.ffn.1"), linear(c, 1), h)
}

/// Ultralytics' `DWConv`: a conv grouped by gcd(c1, c2) with batch norm and SiLU.
fn dw_conv(sheet: &mut Sheet, name: String, out: usize, x: Shape) -> Shape {
    sheet.conv(name, ConvUnit::conv(out, 3, 1).grouped(gcd(x[0], out)), x)
}

/// Per level: a box branch (two 3×3 convs, a 1×1 conv to 4·reg_max) and a class branch (two
/// depthwise-separable pairs, a 1×1 conv to the classes); then DFL over all positions.
fn detect(
    sheet: &mut Sheet,
    name: &str,
    classes: usize,
    reg_max: usize,
    levels: &[Shape],
) -> Shape {
    let ch0 = levels.first().map_or(0, |s| s[0]);
    let c2 = 16.max(ch0 / 4).max(4 * reg_max);
    let c3 = ch0.max(classes.min(100));
    let mut anchors = 0;
    for (i, &x) in levels.iter().enumerate() {
        let (b, c) = (format!("{name}.cv2.{i}"), format!("{name}.cv3.{i}"));
        let y = sheet.conv(format!("{b}.0"), ConvUnit::conv(c2, 3, 1), x);
        let y = sheet.conv(format!("{b}.1"), ConvUnit::conv(c2, 3, 1), y);
        let bias = ConvUnit::conv(4 * reg_max, 1, 1).with(Tail::Bias);
        sheet.conv(format!("{b}.2"), bias, y);
        let y = dw_conv(sheet, format!("{c}.0.0"), x[0], x);
        let y = sheet.conv(format!("{c}.0.1"), ConvUnit::conv(c3, 1, 1), y);
        let y = dw_conv(sheet, format!("{c}.1.0"), c3, y);
        let y = sheet.conv(format!("{c}.1.1"), ConvUnit::conv(c3, 1, 1), y);
        let logits = ConvUnit::conv(classes, 1, 1).with(Tail::Bias);
        sheet.conv(format!("{c}.2"), logits, y);
        anchors += x[1] * x[2];
    }
    if reg_max > 1 {
        sheet.dfl(format!("{name}.dfl"), reg_max, anchors);
    }
    [4 + classes, 1, anchors]
}
