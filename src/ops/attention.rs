//! Train-mode mobile multi-query attention (timm's `MobileAttention`) as one candle op: batch
//! norm, the query, key and value projections (key and value optionally after a stride-2
//! depthwise convolution + batch norm), one shared key and value head for every query head,
//! the output projection, an optional layer scale and the residual add.
//!
//! As candle nodes the block is a dozen ops, each with a zero-filled gradient buffer that the
//! incoming gradients are added into, and reshapes that copy the heads in and out of place.
//! Here the heads are read where the projections write them, and the gradients pass from step
//! to step inside the op. The convolutions and batch norms are the kernels of
//! [`super::conv_bn_train`], the softmax that of [`super::softmax_last_dim`].

use std::sync::Mutex;

use candle_core::{
    bail, CpuStorage, CustomOp2, CustomOp3, DType, Device, Layout, Result, Shape, Tensor,
};
use rayon::prelude::*;

use super::act::{channel_geometry, Act};
use super::batchnorm::{BatchNormTrain, BatchStats, StatsCell};
use super::chain::{
    add_residual, layer_scale, layer_scale_grad, out_shape, take_saved, tensor_of, unit_backward,
    ChainUnit, Joint, UnitInput, UnitOp,
};
use super::conv_bn::NormAct;
use super::conv_op::ConvOp;
use super::cpu::{f32_slice, read_f32};
use super::gemm::{matmul, Mat, MatMut, Threads};
use super::images::Batch;
use super::images::ImageSource;
use super::softmax::{softmax_rows, softmax_rows_grad};
use super::{kernel_op, route_shapes, Pass};

/// The key or the value branch: an optional down-sampling unit, then a 1×1 projection.
pub struct KvArgs<'a> {
    pub down: Option<ChainUnit<'a>>,
    pub proj: &'a Tensor,
}

/// The block's parameters and sizes: `norm` (its activation must be none), the 1×1
/// projections' weights, and `heads` query heads of `key_dim`, one key and one value head.
pub struct MqaArgs<'a> {
    pub norm: NormAct<'a>,
    pub query: &'a Tensor,
    pub key: KvArgs<'a>,
    pub value: KvArgs<'a>,
    pub output: &'a Tensor,
    pub layer_scale: Option<&'a Tensor>,
    pub heads: usize,
    pub key_dim: usize,
    pub value_dim: usize,
}

/// The block on `x: [B, C, H, W]`, with the batch statistics of the norm, then of the key's
/// and the value's down-sampling units where they have one. `None` where a convolution has
/// no kernel of ours: the caller composes the block from candle ops then.
pub fn mqa_train(x: &Tensor, args: &MqaArgs) -> Result<Option<(Tensor, Vec<BatchStats>)>> {
    let mut joint = Joint::default();
    let Some(op) = MqaTrain::new(x, args, &mut joint)? else {
        return Ok(None);
    };
    let downs = [&op.key, &op.value].map(|kv| kv.down.as_ref().map(|u| u.bn.stats()));
    let cells: Vec<StatsCell> = std::iter::once(op.norm.0.stats())
        .chain(downs.into_iter().flatten())
        .collect();
    let params = Tensor::cat(&joint.pieces, 0)?;
    let y = x.contiguous()?.apply_op2(&params, op)?;
    let stats = cells.iter().map(StatsCell::get).collect::<Result<_>>()?;
    Ok(Some((y, stats)))
}

/// The sizes of the attention: batch, query heads, key and value widths, query positions `l`
/// and key/value positions `p`.
#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    heads: usize,
    kd: usize,
    vd: usize,
    l: usize,
    p: usize,
}

/// The projections' output widths against the block's sizes.
fn check_widths(d: &Dims, c: usize, [q, k, v, o]: [&Proj; 4]) -> Result<()> {
    let want = [d.heads * d.kd, d.kd, d.vd, c];
    let got = [q, k, v, o].map(|p| p.shape.dims()[0]);
    if got != want {
        bail!("attention: projections of {got:?} outputs, expected {want:?}")
    }
    Ok(())
}

/// A 1×1 projection and where its weight lies in the joint operand.
struct Proj {
    conv: Box<dyn ConvOp>,
    shape: Shape,
    at: usize,
}

impl Proj {
    /// The projection `w` of an input of shape `input`; `None` without a kernel of ours.
    fn new(f32_cpu: bool, input: &Shape, w: &Tensor, joint: &mut Joint) -> Result<Option<Self>> {
        if w.dims().get(2..) != Some(&[1, 1][..]) {
            bail!(
                "attention: a projection of shape {:?} is not 1×1",
                w.shape()
            )
        }
        let f32_cpu = f32_cpu && w.device().is_cpu() && w.dtype() == DType::F32;
        let route = route_shapes(f32_cpu, input, w.shape(), (1, 0, 1))?;
        let Some(conv) = kernel_op(route, input, w.shape(), (1, 0), Pass::Training)? else {
            return Ok(None);
        };
        let at = joint.push(w)?;
        Ok(Some(Self {
            conv,
            shape: w.shape().clone(),
            at,
        }))
    }

    /// The projection of `(xs, xl)` with the joint parameters `(ps, pl)`.
    fn forward(&self, (xs, xl): Operand, (ps, pl): Operand) -> Result<(CpuStorage, Shape)> {
        let wl = Layout::contiguous_with_offset(&self.shape, pl.start_offset() + self.at);
        self.conv.cpu_fwd(xs, xl, ps, &wl)
    }

    /// The input's gradient for the output gradient `dy`; the weight's into `d_params`.
    fn backward(
        &self,
        x: &Tensor,
        params: &Tensor,
        dy: &[f32],
        d_params: &mut [f32],
    ) -> Result<Tensor> {
        let n = self.shape.elem_count();
        let w = params.narrow(0, self.at, n)?.reshape(&self.shape)?;
        let (dx, dw) = self.conv.grads(x, &w, Batch::Whole(dy), true)?;
        let (Some(dx), Some(dw)) = (dx, dw) else {
            bail!("attention: a projection gave no gradient")
        };
        read_f32(&dw, |dw| d_params[self.at..self.at + n].copy_from_slice(dw))?;
        Ok(dx)
    }
}

/// The key or the value branch, built, and the positions of its output.
struct KvOp {
    down: Option<UnitOp>,
    proj: Proj,
    positions: usize,
}

/// What a branch's forward keeps: the down-sampling unit's convolution output and its output.
struct KvSaved {
    down: Option<(Tensor, Tensor)>,
    out: Tensor,
}

impl KvOp {
    fn new(x: &Tensor, args: &KvArgs, joint: &mut Joint) -> Result<Option<Self>> {
        let mut shape = x.shape().clone();
        let down = match &args.down {
            Some(u) => {
                let Some(unit) = UnitOp::new(x, u, (&shape, None), joint)? else {
                    return Ok(None);
                };
                shape = out_shape(&shape, u.weight.shape(), u.geo)?;
                Some(unit)
            }
            None => None,
        };
        let f32_cpu = x.device().is_cpu() && x.dtype() == DType::F32;
        let positions = shape.dims()[2..].iter().product();
        let proj = Proj::new(f32_cpu, &shape, args.proj, joint)?;
        Ok(proj.map(|proj| Self {
            down,
            proj,
            positions,
        }))
    }

    /// The branch on the norm's output `xn`.
    fn forward(&self, xn: &Tensor, (ps, pl): Operand) -> Result<KvSaved> {
        let (xs, xl) = xn.storage_and_layout();
        let candle_core::Storage::Cpu(xs) = &*xs else {
            bail!("attention: expected a CPU tensor")
        };
        let Some(unit) = &self.down else {
            let (out, shape) = self.proj.forward((xs, xl), (ps, pl))?;
            let out = tensor_of(out, shape)?;
            return Ok(KvSaved { down: None, out });
        };
        let [wl, gl, bl] = unit.layouts(pl);
        let (z, shape) = unit.conv.cpu_fwd(xs, xl, ps, &wl)?;
        let zl = Layout::contiguous(&shape);
        let (y, _) = unit.bn.cpu_fwd(&z, &zl, ps, &gl, ps, &bl)?;
        let (out, out_shape) = self.proj.forward((&y, &zl), (ps, pl))?;
        let out = tensor_of(out, out_shape)?;
        let down = Some((tensor_of(z, shape.clone())?, tensor_of(y, shape)?));
        Ok(KvSaved { down, out })
    }

    /// The gradient of the norm's output `xn` for the branch's output gradient `dy`.
    fn backward(
        &self,
        xn: &Tensor,
        saved: &KvSaved,
        params: &Tensor,
        dy: &[f32],
        d_params: &mut [f32],
    ) -> Result<Tensor> {
        let (unit, (z, y)) = match (&self.down, &saved.down) {
            (None, None) => return self.proj.backward(xn, params, dy, d_params),
            (Some(unit), Some(maps)) => (unit, maps),
            _ => bail!("attention: a branch's down-sampling and its saved maps disagree"),
        };
        let dy = self.proj.backward(y, params, dy, d_params)?;
        match unit_backward(
            unit,
            (UnitInput::Tensor(xn), true),
            params,
            (z, &dy),
            d_params,
        )? {
            Some(dx) => Ok(dx),
            None => bail!("attention: the down-sampling gave no input gradient"),
        }
    }
}

/// The op: its steps, where the norm's and the layer scale's parameters lie, the sizes, and
/// what the forward kept for the backward.
struct MqaTrain {
    norm: (BatchNormTrain, usize),
    query: Proj,
    key: KvOp,
    value: KvOp,
    output: Proj,
    scale_at: Option<usize>,
    dims: Dims,
    saved: Mutex<Option<Saved>>,
}

/// The forward's maps: the norm's output, the query, the two branches, the attention weights
/// `[B, heads, L, P]`, the heads' outputs, and the output projection's where a layer scale
/// follows it.
struct Saved {
    xn: Tensor,
    q: Tensor,
    k: KvSaved,
    v: KvSaved,
    a: Vec<f32>,
    o: Tensor,
    projected: Option<Tensor>,
}

/// An operand and its layout, as a custom op's forward receives them.
type Operand<'a> = (&'a CpuStorage, &'a Layout);

impl MqaTrain {
    /// The op of the block `args` on `x`, its parameters appended to `joint`; `None` where a
    /// convolution has no kernel of ours.
    fn new(x: &Tensor, args: &MqaArgs, joint: &mut Joint) -> Result<Option<Self>> {
        if args.norm.act != Act::Identity {
            bail!("attention: the norm before it takes no activation")
        }
        let f32_cpu = x.device().is_cpu() && x.dtype() == DType::F32;
        let (b, c, h, w) = x.dims4()?;
        let norm_at = joint.push(args.norm.weight)?;
        joint.push(args.norm.bias)?;
        let heads_shape = Shape::from((b, args.heads * args.value_dim, h, w));
        let (Some(query), Some(key), Some(value), Some(output)) = (
            Proj::new(f32_cpu, x.shape(), args.query, joint)?,
            KvOp::new(x, &args.key, joint)?,
            KvOp::new(x, &args.value, joint)?,
            Proj::new(f32_cpu, &heads_shape, args.output, joint)?,
        ) else {
            return Ok(None);
        };
        let scale_at = args.layer_scale.map(|g| joint.push(g)).transpose()?;
        let (l, p) = (h * w, key.positions);
        if value.positions != p {
            bail!("attention: {p} key but {} value positions", value.positions)
        }
        let (heads, kd, vd) = (args.heads, args.key_dim, args.value_dim);
        let dims = Dims {
            b,
            heads,
            kd,
            vd,
            l,
            p,
        };
        check_widths(&dims, c, [&query, &key.proj, &value.proj, &output])?;
        Ok(Some(Self {
            norm: (BatchNormTrain::new(args.norm.eps, Act::Identity), norm_at),
            query,
            key,
            value,
            output,
            scale_at,
            dims,
            saved: Mutex::new(None),
        }))
    }

    fn scale(&self) -> f32 {
        1.0 / (self.dims.kd as f32).sqrt()
    }

    /// The norm's weight and bias layouts in the joint operand laid out as `pl`.
    fn norm_layouts(&self, c: usize, pl: &Layout) -> [Layout; 2] {
        let start = pl.start_offset() + self.norm.1;
        [
            Layout::contiguous_with_offset(c, start),
            Layout::contiguous_with_offset(c, start + c),
        ]
    }

    /// The layer scale on the output projection's values `proj`, and those values where the
    /// layer scale's backward reads them.
    fn scaled(
        &self,
        proj: (CpuStorage, Shape),
        (ps, pl): Operand,
    ) -> Result<(Vec<f32>, Option<Tensor>)> {
        let (CpuStorage::F32(p), shape) = proj else {
            bail!("attention: expected f32 values")
        };
        let Some(at) = self.scale_at else {
            return Ok((p, None));
        };
        let y = layer_scale(&p, &shape, (ps, pl), at)?;
        Ok((y, Some(Tensor::from_vec(p, shape, &Device::Cpu)?)))
    }

    /// The batch norm's backward: the block input's gradient for the norm's output gradient
    /// `dxn`, the norm's parameters' into `d_params`.
    fn norm_backward(&self, x: &Tensor, dxn: &Tensor, d_params: &mut [f32]) -> Result<Vec<f32>> {
        let (bn, at) = &self.norm;
        let (n, c, s) = channel_geometry(x.shape(), "attention")?;
        let (dx, d_norm) = read_f32(x, |x| {
            read_f32(dxn, |g| -> Result<_> {
                let grads = bn.grads(x, g, (n, c, s))?;
                let dx = bn.input_grad(&grads, (x, g), (c, s))?.all();
                Ok((dx, [grads.weight, grads.bias].concat()))
            })
        })???;
        d_params[*at..at + 2 * c].copy_from_slice(&d_norm);
        Ok(dx)
    }
}

impl CustomOp2 for MqaTrain {
    fn name(&self) -> &'static str {
        "attention-train"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let [gl, bl] = self.norm_layouts(xl.shape().dims4()?.1, pl);
        let (xn, shape) = self.norm.0.cpu_fwd(xs, xl, ps, &gl, ps, &bl)?;
        let q = self
            .query
            .forward((&xn, &Layout::contiguous(&shape)), (ps, pl))?;
        let (q, xn) = (tensor_of(q.0, q.1)?, tensor_of(xn, shape.clone())?);
        let (k, v) = (
            self.key.forward(&xn, (ps, pl))?,
            self.value.forward(&xn, (ps, pl))?,
        );
        let d = self.dims;
        let a = read_f32(&q, |q| read_f32(&k.out, |k| weights(q, k, d, self.scale())))??;
        let o = CpuStorage::F32(read_f32(&v.out, |v| heads_out(&a, v, d))?);
        let o_shape = Shape::from((d.b, d.heads * d.vd, shape.dims()[2], shape.dims()[3]));
        let proj = self
            .output
            .forward((&o, &Layout::contiguous(&o_shape)), (ps, pl))?;
        let (mut y, projected) = self.scaled(proj, (ps, pl))?;
        for (y, &x) in y.iter_mut().zip(f32_slice(xs, xl, self.name())?) {
            *y += x;
        }
        let o = tensor_of(o, o_shape)?;
        *self.saved.lock().unwrap_or_else(|e| e.into_inner()) = Some(Saved {
            xn,
            q,
            k,
            v,
            a,
            o,
            projected,
        });
        Ok((CpuStorage::F32(y), shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let sv = take_saved(&self.saved, self.name())?;
        let params = params.detach();
        let dy = dy.contiguous()?;
        let mut d_params = vec![0f32; params.elem_count()];
        let d_projected = match (self.scale_at, &sv.projected) {
            (Some(at), Some(p)) => layer_scale_grad(p, &dy, &params, at, &mut d_params)?,
            _ => dy.clone(),
        };
        let d_o = read_f32(&d_projected, |g| {
            self.output.backward(&sv.o, &params, g, &mut d_params)
        })??;
        let (dq, dk, dv) = read_f32(&d_o, |d_o| {
            read_f32(&sv.q, |q| {
                read_f32(&sv.k.out, |k| {
                    read_f32(&sv.v.out, |v| {
                        heads_backward((q, k, v, &sv.a), d_o, self.dims, self.scale())
                    })
                })
            })
        })????;
        let dxq = self.query.backward(&sv.xn, &params, &dq, &mut d_params)?;
        let dxk = self
            .key
            .backward(&sv.xn, &sv.k, &params, &dk, &mut d_params)?;
        let dxv = self
            .value
            .backward(&sv.xn, &sv.v, &params, &dv, &mut d_params)?;
        let dxn = ((dxq + dxk)? + dxv)?;
        let dx = self.norm_backward(x, &dxn, &mut d_params)?;
        let dx = Tensor::from_vec(dx, x.shape(), &Device::Cpu)?;
        add_residual(&dx, &dy)?;
        let d_params = Tensor::from_vec(d_params, params.shape(), &Device::Cpu)?;
        Ok((Some(dx), Some(d_params)))
    }
}

/// The attention weights `[B, heads, L, P]`: for image `b` and head `h`, the softmax over `p`
/// of `scale · Σ_d q[b, h·kd + d, l] · k[b, d, p]`.
fn weights(q: &[f32], k: &[f32], d: Dims, scale: f32) -> Vec<f32> {
    let mut s = vec![0f32; d.b * d.heads * d.l * d.p];
    s.par_chunks_mut(d.l * d.p).enumerate().for_each(|(i, s)| {
        let (b, h) = (i / d.heads, i % d.heads);
        let qh = Mat::new(&q[(b * d.heads + h) * d.kd * d.l..], d.kd, d.l).t();
        let kb = Mat::new(&k[b * d.kd * d.p..], d.kd, d.p);
        matmul(MatMut::new(s, d.l, d.p), qh, kb, false, Threads::One);
    });
    softmax_rows(&s, d.p, scale)
}

/// The heads' outputs `[B, heads·vd, L]`: `o[b, h·vd + e, l] = Σ_p v[b, e, p] · a[b, h, l, p]`.
fn heads_out(a: &[f32], v: &[f32], d: Dims) -> Vec<f32> {
    let mut o = vec![0f32; d.b * d.heads * d.vd * d.l];
    o.par_chunks_mut(d.vd * d.l).enumerate().for_each(|(i, o)| {
        let b = i / d.heads;
        let vb = Mat::new(&v[b * d.vd * d.p..], d.vd, d.p);
        let ah = Mat::new(&a[i * d.l * d.p..], d.l, d.p).t();
        matmul(MatMut::new(o, d.vd, d.l), vb, ah, false, Threads::One);
    });
    o
}

/// `(dq, dk, dv)` for the heads' output gradient `d_o`, image by image (the shared key and
/// value heads' gradients summed over the query heads in order).
fn heads_backward(
    (q, k, v, a): (&[f32], &[f32], &[f32], &[f32]),
    d_o: &[f32],
    d: Dims,
    scale: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (hq, hl) = (d.heads * d.kd * d.l, d.heads * d.l * d.p);
    let mut dq = vec![0f32; d.b * hq];
    let mut dk = vec![0f32; d.b * d.kd * d.p];
    let mut dv = vec![0f32; d.b * d.vd * d.p];
    dq.par_chunks_mut(hq)
        .zip(dk.par_chunks_mut(d.kd * d.p))
        .zip(dv.par_chunks_mut(d.vd * d.p))
        .enumerate()
        .for_each(|(b, ((dq, dk), dv))| {
            let kb = Mat::new(&k[b * d.kd * d.p..], d.kd, d.p);
            let vb = Mat::new(&v[b * d.vd * d.p..], d.vd, d.p);
            let mut da = vec![0f32; d.l * d.p];
            for h in 0..d.heads {
                let i = b * d.heads + h;
                let ah = &a[b * hl + h * d.l * d.p..][..d.l * d.p];
                let doh = Mat::new(&d_o[i * d.vd * d.l..], d.vd, d.l);
                let accumulate = h > 0;
                matmul(
                    MatMut::new(dv, d.vd, d.p),
                    doh,
                    Mat::new(ah, d.l, d.p),
                    accumulate,
                    Threads::One,
                );
                matmul(
                    MatMut::new(&mut da, d.l, d.p),
                    doh.t(),
                    vb,
                    false,
                    Threads::One,
                );
                let ds = softmax_rows_grad(ah, &da, d.p, scale);
                let dsm = Mat::new(&ds, d.l, d.p);
                let dqh = &mut dq[h * d.kd * d.l..(h + 1) * d.kd * d.l];
                matmul(
                    MatMut::new(dqh, d.kd, d.l),
                    kb,
                    dsm.t(),
                    false,
                    Threads::One,
                );
                let qh = Mat::new(&q[i * d.kd * d.l..], d.kd, d.l);
                matmul(
                    MatMut::new(dk, d.kd, d.p),
                    qh,
                    dsm,
                    accumulate,
                    Threads::One,
                );
            }
        });
    (dq, dk, dv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::uniform;
    use crate::ops::ConvGeometry;
    use crate::ops::{batch_norm_train, channel_affine, conv1x1, conv_bn_train, softmax_last_dim};
    use candle_core::Var;
    use rand::{rngs::StdRng, SeedableRng};

    struct Params {
        norm: [Var; 2],
        query: Var,
        downs: [Option<[Var; 3]>; 2],
        projs: [Var; 2],
        output: Var,
        scale: Var,
    }

    const GEO: ConvGeometry = ConvGeometry {
        stride: 2,
        padding: 1,
        groups: 6,
    };

    fn norm_act<'a>(g: &'a Var, b: &'a Var) -> NormAct<'a> {
        NormAct {
            weight: g.as_tensor(),
            bias: b.as_tensor(),
            eps: 1e-5,
            act: Act::Identity,
        }
    }

    /// The block as candle ops, as the model composes it.
    fn composed(x: &Tensor, p: &Params, (heads, kd, vd): (usize, usize, usize)) -> Result<Tensor> {
        let (b, _, h, w) = x.dims4()?;
        let l = h * w;
        let (xn, _) = batch_norm_train(x, &p.norm[0], &p.norm[1], 1e-5, Act::Identity)?;
        let q = conv1x1(&xn, &p.query)?
            .reshape((b, heads, kd, l))?
            .transpose(2, 3)?
            .reshape((b, heads * l, kd))?;
        let branch = |i: usize| -> Result<Tensor> {
            let x = match &p.downs[i] {
                Some([wt, g, bb]) => {
                    conv_bn_train(&xn, wt, GEO, norm_act(g, bb))?
                        .expect("a kernel")
                        .0
                }
                None => xn.clone(),
            };
            conv1x1(&x, &p.projs[i])?.flatten_from(2)
        };
        let (k, v) = (branch(0)?, branch(1)?.transpose(1, 2)?);
        let scale = 1.0 / (kd as f64).sqrt();
        let attn = softmax_last_dim(&q.contiguous()?.matmul(&k.contiguous()?)?, scale)?;
        let o = attn
            .matmul(&v.contiguous()?)?
            .reshape((b, heads, l, vd))?
            .transpose(2, 3)?
            .reshape((b, heads * vd, h, w))?;
        let y = conv1x1(&o, &p.output)?;
        let y = channel_affine(&y, &p.scale, &p.scale.zeros_like()?, Act::Identity)?;
        y + x
    }

    /// Output, statistics and every gradient of the op against the composition, with and
    /// without down-sampled key and value branches.
    #[test]
    fn matches_the_composed_block() -> Result<()> {
        let mut rng = StdRng::seed_from_u64(51);
        let cases = [
            ([3, 6, 6, 5], 2, 4, 5, false),
            ([3, 6, 6, 5], 2, 4, 5, true),
            ([4, 6, 6, 6], 4, 16, 16, true),
            ([4, 6, 3, 3], 4, 16, 16, false),
            ([2, 6, 14, 14], 4, 8, 8, true),
        ];
        for (shape, heads, kd, vd, down) in cases {
            let c = shape[1];
            let var = |shape: &[usize], rng: &mut StdRng| Var::from_tensor(&uniform(shape, rng)?);
            let x = var(&shape, &mut rng)?;
            let unit = |rng: &mut StdRng| -> Result<Option<[Var; 3]>> {
                down.then(|| Ok([var(&[c, 1, 3, 3], rng)?, var(&[c], rng)?, var(&[c], rng)?]))
                    .transpose()
            };
            let p = Params {
                norm: [var(&[c], &mut rng)?, var(&[c], &mut rng)?],
                query: var(&[heads * kd, c, 1, 1], &mut rng)?,
                downs: [unit(&mut rng)?, unit(&mut rng)?],
                projs: [
                    var(&[kd, c, 1, 1], &mut rng)?,
                    var(&[vd, c, 1, 1], &mut rng)?,
                ],
                output: var(&[c, heads * vd, 1, 1], &mut rng)?,
                scale: var(&[c], &mut rng)?,
            };
            let kv = |i: usize| KvArgs {
                down: p.downs[i].as_ref().map(|[wt, g, b]| ChainUnit {
                    weight: wt.as_tensor(),
                    geo: GEO,
                    norm: norm_act(g, b),
                }),
                proj: p.projs[i].as_tensor(),
            };
            let args = MqaArgs {
                norm: norm_act(&p.norm[0], &p.norm[1]),
                query: &p.query,
                key: kv(0),
                value: kv(1),
                output: &p.output,
                layer_scale: Some(&p.scale),
                heads,
                key_dim: kd,
                value_dim: vd,
            };
            let (fused, stats) = mqa_train(&x, &args)?.expect("kernels");
            assert_eq!(stats.len(), if down { 3 } else { 1 });
            let apart = composed(&x, &p, (heads, kd, vd))?;
            let r = uniform(fused.dims(), &mut rng)?;
            let mut vars = vec![&x, &p.norm[0], &p.norm[1], &p.query, &p.output, &p.scale];
            vars.extend(p.projs.iter());
            // The key's down-sampling bias shifts every key of a query's row alike, which the
            // softmax ignores: its gradient is rounding noise, checked to be that below.
            vars.extend(p.downs.iter().flatten().flat_map(|[w, g, b]| [w, g, b]));
            let key_bias = down.then_some(vars.len() - 3);
            let values = |y: &Tensor| -> Result<Vec<Tensor>> {
                let grads = (y * &r)?.sum_all()?.backward()?;
                let mut out = vec![y.clone()];
                for v in &vars {
                    out.push(grads.get(v.as_tensor()).expect("a gradient").clone());
                }
                Ok(out)
            };
            let (got, want) = (values(&fused)?, values(&apart)?);
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                let what = format!("{shape:?}, down {down}, value {i}");
                if Some(i) == key_bias {
                    let noise = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
                    let scale = want[1].abs()?.max_all()?.to_scalar::<f32>()?;
                    assert!(noise < 1e-3 * scale, "{what}: {noise} against {scale}");
                } else {
                    crate::ops::testutil::assert_close(a, b, &what)?;
                }
            }
        }
        Ok(())
    }
}
