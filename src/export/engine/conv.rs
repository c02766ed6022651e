//! A compiled convolution (kernel, folded bias, activation, unfolded layer scale) and a chain
//! of them with its residual.

use super::profile::Profile;
use crate::ops::nhwc::{dense, depthwise, pointwise, DenseWeight, Epilogue, Nhwc, Window};
use crate::ops::Act;

/// Which kernel a convolution runs, with its weight in that kernel's layout.
pub enum Kernel {
    /// Weight `[k·k, C]`, tap-major.
    Depthwise {
        weight: Vec<f32>,
        win: Window,
    },
    Pointwise(DenseWeight),
    Dense {
        weight: DenseWeight,
        stride: usize,
    },
}

/// One convolution with its epilogue.
pub struct Conv {
    pub kernel: Kernel,
    pub bias: Vec<f32>,
    pub act: Act,
    /// A layer scale after an activation, which cannot be folded into the weight.
    pub gamma: Option<Vec<f32>>,
}

impl Conv {
    /// The convolution of `x` (shape `shape`), plus `residual` (the output's shape) last.
    pub fn run(
        &self,
        x: &[f32],
        shape: Nhwc,
        residual: Option<&[f32]>,
        prof: &mut Profile,
    ) -> (Vec<f32>, Nhwc) {
        let describe = || {
            let (k, s) = match &self.kernel {
                Kernel::Depthwise { win, .. } => (win.kernel, win.stride),
                Kernel::Pointwise(_) => (1, 1),
                Kernel::Dense { weight, stride } => (weight.kernel, *stride),
            };
            let (h, w, c, n) = (shape.h, shape.w, shape.c, self.bias.len());
            format!("{h}×{w} {c}→{n} k{k} s{s}")
        };
        prof.time(self.kind(), describe, || self.compute(x, shape, residual))
    }

    /// The kernel's kind, as profiles name it.
    pub fn kind(&self) -> &'static str {
        match &self.kernel {
            Kernel::Depthwise { .. } => "depthwise",
            Kernel::Pointwise(_) => "pointwise",
            Kernel::Dense { .. } => "dense",
        }
    }

    fn compute(&self, x: &[f32], shape: Nhwc, residual: Option<&[f32]>) -> (Vec<f32>, Nhwc) {
        let ep = Epilogue {
            bias: &self.bias,
            act: self.act,
            gamma: self.gamma.as_deref(),
        };
        match &self.kernel {
            Kernel::Depthwise { weight, win } => depthwise(x, shape, weight, *win, &ep, residual),
            Kernel::Pointwise(w) => pointwise(x, shape, w, &ep, residual),
            Kernel::Dense { weight, stride } => dense(x, shape, weight, *stride, &ep, residual),
        }
    }
}

/// Convolutions in sequence; with `residual`, the chain's input is added to the last output.
pub struct Chain {
    pub convs: Vec<Conv>,
    pub residual: bool,
}

impl Chain {
    /// The chain on `x`.
    pub fn run(&self, x: &[f32], shape: Nhwc, prof: &mut Profile) -> (Vec<f32>, Nhwc) {
        let last = self.convs.len() - 1;
        let mut y: Option<(Vec<f32>, Nhwc)> = None;
        for (i, conv) in self.convs.iter().enumerate() {
            let (input, s) = match &y {
                Some((v, s)) => (v.as_slice(), *s),
                None => (x, shape),
            };
            let residual = (i == last && self.residual).then_some(x);
            y = Some(conv.run(input, s, residual, prof));
        }
        y.expect("a chain has at least one convolution")
    }
}
