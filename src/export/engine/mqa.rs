//! Mobile multi-query attention on a channels-last map. With the map as `[L, C]` rows, the
//! query projection `[L, heads·kd]` is already `[L·heads, kd]`: every head of every position
//! attends to the shared keys in one product, and the result `[L·heads, vd]` is `[L, heads·vd]`
//! with the channel order of timm's output reshape.

use super::conv::Conv;
use super::profile::Profile;
use crate::ops::nhwc::Nhwc;
use crate::ops::{product, softmax_rows, Mat, Threads};

/// The key or value branch: optional strided depthwise down-sampling, then a 1×1 projection.
pub struct Kv {
    pub down: Option<Conv>,
    pub proj: Conv,
}

impl Kv {
    fn run(&self, xn: &[f32], shape: Nhwc, prof: &mut Profile) -> (Vec<f32>, Nhwc) {
        match &self.down {
            Some(down) => {
                let (d, s) = down.run(xn, shape, None, prof);
                self.proj.run(&d, s, None, prof)
            }
            None => self.proj.run(xn, shape, None, prof),
        }
    }
}

/// A compiled MQA block: input batch norm as an affine map, projections, attention, output
/// projection (layer scale folded in) and residual.
pub struct Mqa {
    /// `(scale, shift)` per input channel.
    pub norm: (Vec<f32>, Vec<f32>),
    pub heads: usize,
    pub key_dim: usize,
    pub value_dim: usize,
    pub query: Conv,
    pub key: Kv,
    pub value: Kv,
    pub output: Conv,
}

impl Mqa {
    /// The block on `x`.
    pub fn run(&self, x: &[f32], shape: Nhwc, prof: &mut Profile) -> (Vec<f32>, Nhwc) {
        let xn = self.normalized(x, shape.c);
        let (q, _) = self.query.run(&xn, shape, None, prof);
        let (k, ks) = self.key.run(&xn, shape, prof);
        let (v, _) = self.value.run(&xn, shape, prof);
        let (l, p) = (shape.h * shape.w, ks.h * ks.w);
        let (rows, kd, vd) = (l * self.heads, self.key_dim, self.value_dim);
        let scale = 1.0 / (kd as f32).sqrt();
        let describe = || format!("{}×{} {} heads over {p} keys", shape.h, shape.w, self.heads);
        let o = prof.time("attention", describe, || {
            let mut o = Vec::with_capacity(shape.batch * rows * vd);
            for b in 0..shape.batch {
                let q = Mat::new(&q[b * rows * kd..][..rows * kd], rows, kd);
                let k = Mat::new(&k[b * p * kd..][..p * kd], p, kd).t();
                let attn = softmax_rows(&product(q, k, Threads::All), p, scale);
                let v = Mat::new(&v[b * p * vd..][..p * vd], p, vd);
                o.extend(product(Mat::new(&attn, rows, p), v, Threads::All));
            }
            o
        });
        let o_shape = Nhwc {
            c: self.heads * vd,
            ..shape
        };
        self.output.run(&o, o_shape, Some(x), prof)
    }

    /// `x · scale + shift` per channel.
    fn normalized(&self, x: &[f32], c: usize) -> Vec<f32> {
        let (scale, shift) = &self.norm;
        let mut y = x.to_vec();
        for px in y.chunks_exact_mut(c) {
            for ((v, s), t) in px.iter_mut().zip(scale).zip(shift) {
                *v = *v * s + t;
            }
        }
        y
    }
}
