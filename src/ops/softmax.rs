//! Softmax over the last dimension of a scaled input, `y = softmax(x · scale)`, as one candle
//! custom op with its own backward: attention scores in one pass over memory instead of the six
//! of the composition (scale, max, subtract, exp, sum, divide), and one node in the graph.

use std::mem::MaybeUninit;

use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::act::rows_per_task;
use super::cpu::{f32_slice, read_f32};
use super::uninit::{filled, written};

/// `softmax(x · scale)` over the last dimension of `x` (rank ≥ 1).
///
/// CPU and f32 only. Differentiable with respect to `x`.
pub fn softmax_last_dim(x: &Tensor, scale: f64) -> Result<Tensor> {
    x.contiguous()?.apply_op1(SoftmaxLastDim {
        scale: scale as f32,
    })
}

/// `softmax(row · scale)` of each row of `n` values (`n > 0`) of `x`, parallel over rows.
pub(crate) fn softmax_rows(x: &[f32], n: usize, scale: f32) -> Vec<f32> {
    // SAFETY: the rows of `n` slots cover the vector, each written in full by `softmax_row`.
    unsafe {
        written(x.len(), |y| {
            y.par_chunks_mut(n)
                .zip(x.par_chunks(n))
                .with_min_len(rows_per_task(n))
                .for_each(|(y, x)| softmax_row(x, scale, y))
        })
    }
}

struct SoftmaxLastDim {
    scale: f32,
}

/// The length of the rows the softmax runs over.
fn row_len(shape: &Shape, op: &str) -> Result<usize> {
    match shape.dims().last() {
        Some(&n) => Ok(n),
        None => bail!("{op}: expected a tensor of rank 1 or more, got a scalar"),
    }
}

impl CustomOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        "softmax-last-dim"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        let n = row_len(l.shape(), self.name())?;
        if n == 0 {
            return Ok((CpuStorage::F32(Vec::new()), l.shape().clone()));
        }
        let y = softmax_rows(x, n, self.scale);
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let dy = dy.contiguous()?;
        let n = row_len(y.shape(), self.name())?;
        if n == 0 {
            return Ok(Some(dy));
        }
        let dx = read_f32(y, |y| {
            read_f32(&dy, |dy| softmax_rows_grad(y, dy, n, self.scale))
        })??;
        Ok(Some(Tensor::from_vec(dx, y.shape(), y.device())?))
    }
}

/// The gradient of [`softmax_rows`]: `dx = scale · y · (dy − Σ dy·y)` over each row of `n`,
/// from its output `y` and output gradient `dy`.
pub(crate) fn softmax_rows_grad(y: &[f32], dy: &[f32], n: usize, scale: f32) -> Vec<f32> {
    // SAFETY: the rows of `n` slots cover the vector, each written by `grad_row`.
    unsafe {
        written(y.len(), |dx| {
            dx.par_chunks_mut(n)
                .zip(y.par_chunks(n).zip(dy.par_chunks(n)))
                .with_min_len(rows_per_task(n))
                .for_each(|(dx, (y, dy))| grad_row(y, dy, scale, dx))
        })
    }
}

/// `y = exp(x·scale − max) / Σ exp(x·scale − max)` over one row.
#[inline(always)]
fn softmax_row(x: &[f32], scale: f32, y: &mut [MaybeUninit<f32>]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v * scale));
    let e = filled(y, x.iter().map(|&v| (v * scale - max).exp()));
    let inv = 1.0 / e.iter().sum::<f32>();
    for e in e.iter_mut() {
        *e *= inv;
    }
}

/// `dx = scale · y · (dy − Σ dy·y)` over one row.
#[inline(always)]
fn grad_row(y: &[f32], dy: &[f32], scale: f32, dx: &mut [MaybeUninit<f32>]) {
    let dot: f32 = y.iter().zip(dy).map(|(&y, &d)| y * d).sum();
    for ((dx, &y), &d) in dx.iter_mut().zip(y).zip(dy) {
        dx.write(scale * y * (d - dot));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::{assert_close, uniform};
    use candle_core::{Device, Var, D};
    use rand::{rngs::StdRng, SeedableRng};

    /// candle's composition: scale, then candle_nn's softmax over the last dimension.
    fn reference(x: &Tensor, scale: f64) -> Result<Tensor> {
        candle_nn::ops::softmax(&(x * scale)?, D::Minus1)
    }

    /// The output and `d sum(y · r) / dx`.
    fn with_grad(
        f: &dyn Fn(&Tensor) -> Result<Tensor>,
        x: &Tensor,
        r: &Tensor,
    ) -> Result<[Tensor; 2]> {
        let v = Var::from_tensor(x)?;
        let y = f(v.as_tensor())?;
        let g = (&y * r)?.sum_all()?.backward()?;
        Ok([y, g.get(v.as_tensor()).cloned().expect("gradient missing")])
    }

    #[test]
    fn matches_the_composition_forward_and_backward() -> Result<()> {
        let shapes: [&[usize]; 3] = [&[2, 4, 196, 49], &[3, 7], &[1, 2, 3, 300]];
        for (seed, shape) in (0u64..).zip(shapes) {
            let mut rng = StdRng::seed_from_u64(seed);
            // Scores up to ±40 before scaling: the max subtraction must keep exp finite.
            let x = (uniform(shape, &mut rng)? * 40.0)?;
            let r = uniform(shape, &mut rng)?;
            for scale in [0.125, 1.0] {
                let got = with_grad(&|x| softmax_last_dim(x, scale), &x, &r)?;
                let want = with_grad(&|x| reference(x, scale), &x, &r)?;
                assert_close(&got[0], &want[0], &format!("{shape:?} × {scale}: forward"))?;
                assert_close(&got[1], &want[1], &format!("{shape:?} × {scale}: gradient"))?;
            }
        }
        Ok(())
    }

    #[test]
    fn rows_sum_to_one_and_a_single_column_has_no_gradient() -> Result<()> {
        let x = Tensor::new(&[[1000f32, 999.0, -1000.0], [0.0, 0.0, 0.0]], &Device::Cpu)?;
        let y = softmax_last_dim(&x, 1.0)?.to_vec2::<f32>()?;
        for row in &y {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6, "{row:?}");
        }
        assert!((y[1][0] - 1.0 / 3.0).abs() < 1e-7);
        let one = Tensor::new(&[[3f32], [-2.0]], &Device::Cpu)?;
        let r = Tensor::new(&[[5f32], [7.0]], &Device::Cpu)?;
        let [y, g] = with_grad(&|x| softmax_last_dim(x, 0.5), &one, &r)?;
        assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, [1.0, 1.0]);
        assert_eq!(g.flatten_all()?.to_vec1::<f32>()?, [0.0, 0.0]);
        assert!(softmax_last_dim(&Tensor::new(3f32, &Device::Cpu)?, 1.0).is_err());
        Ok(())
    }
}
