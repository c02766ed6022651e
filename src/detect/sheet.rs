//! The primitives YOLO11's blocks are made of (convolutions with batch norm or a bias, the
//! attention products, parameter-free ops, DFL's fixed projection), written as plan rows with
//! their parameters, MACs and bytes, counted the way the classifier's plan counts them.

use crate::cost::plan::{conv_out, numel, prod, sum};
use crate::cost::Layer;

/// A feature map's (C, H, W) for one image.
pub type Shape = [usize; 3];

/// What follows a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    /// Batch norm, then SiLU (Ultralytics' `Conv`).
    BnSilu,
    /// Batch norm alone (`Conv` with `act=False`).
    Bn,
    /// A bias and nothing else (a plain `Conv2d`, as the detect head's last 1×1 convs).
    Bias,
}

/// One convolution with symmetric padding `k / 2`; its input channels come from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvUnit {
    pub out: usize,
    pub k: usize,
    pub stride: usize,
    /// Channel groups: 1 for a dense conv, the channel count for a depthwise one.
    pub groups: usize,
    pub tail: Tail,
}

impl ConvUnit {
    /// Ultralytics' `Conv`: a bias-free k×k conv, batch norm, SiLU.
    pub fn conv(out: usize, k: usize, stride: usize) -> Self {
        ConvUnit {
            out,
            k,
            stride,
            groups: 1,
            tail: Tail::BnSilu,
        }
    }

    /// The same with another tail.
    pub fn with(self, tail: Tail) -> Self {
        ConvUnit { tail, ..self }
    }

    /// Grouped over `groups` channel groups.
    pub fn grouped(self, groups: usize) -> Self {
        ConvUnit { groups, ..self }
    }
}

/// Greatest common divisor (Ultralytics' `DWConv` groups its conv by gcd(c1, c2)).
pub fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Rows written while planning, in forward order.
#[derive(Debug, Default)]
pub struct Sheet {
    pub rows: Vec<Layer>,
}

impl Sheet {
    /// One convolution of `x`; returns its output shape.
    pub fn conv(&mut self, name: String, u: ConvUnit, x: Shape) -> Shape {
        let out = [
            u.out,
            conv_out(x[1], u.k, u.stride),
            conv_out(x[2], u.k, u.stride),
        ];
        let groups = u.groups.max(1);
        let w = prod(&[(x[0] / groups) as u64, u.out as u64, u.k as u64, u.k as u64]);
        let c = u.out as u64;
        let (extra, stats) = match u.tail {
            Tail::BnSilu | Tail::Bn => (2 * c, 2 * c),
            Tail::Bias => (c, 0),
        };
        let mut kind = match groups {
            1 => format!("conv{0}x{0}", u.k),
            g if g == x[0] => format!("dw{0}x{0}", u.k),
            g => format!("conv{0}x{0}/g{g}", u.k),
        };
        if u.stride > 1 {
            kind.push_str(&format!("/s{}", u.stride));
        }
        kind.push_str(match u.tail {
            Tail::BnSilu => "+bn+silu",
            Tail::Bn => "+bn",
            Tail::Bias => "+bias",
        });
        self.rows
            .push(Layer::conv(name, kind, [x, out], w, extra, stats));
        out
    }

    /// Multi-head self-attention over all positions of a `heads·head_dim`-channel map: the
    /// query·key and attention·value products (the projections are convs of their own).
    pub fn attention(&mut self, name: String, heads: usize, key_dim: usize, x: Shape) {
        let n = prod(&[x[1] as u64, x[2] as u64]);
        let (h, kd, c) = (heads as u64, key_dim as u64, x[0] as u64);
        let scores = prod(&[h, n, n]);
        self.rows.push(Layer {
            name,
            kind: format!("attn h{heads} n{n}"),
            in_shape: x,
            out_shape: x,
            params: 0,
            macs: prod(&[scores, sum(&[kd, c / h.max(1)])]),
            weight_elems: 0,
            act_elems: sum(&[prod(&[2, h, kd, n]), prod(&[2, scores]), prod(&[2, c, n])]),
        });
    }

    /// An op without parameters or MACs (max pooling, upsampling, concatenation).
    pub fn free(&mut self, name: String, kind: &str, inputs: &[Shape], out: Shape) {
        let read = sum(&inputs.iter().map(|&s| numel(s)).collect::<Vec<_>>());
        self.rows.push(Layer {
            name,
            kind: kind.to_string(),
            in_shape: inputs.first().copied().unwrap_or(out),
            out_shape: out,
            params: 0,
            macs: 0,
            weight_elems: 0,
            act_elems: sum(&[read, numel(out)]),
        });
    }

    /// DFL: the expected value of each of the 4 box sides over `bins` bins at `anchors`
    /// positions, a 1×1 conv with `bins` fixed weights (`0 … bins-1`). PyTorch counts those
    /// weights as parameters though they never train, and so does Ultralytics' published
    /// total, so they count here.
    pub fn dfl(&mut self, name: String, bins: usize, anchors: usize) -> Shape {
        let (b, a) = (bins as u64, anchors as u64);
        let out = [1, 4, anchors];
        self.rows.push(Layer {
            name,
            kind: format!("dfl{bins} (fixed)"),
            in_shape: [bins, 4, anchors],
            out_shape: out,
            params: b,
            macs: prod(&[4, a, b]),
            weight_elems: b,
            act_elems: sum(&[prod(&[4, a, b]), prod(&[4, a])]),
        });
        out
    }
}
