//! A train-mode convolution followed by batch norm and an activation, as one candle op.
//!
//! The convolution's output stays inside the op: the backward hands the batch norm's input
//! gradient straight to the convolution's backward. Run as two ops, candle would give that
//! gradient a zero-filled buffer of the convolution output's size and add it in, as for every
//! node of the graph. The kernels are the same as [`super::conv2d`]'s and
//! [`super::batch_norm_train`]'s, so values and gradients are the same bits.

use std::sync::Mutex;

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

use super::act::channel_geometry;
use super::chain::tensor_of;
use super::conv_op::ConvOp;
use super::cpu::{f32_slice, read_f32};
use super::images::{Batch, ImageSource};

use super::batchnorm::{conv_then_fit, BatchNormTrain, BatchStats};
use super::{kernel_op, route, Act, Pass};

/// A convolution's stride, symmetric zero padding and groups, as [`super::conv2d`] takes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    pub stride: usize,
    pub padding: usize,
    pub groups: usize,
}

/// Batch norm's parameters and settings: `weight: [C]`, `bias: [C]`, epsilon, activation.
pub struct NormAct<'a> {
    pub weight: &'a Tensor,
    pub bias: &'a Tensor,
    pub eps: f64,
    pub act: Act,
}

/// `act(batch_norm(conv2d(x, w)))` with batch statistics, and those statistics; the same
/// values and gradients as [`super::conv2d`] followed by [`super::batch_norm_train`].
///
/// `None` where [`super::conv2d`] would run candle's convolution (another device or dtype, the
/// generic path, or a grouping without a kernel of ours): the caller composes the two then.
pub fn conv_bn_train(
    x: &Tensor,
    w: &Tensor,
    geo: ConvGeometry,
    norm: NormAct,
) -> Result<Option<(Tensor, BatchStats)>> {
    let kernel = route(x, w, geo.stride, geo.padding, geo.groups)?;
    match kernel_op(
        kernel,
        x.shape(),
        w.shape(),
        (geo.stride, geo.padding),
        Pass::Training,
    )? {
        Some(conv) => Ok(Some(fused(x, w, conv, norm)?)),
        None => Ok(None),
    }
}

/// Applies the convolution `conv` and the batch norm as one op.
fn fused(
    x: &Tensor,
    w: &Tensor,
    conv: Box<dyn ConvOp>,
    norm: NormAct,
) -> Result<(Tensor, BatchStats)> {
    let c = w.dim(0)?;
    if norm.weight.dims() != [c] || norm.bias.dims() != [c] {
        bail!(
            "conv + batch norm: weight {:?} / bias {:?} do not match {c} output channels",
            norm.weight.shape(),
            norm.bias.shape()
        )
    }
    let bn = BatchNormTrain::new(norm.eps, norm.act);
    let stats = bn.stats();
    let op = ConvBnTrain {
        conv,
        bn,
        conv_out: Mutex::new(None),
    };
    // One operand for both batch-norm parameters: a custom op takes three.
    let norm_params = Tensor::cat(&[norm.weight, norm.bias], 0)?;
    let y = x
        .contiguous()?
        .apply_op3(&w.contiguous()?, &norm_params, op)?;
    Ok((y, stats.get()?))
}

struct ConvBnTrain {
    conv: Box<dyn ConvOp>,
    bn: BatchNormTrain,
    /// The convolution's output, from the forward to the backward.
    conv_out: Mutex<Option<Tensor>>,
}

/// The layouts of batch norm's weight and bias inside their joint operand `[2 · C]`.
fn split_layouts(l: &Layout, name: &str) -> Result<(Layout, Layout)> {
    let Some((start, end)) = l.contiguous_offsets() else {
        bail!("{name}: expected contiguous batch-norm parameters")
    };
    let c = (end - start) / 2;
    Ok((
        Layout::contiguous_with_offset(c, start),
        Layout::contiguous_with_offset(c, start + c),
    ))
}

impl CustomOp3 for ConvBnTrain {
    fn name(&self) -> &'static str {
        "conv-bn-train"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (weight, bias) = split_layouts(pl, self.name())?;
        let first_dim = |l: &Layout| l.shape().dims().first().copied().unwrap_or(0);
        let (conv_out, shape) = conv_then_fit(
            (first_dim(xl), first_dim(wl)),
            |done| self.conv.forward_each((xs, xl), (ws, wl), done),
            &self.bn,
            (ps, &weight, &bias),
        )?;
        let z = f32_slice(&conv_out, &Layout::contiguous(&shape), self.name())?;
        let y = CpuStorage::F32(self.bn.output(z, &shape)?.all());
        let kept = tensor_of(conv_out, shape.clone())?;
        *self.conv_out.lock().unwrap_or_else(|e| e.into_inner()) = Some(kept);
        Ok((y, shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        params: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Some(conv_out) = self
            .conv_out
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            bail!("{}: backward without a forward", self.name())
        };
        let dy = dy.contiguous()?;
        let (n, c, s) = channel_geometry(conv_out.shape(), self.name())?;
        let (dx, dw, d_params) = read_f32(&conv_out, |z| {
            read_f32(&dy, |dy| -> Result<_> {
                let grads = self.bn.grads(z, dy, (n, c, s))?;
                let dz = self.bn.input_grad(&grads, (z, dy), (c, s))?;
                let (dx, dw) = self.conv.grads(x, w, Batch::Images(&dz), x.track_op())?;
                Ok((dx, dw, [grads.weight, grads.bias].concat()))
            })
        })???;
        let d_params = Tensor::from_vec(d_params, params.shape(), params.device())?;
        Ok((dx, dw, Some(d_params)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::uniform;
    use crate::ops::{batch_norm_train, conv1x1, dense, depthwise_conv2d, Route};
    use candle_core::Var;
    use rand::{rngs::StdRng, SeedableRng};

    /// The kernel `route` names, applied on its own (the process-wide path is left alone).
    fn conv_apart(route: Route, x: &Tensor, w: &Tensor, geo: ConvGeometry) -> Result<Tensor> {
        match route {
            Route::Pointwise => conv1x1(x, w),
            Route::Depthwise => depthwise_conv2d(x, w, geo.stride),
            _ => dense::conv2d(x, w, geo.stride, geo.padding),
        }
    }

    fn norm<'a>(weight: &'a Tensor, bias: &'a Tensor, act: Act) -> NormAct<'a> {
        NormAct {
            weight,
            bias,
            eps: 1e-5,
            act,
        }
    }

    /// Output, statistics and every gradient, fused and as two ops, bit for bit.
    #[test]
    fn matches_conv_then_batch_norm() -> Result<()> {
        let mut rng = StdRng::seed_from_u64(31);
        // Pointwise on a small plane (channel-major) and on planes of 128 and more (sample by
        // sample, the output gradient written image by image), depthwise flat and small, dense
        // stride 2 (the stem) on both sides of 128 outputs and stride 1 on a small plane.
        let cases = [
            (Route::Pointwise, [3, 6, 9, 8], [5, 6, 1, 1], 1, 0),
            (Route::Pointwise, [3, 5, 12, 12], [7, 5, 1, 1], 1, 0),
            (Route::Pointwise, [1, 4, 16, 9], [3, 4, 1, 1], 1, 0),
            (Route::Dense, [3, 3, 24, 24], [6, 3, 3, 3], 2, 1),
            (Route::Pointwise, [4, 6, 3, 3], [7, 6, 1, 1], 1, 0),
            (Route::Depthwise, [2, 6, 12, 10], [6, 1, 3, 3], 2, 1),
            (Route::Depthwise, [3, 5, 4, 4], [5, 1, 5, 5], 1, 2),
            (Route::Dense, [2, 3, 16, 16], [8, 3, 3, 3], 2, 1),
            (Route::Dense, [5, 4, 4, 4], [6, 4, 3, 3], 1, 1),
        ];
        for (i, (route, xs, ws, stride, padding)) in cases.into_iter().enumerate() {
            let groups = if route == Route::Depthwise { xs[1] } else { 1 };
            let geo = ConvGeometry {
                stride,
                padding,
                groups,
            };
            for act in [Act::Identity, Act::Relu, Act::Gelu] {
                let x = Var::from_tensor(&uniform(&xs, &mut rng)?)?;
                let w = Var::from_tensor(&uniform(&ws, &mut rng)?)?;
                let g = Var::from_tensor(&uniform(&[ws[0]], &mut rng)?.affine(0.5, 1.0)?)?;
                let b = Var::from_tensor(&uniform(&[ws[0]], &mut rng)?)?;
                let Some(conv) = kernel_op(
                    route,
                    x.shape(),
                    w.shape(),
                    (stride, padding),
                    Pass::Training,
                )?
                else {
                    panic!("case {i}: no kernel")
                };
                let (together, stats) =
                    fused(&x, &w, conv, norm(g.as_tensor(), b.as_tensor(), act))?;
                let conv = conv_apart(route, &x, &w, geo)?;
                let (apart, apart_stats) = batch_norm_train(&conv, &g, &b, 1e-5, act)?;
                assert_eq!(stats.mean, apart_stats.mean, "case {i} {act:?}");
                assert_eq!(stats.var, apart_stats.var, "case {i} {act:?}");
                let r = uniform(together.dims(), &mut rng)?;
                let bits = |y: &Tensor| -> Result<Vec<Vec<f32>>> {
                    let grads = (y * &r)?.sum_all()?.backward()?;
                    let mut out = vec![y.flatten_all()?.to_vec1()?];
                    for v in [&x, &w, &g, &b] {
                        let grad = grads.get(v.as_tensor()).expect("a gradient");
                        out.push(grad.flatten_all()?.to_vec1()?);
                    }
                    Ok(out)
                };
                assert_eq!(bits(&together)?, bits(&apart)?, "case {i} {act:?}");
            }
        }
        Ok(())
    }

    #[test]
    fn rejects_mismatched_parameters_and_defers_other_groupings() -> Result<()> {
        let mut rng = StdRng::seed_from_u64(32);
        let x = uniform(&[2, 4, 5, 5], &mut rng)?;
        let w = uniform(&[6, 4, 1, 1], &mut rng)?;
        let short = uniform(&[5], &mut rng)?;
        let conv = kernel_op(
            Route::Pointwise,
            x.shape(),
            w.shape(),
            (1, 0),
            Pass::Training,
        )?
        .expect("a kernel");
        let err = fused(&x, &w, conv, norm(&short, &short, Act::Relu)).unwrap_err();
        assert!(err.to_string().contains("6 output channels"), "{err}");
        let grouped = uniform(&[6, 2, 3, 3], &mut rng)?;
        let geo = ConvGeometry {
            stride: 1,
            padding: 1,
            groups: 2,
        };
        let six = uniform(&[6], &mut rng)?;
        assert!(conv_bn_train(&x, &grouped, geo, norm(&six, &six, Act::Relu))?.is_none());
        Ok(())
    }
}
