//! A run of train-mode blocks as one candle op. Each block is convolution + batch norm
//! (+ activation) units in order, then an optional per-channel layer scale and an optional
//! residual add of the block's input.
//!
//! Candle gives every node of its graph a zero-filled gradient buffer and adds each incoming
//! gradient into it. Run unit by unit, a UIB block pays that for every intermediate map (the
//! expanded ones the largest), for the layer scale's output and twice for the residual add,
//! and every block pays it for its input. Here the gradients pass from unit to unit and block
//! to block inside the op; only the run's input and its one parameter operand get candle's
//! buffers. The kernels are those of [`super::conv_bn_train`] and [`super::channel_affine`], so
//! values, statistics and gradients are theirs, but where a layer scale follows a batch norm
//! without activation: it is folded into that batch norm's weight and bias (same values up to
//! rounding), so no pass of its own applies it or saves its input.
//!
//! Within a block, and from one block to the next where the first ends on its batch norm, a
//! convolution that can reads its input image by image from the convolution output before it
//! ([`super::images`]), so the maps between them are never written whole.
//!
//! Consecutive blocks on small maps whose units are all 1×1 and depthwise convolutions run as an
//! op of their own with the batch innermost ([`super::batch_inner`]):
//! there the batch-norm sums run in another order, so the same values up to rounding.

use std::sync::Mutex;

use candle_core::{bail, CpuStorage, CustomOp2, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::act::{affine_act, channel_geometry, grad_sums, Act, Activated, InputGrad};
use super::batch_inner::{InnerDepthwise, Planes};
use super::batchnorm::{conv_then_fit, BatchNormTrain, BatchStats, StatsCell};
use super::conv_bn::{ConvGeometry, NormAct};
use super::conv_op::{ConvOp, ImageDone};
use super::cpu::{f32_slice, read_f32, update_f32};
use super::images::{Batch, ImageSource};
use super::{kernel_op, route_shapes, Pass, Route};

/// One convolution + batch norm unit of a block: the convolution's weight and geometry, the
/// batch norm's parameters and activation.
pub struct ChainUnit<'a> {
    pub weight: &'a Tensor,
    pub geo: ConvGeometry,
    pub norm: NormAct<'a>,
}

/// A block of [`ChainUnit`]s applied in order, then `· layer_scale` per channel, then `+` the
/// block's input where `residual`.
pub struct ChainBlock<'a> {
    pub units: Vec<ChainUnit<'a>>,
    pub layer_scale: Option<&'a Tensor>,
    pub residual: bool,
}

/// `blocks` applied in order to `x`, with each unit's batch statistics, block by block. The
/// same values and gradients as the units run one by one ([`super::conv_bn_train`]), then
/// [`super::channel_affine`] and an add.
///
/// `None` where a unit has no kernel of ours ([`super::conv_bn_train`] would be `None`): the
/// caller runs the blocks unit by unit then.
pub fn chain_train(
    x: &Tensor,
    blocks: &[ChainBlock],
) -> Result<Option<(Tensor, Vec<Vec<BatchStats>>)>> {
    if blocks.is_empty() {
        bail!("conv chain: a run without blocks")
    }
    let (mut y, mut stats) = (x.clone(), Vec::with_capacity(blocks.len()));
    for (run, planes) in runs(x, blocks)? {
        let Some((out, s)) = run_train(&y, run, planes)? else {
            return Ok(None);
        };
        y = out;
        stats.extend(s);
    }
    Ok(Some((y, stats)))
}

/// `blocks` cut into runs of consecutive blocks that carry their maps with the batch innermost
/// (from the [`Planes`] of the run's input) or do not: a block does where its input's planes
/// are small and every unit is a 1×1 or depthwise convolution with a kernel of ours.
fn runs<'b, 'a>(
    x: &Tensor,
    blocks: &'b [ChainBlock<'a>],
) -> Result<Vec<(&'b [ChainBlock<'a>], Option<Planes>)>> {
    let mut shape = x.shape().clone();
    let mut starts: Vec<(usize, Option<Planes>)> = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        let planes = match Planes::of_small(&shape)? {
            Some(p) if runs_inner(x, block, &shape)? => Some(p),
            _ => None,
        };
        if starts.last().map(|s| s.1.is_some()) != Some(planes.is_some()) {
            starts.push((i, planes));
        }
        for u in &block.units {
            shape = out_shape(&shape, u.weight.shape(), u.geo)?;
        }
    }
    let ends = starts.iter().skip(1).map(|s| s.0).chain([blocks.len()]);
    Ok(starts
        .iter()
        .zip(ends)
        .map(|(&(start, planes), end)| (&blocks[start..end], planes))
        .collect())
}

/// Whether every unit of `block`, on an input of shape `input`, runs on a kernel of ours that
/// can take a map with the batch innermost: a stride-1 1×1 convolution or a depthwise one with
/// an odd kernel.
fn runs_inner(x: &Tensor, block: &ChainBlock, input: &Shape) -> Result<bool> {
    let mut shape = input.clone();
    for u in &block.units {
        let (w, g) = (u.weight.shape(), u.geo);
        let inner = match route_shapes(f32_cpu(x, u), &shape, w, (g.stride, g.padding, g.groups))? {
            Route::Pointwise => true,
            Route::Depthwise => w.dims4()?.2 % 2 == 1,
            Route::Dense | Route::Generic => false,
        };
        if !inner {
            return Ok(false);
        }
        shape = out_shape(&shape, w, g)?;
    }
    Ok(true)
}

/// Whether the run's input `x` and unit `u`'s tensors are all f32 on the CPU.
fn f32_cpu(x: &Tensor, u: &ChainUnit) -> bool {
    [x, u.weight, u.norm.weight, u.norm.bias]
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// The run `blocks` on `x` as one op; with `planes`, the maps carried with the batch innermost
/// from `x`'s planes on, entered before the op and left after it.
fn run_train(
    x: &Tensor,
    blocks: &[ChainBlock],
    planes: Option<Planes>,
) -> Result<Option<(Tensor, Vec<Vec<BatchStats>>)>> {
    let x = match planes {
        Some(p) => p.enter(x)?,
        None => x.clone(),
    };
    let (mut shape, mut planes) = (x.shape().clone(), planes);
    let mut joint = Joint::default();
    let mut ops = Vec::with_capacity(blocks.len());
    for block in blocks {
        match BlockOp::new(&x, block, (&mut shape, &mut planes), &mut joint)? {
            Some(op) => ops.push(op),
            None => return Ok(None),
        }
    }
    link_blocks(&mut ops);
    let cells: Vec<Vec<StatsCell>> = ops
        .iter()
        .map(|b| b.units.iter().map(|u| u.bn.stats()).collect())
        .collect();
    let op = ChainTrain {
        blocks: ops,
        saved: Mutex::new(None),
    };
    let params = Tensor::cat(&joint.pieces, 0)?;
    let mut y = x.contiguous()?.apply_op2(&params, op)?;
    if let Some(p) = planes {
        y = p.leave(&y)?;
    }
    let stats = cells
        .iter()
        .map(|b| b.iter().map(StatsCell::get).collect::<Result<_>>())
        .collect::<Result<_>>()?;
    Ok(Some((y, stats)))
}

/// Marks where a block's first unit reads the block before's output image by image, so that
/// output is never written whole: the block before ends on its last unit's batch norm (no layer
/// scale, no residual), this block adds no residual (which would read its input whole), and its
/// first convolution can read an input so.
fn link_blocks(ops: &mut [BlockOp]) {
    for k in 1..ops.len() {
        let (before, after) = ops.split_at_mut(k);
        let (prev, block) = (&mut before[k - 1], &mut after[0]);
        let lazy = prev.ends_on_norm() && !block.residual && block.first_can_read_images;
        block.units[0].reads_images = lazy;
        prev.output_lazy = lazy;
    }
}

/// The joint parameter operand as it is laid out: its pieces in order, their total length.
#[derive(Default)]
pub(super) struct Joint {
    pub(super) pieces: Vec<Tensor>,
    len: usize,
}

impl Joint {
    /// Appends `t`, flattened; returns where it starts.
    pub(super) fn push(&mut self, t: &Tensor) -> Result<usize> {
        let at = self.len;
        self.len += t.elem_count();
        self.pieces.push(t.flatten_all()?);
        Ok(at)
    }
}

/// The output shape of convolution `w` with geometry `g` on an input of shape `x`.
pub(super) fn out_shape(x: &Shape, w: &Shape, g: ConvGeometry) -> Result<Shape> {
    let (b, _, h, wd) = x.dims4()?;
    let (c, _, kh, kw) = w.dims4()?;
    let side = |n: usize, k: usize| match (n + 2 * g.padding).checked_sub(k) {
        Some(room) if g.stride > 0 => Ok(room / g.stride + 1),
        _ => bail!(
            "conv chain: kernel {k} stride {} does not fit {n}",
            g.stride
        ),
    };
    Ok(Shape::from((b, c, side(h, kh)?, side(wd, kw)?)))
}

/// A tensor of `storage`'s f32 values, without a copy.
pub(super) fn tensor_of(storage: CpuStorage, shape: Shape) -> Result<Tensor> {
    let CpuStorage::F32(v) = storage else {
        bail!("conv chain: expected f32 values")
    };
    Tensor::from_vec(v, shape, &Device::Cpu)
}

/// The layer scale `gamma` (at `at` in the joint operand `(ps, pl)`) applied to `y` of shape
/// `shape`, as [`super::channel_affine`] applies it.
pub(super) fn layer_scale(
    y: &[f32],
    shape: &Shape,
    (ps, pl): (&CpuStorage, &Layout),
    at: usize,
) -> Result<Vec<f32>> {
    let (_, c, s) = channel_geometry(shape, "layer scale")?;
    let start = pl.start_offset() + at;
    let gamma = &ps.as_slice::<f32>()?[start..start + c];
    Ok(affine_act(y, c, s, gamma, &vec![0f32; c], Act::Identity))
}

/// What an op's forward left in `slot` for its backward, taken out.
pub(super) fn take_saved<T>(slot: &Mutex<Option<T>>, op: &str) -> Result<T> {
    match slot.lock().unwrap_or_else(|e| e.into_inner()).take() {
        Some(saved) => Ok(saved),
        None => bail!("{op}: backward without a forward"),
    }
}

/// Adds the residual's gradient `dy` into the gradient `grad` of a block's input.
pub(super) fn add_residual(grad: &Tensor, dy: &Tensor) -> Result<()> {
    update_f32(grad, dy, add_into)
}

/// `acc += v`, element by element, on every worker.
fn add_into(acc: &mut [f32], v: &[f32]) {
    const CHUNK: usize = 1 << 14;
    acc.par_chunks_mut(CHUNK)
        .zip(v.par_chunks(CHUNK))
        .for_each(|(a, v)| a.iter_mut().zip(v).for_each(|(a, v)| *a += v));
}

/// A unit's convolution and batch norm, and where its parameters lie in the joint operand:
/// the weight from `at`, then the batch norm's weight and bias, `channels` each.
pub(super) struct UnitOp {
    pub(super) conv: Box<dyn ConvOp>,
    pub(super) bn: BatchNormTrain,
    weight_shape: Shape,
    at: usize,
    channels: usize,
    /// Whether the convolution reads its input, the unit before's output (for a block's first
    /// unit, the block before's last unit's), image by image from that unit's convolution
    /// output, so that it is never written whole.
    reads_images: bool,
}

impl UnitOp {
    /// The op of unit `u` on an input of shape `input`, its parameters appended to `joint`;
    /// `None` where the convolution has no kernel of ours. `x` is the run's input; a map
    /// carried with the batch innermost has its `planes`.
    pub(super) fn new(
        x: &Tensor,
        u: &ChainUnit,
        (input, planes): (&Shape, Option<Planes>),
        joint: &mut Joint,
    ) -> Result<Option<Self>> {
        let (w, g) = (u.weight.shape(), u.geo);
        let route = route_shapes(f32_cpu(x, u), input, w, (g.stride, g.padding, g.groups))?;
        let conv: Box<dyn ConvOp> = match (planes, route) {
            (Some(p), Route::Depthwise) => Box::new(InnerDepthwise::new(p, w, g.stride)?),
            _ => match kernel_op(route, input, w, (g.stride, g.padding), Pass::Training)? {
                Some(conv) => conv,
                None => return Ok(None),
            },
        };
        let channels = w.dims4()?.0;
        if u.norm.weight.dims() != [channels] || u.norm.bias.dims() != [channels] {
            bail!(
                "conv chain: batch norm {:?} / {:?} do not match {channels} output channels",
                u.norm.weight.shape(),
                u.norm.bias.shape()
            )
        }
        let at = joint.push(u.weight)?;
        joint.push(u.norm.weight)?;
        joint.push(u.norm.bias)?;
        Ok(Some(Self {
            conv,
            bn: BatchNormTrain::new(u.norm.eps, u.norm.act),
            weight_shape: w.clone(),
            at,
            channels,
            reads_images: false,
        }))
    }

    /// The layouts of the weight, the batch norm's weight and its bias in an operand laid out
    /// as `pl`.
    pub(super) fn layouts(&self, pl: &Layout) -> [Layout; 3] {
        let start = pl.start_offset() + self.at;
        let norm = start + self.weight_shape.elem_count();
        [
            Layout::contiguous_with_offset(&self.weight_shape, start),
            Layout::contiguous_with_offset(self.channels, norm),
            Layout::contiguous_with_offset(self.channels, norm + self.channels),
        ]
    }

    /// Where the batch norm's weight starts in the joint operand.
    fn norm_at(&self) -> usize {
        self.at + self.weight_shape.elem_count()
    }
}

/// One block's units, and where its layer scale lies in the joint operand, if it has one.
struct BlockOp {
    units: Vec<UnitOp>,
    scale_at: Option<usize>,
    residual: bool,
    /// Whether the first unit's convolution can read its input image by image.
    first_can_read_images: bool,
    /// Whether the next block's first unit reads this block's output image by image from its
    /// last unit's convolution output, so that the output is not written whole.
    output_lazy: bool,
    /// Whether the layer scale `g` is folded into the last unit's batch norm, whose activation
    /// is the identity: `g (z a + b) = z (a g) + b g`, so no pass of its own applies it.
    fold_scale: bool,
}

/// What a block's forward keeps for its backward: the block's input where it was written whole
/// (the run's own input aside), each unit's convolution output, the inputs of units after the
/// first (`None` where the unit reads it image by image), and the last unit's output where a
/// layer scale reads it.
struct Saved {
    input: Option<Tensor>,
    conv_outs: Vec<Tensor>,
    inputs: Vec<Option<Tensor>>,
    last: Option<Tensor>,
}

impl Saved {
    /// The last unit's convolution output.
    fn last_conv_out(&self) -> Result<&Tensor> {
        match self.conv_outs.last() {
            Some(z) => Ok(z),
            None => bail!("conv chain: a block kept no convolution output"),
        }
    }
}

/// One unit's forward: its convolution's output and shape, and its output where it is written
/// whole (the next unit reads it image by image otherwise).
struct UnitOut {
    z: CpuStorage,
    shape: Shape,
    y: Option<CpuStorage>,
}

/// A unit's input: stored values, or the unit before's output computed image by image.
#[derive(Clone, Copy)]
enum UnitIn<'a> {
    Stored(&'a CpuStorage, &'a Layout),
    Images(&'a Activated<'a>, &'a Shape),
}

/// A block's output values and shape.
type Values = (Vec<f32>, Shape);

impl BlockOp {
    /// The op of `block` on an input of shape `shape` (and `planes`, where it is carried with
    /// the batch innermost), which become its output's; its parameters appended to `joint`.
    /// `None` where a convolution has no kernel of ours.
    fn new(
        x: &Tensor,
        block: &ChainBlock,
        (shape, planes): (&mut Shape, &mut Option<Planes>),
        joint: &mut Joint,
    ) -> Result<Option<Self>> {
        let input = shape.clone();
        let mut units = Vec::with_capacity(block.units.len());
        let mut first_can_read_images = false;
        for u in &block.units {
            let Some(mut unit) = UnitOp::new(x, u, (shape, *planes), joint)? else {
                return Ok(None);
            };
            // With the batch innermost the map is one image: a depthwise (grouped) kernel
            // reads it channel row by channel row, a 1×1 product reads it whole.
            let can_read = (planes.is_none() || u.geo.groups > 1)
                && unit
                    .conv
                    .image_reader()
                    .is_some_and(|r| r.reads_images(shape, u.weight.shape()));
            if units.is_empty() {
                first_can_read_images = can_read;
            } else {
                unit.reads_images = can_read;
            }
            *shape = match planes {
                Some(p) => {
                    *p = p.after(u.weight.shape(), u.geo.stride)?;
                    p.inner_shape(unit.channels)
                }
                None => out_shape(shape, u.weight.shape(), u.geo)?,
            };
            units.push(unit);
        }
        if units.is_empty() || (block.residual && *shape != input) {
            bail!(
                "conv chain: a block of {} units from {input:?} to {shape:?}, residual: {}",
                units.len(),
                block.residual
            )
        }
        let scale_at = match block.layer_scale {
            Some(gamma) if gamma.dims() != [shape.dims4()?.1] => {
                bail!(
                    "conv chain: layer scale {:?} does not match {shape:?}",
                    gamma.shape()
                )
            }
            Some(gamma) => Some(joint.push(gamma)?),
            None => None,
        };
        let ends_on_identity = block
            .units
            .last()
            .is_some_and(|u| u.norm.act == Act::Identity);
        Ok(Some(Self {
            units,
            scale_at,
            residual: block.residual,
            first_can_read_images,
            output_lazy: false,
            fold_scale: scale_at.is_some() && ends_on_identity,
        }))
    }

    /// The last unit's batch-norm weight and bias times the layer scale, `[γ g, β g]`, where
    /// the scale is folded into them.
    fn folded_norm(&self, (ps, pl): (&CpuStorage, &Layout)) -> Result<Option<CpuStorage>> {
        let (Some(at), true) = (self.scale_at, self.fold_scale) else {
            return Ok(None);
        };
        let (p, c, norm) = (
            f32_slice(ps, pl, "conv chain")?,
            self.last()?.channels,
            self.last()?.norm_at(),
        );
        let g = &p[at..at + c];
        let folded = p[norm..norm + 2 * c]
            .iter()
            .zip(g.iter().cycle())
            .map(|(v, g)| v * g);
        Ok(Some(CpuStorage::F32(folded.collect())))
    }

    /// The gradients of the last unit's batch-norm weight and bias and of the layer scale from
    /// those of the folded `[γ g, β g]`, which the unit's backward left in `d_params`:
    /// `dγ = g d(γg)`, `dβ = g d(βg)`, `dg = γ d(γg) + β d(βg)`.
    fn unfold_scale_grads(&self, params: &Tensor, d_params: &mut [f32]) -> Result<()> {
        let (Some(at), true) = (self.scale_at, self.fold_scale) else {
            return Ok(());
        };
        let (c, norm) = (self.last()?.channels, self.last()?.norm_at());
        read_f32(params, |p| {
            for ch in 0..c {
                let (w, b) = (norm + ch, norm + c + ch);
                let (dw, db) = (f64::from(d_params[w]), f64::from(d_params[b]));
                d_params[at + ch] = (f64::from(p[w]) * dw + f64::from(p[b]) * db) as f32;
                d_params[w] = (f64::from(p[at + ch]) * dw) as f32;
                d_params[b] = (f64::from(p[at + ch]) * db) as f32;
            }
        })
    }

    /// Whether the block's output is its last unit's batch-norm output (no layer scale, no
    /// residual).
    fn ends_on_norm(&self) -> bool {
        self.scale_at.is_none() && !self.residual
    }

    /// The last unit.
    fn last(&self) -> Result<&UnitOp> {
        match self.units.last() {
            Some(unit) => Ok(unit),
            None => bail!("conv chain: a block without units"),
        }
    }

    /// The block on `input` with the joint parameters `(ps, pl)`: its output, `None` where the
    /// next block reads it image by image from the last convolution output kept in `Saved`.
    fn forward(
        &self,
        input: UnitIn,
        (ps, pl): (&CpuStorage, &Layout),
    ) -> Result<(Option<Values>, Saved)> {
        let mut outs: Vec<UnitOut> = Vec::with_capacity(self.units.len());
        let folded = self.folded_norm((ps, pl))?;
        for (k, unit) in self.units.iter().enumerate() {
            let norm = folded.as_ref().filter(|_| k + 1 == self.units.len());
            let params = ((ps, pl), norm);
            // The block's input for the first unit, the unit before's output after it.
            let (z, shape) = match outs.last() {
                None => conv_and_fit(unit, input, params)?,
                Some(prev) => {
                    let layout = Layout::contiguous(&prev.shape);
                    match &prev.y {
                        Some(y) => conv_and_fit(unit, UnitIn::Stored(y, &layout), params)?,
                        None => {
                            let z = f32_slice(&prev.z, &layout, "conv chain")?;
                            let y = self.units[k - 1].bn.output(z, &prev.shape)?;
                            conv_and_fit(unit, UnitIn::Images(&y, &prev.shape), params)?
                        }
                    }
                }
            };
            let read_lazily = match self.units.get(k + 1) {
                Some(next) => next.reads_images,
                None => self.output_lazy,
            };
            let mut y = None;
            if !read_lazily {
                let zv = f32_slice(&z, &Layout::contiguous(&shape), "conv chain")?;
                y = Some(CpuStorage::F32(unit.bn.output(zv, &shape)?.all()));
            }
            outs.push(UnitOut { z, shape, y });
        }
        let Some(UnitOut {
            y: last_y,
            shape,
            z: last_z,
        }) = outs.pop()
        else {
            bail!("conv chain: a block without units")
        };
        let (conv_outs, inputs) = Self::keep(outs)?;
        let mut saved = Saved {
            input: None,
            conv_outs,
            inputs,
            last: None,
        };
        saved.conv_outs.push(tensor_of(last_z, shape.clone())?);
        let y = match last_y {
            None => return Ok((None, saved)),
            Some(CpuStorage::F32(y)) => y,
            Some(_) => bail!("conv chain: a block without f32 output"),
        };
        let (y, last) = self.finish(y, &shape, input, (ps, pl))?;
        saved.last = last;
        Ok((Some((y, shape)), saved))
    }

    /// The units' convolution outputs and the inputs of the units after the first, as tensors.
    fn keep(outs: Vec<UnitOut>) -> Result<(Vec<Tensor>, Vec<Option<Tensor>>)> {
        let mut conv_outs = Vec::with_capacity(outs.len() + 1);
        let mut inputs = Vec::with_capacity(outs.len());
        for out in outs {
            conv_outs.push(tensor_of(out.z, out.shape.clone())?);
            inputs.push(out.y.map(|y| tensor_of(y, out.shape)).transpose()?);
        }
        Ok((conv_outs, inputs))
    }

    /// The last unit's output `y` of shape `shape` through the layer scale and the residual add
    /// of `input`; with the unscaled output where the layer scale's backward reads it.
    fn finish(
        &self,
        mut y: Vec<f32>,
        shape: &Shape,
        input: UnitIn,
        (ps, pl): (&CpuStorage, &Layout),
    ) -> Result<(Vec<f32>, Option<Tensor>)> {
        let mut last = None;
        if let (Some(at), false) = (self.scale_at, self.fold_scale) {
            let scaled = layer_scale(&y, shape, (ps, pl), at)?;
            last = Some(Tensor::from_vec(y, shape.clone(), &Device::Cpu)?);
            y = scaled;
        }
        if self.residual {
            let UnitIn::Stored(xs, xl) = input else {
                bail!("conv chain: a residual block whose input is not stored")
            };
            add_into(&mut y, f32_slice(xs, xl, "conv chain")?);
        }
        Ok((y, last))
    }

    /// The gradient of the block's input `x` for the output gradient `dy` (where `want_dx`;
    /// otherwise possibly `None`), the parameters' gradients written into `d_params`.
    fn backward(
        &self,
        (x, want_dx): (UnitInput, bool),
        params: &Tensor,
        saved: Saved,
        dy: &Tensor,
        d_params: &mut [f32],
    ) -> Result<Option<Tensor>> {
        let mut grad = match (self.scale_at, &saved.last) {
            (Some(at), Some(last)) => layer_scale_grad(last, dy, params, at, d_params)?,
            _ => dy.clone(),
        };
        for (i, unit) in self.units.iter().enumerate().rev() {
            let input = match i.checked_sub(1) {
                None => x,
                Some(before) => match &saved.inputs[before] {
                    Some(y) => UnitInput::Tensor(y),
                    None => UnitInput::Images {
                        z: &saved.conv_outs[before],
                        bn: &self.units[before].bn,
                    },
                },
            };
            let dx = unit_backward(
                unit,
                (input, i > 0 || want_dx),
                params,
                (&saved.conv_outs[i], &grad),
                d_params,
            )?;
            if i + 1 == self.units.len() {
                self.unfold_scale_grads(params, d_params)?;
            }
            grad = match dx {
                Some(dx) => dx,
                None if i == 0 => return Ok(None),
                None => bail!("conv chain: unit {i} gave no input gradient"),
            };
        }
        if self.residual {
            add_residual(&grad, dy)?;
        }
        Ok(Some(grad))
    }
}

/// Unit `unit`'s convolution on `input`, then its batch norm fitted to the output: the
/// convolution's output and shape. The parameters are the joint operand's, the batch norm's
/// weight and bias from `norm` (`[weight, bias]`) where it is given.
fn conv_and_fit(
    unit: &UnitOp,
    input: UnitIn,
    ((ps, pl), norm): ((&CpuStorage, &Layout), Option<&CpuStorage>),
) -> Result<(CpuStorage, Shape)> {
    let [wl, mut gl, mut bl] = unit.layouts(pl);
    let norm_storage = match norm {
        Some(wb) => {
            gl = Layout::contiguous(unit.channels);
            bl = Layout::contiguous_with_offset(unit.channels, unit.channels);
            wb
        }
        None => ps,
    };
    let shape = match &input {
        UnitIn::Stored(_, l) => l.shape(),
        UnitIn::Images(_, shape) => *shape,
    };
    let n = shape.dims().first().copied().unwrap_or(0);
    let conv = |done: ImageDone| match input {
        UnitIn::Stored(xs, xl) => unit.conv.forward_each((xs, xl), (ps, &wl), done),
        UnitIn::Images(y, shape) => match unit.conv.image_reader() {
            Some(r) => r.forward_images((Batch::Images(y), shape), (ps, &wl), done),
            None => bail!("conv chain: a unit reads image by image without a kernel for it"),
        },
    };
    conv_then_fit((n, unit.channels), conv, &unit.bn, (norm_storage, &gl, &bl))
}

/// A unit's input as its backward reads it: a tensor, or the unit before's output computed
/// image by image from that unit's convolution output `z` and batch norm `bn`.
#[derive(Clone, Copy)]
pub(super) enum UnitInput<'a> {
    Tensor(&'a Tensor),
    Images {
        z: &'a Tensor,
        bn: &'a BatchNormTrain,
    },
}

impl UnitOp {
    /// The convolution's `(dx, dw)` on `input` for the output gradient `dy`.
    fn conv_grads(
        &self,
        (input, want_dx): (UnitInput, bool),
        w: &Tensor,
        dy: Batch,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (z, bn) = match input {
            UnitInput::Tensor(x) => return self.conv.grads(x, w, dy, want_dx),
            UnitInput::Images { z, bn } => (z, bn),
        };
        let Some(reader) = self.conv.image_reader() else {
            bail!("conv chain: a unit reads image by image without a kernel for it")
        };
        read_f32(z, |zv| -> Result<_> {
            let y = bn.output(zv, z.shape())?;
            let (dx, dw) = reader.grads_images((Batch::Images(&y), z.shape()), w, dy)?;
            Ok((Some(dx), Some(dw)))
        })?
    }
}

/// One unit's backward: its input's gradient (where wanted), its parameters' gradients written
/// into `d_params`. `z` is the convolution's output, `dy` the gradient of the unit's output.
pub(super) fn unit_backward(
    unit: &UnitOp,
    (x, want_dx): (UnitInput, bool),
    params: &Tensor,
    (z, dy): (&Tensor, &Tensor),
    d_params: &mut [f32],
) -> Result<Option<Tensor>> {
    let w = params
        .narrow(0, unit.at, unit.weight_shape.elem_count())?
        .reshape(&unit.weight_shape)?;
    let (n, c, s) = channel_geometry(z.shape(), "conv chain")?;
    let (dx, dw, norm) = read_f32(z, |z| {
        read_f32(dy, |g| -> Result<_> {
            let grads = unit.bn.grads(z, g, (n, c, s))?;
            let dz = unit.bn.input_grad(&grads, (z, g), (c, s))?;
            let (dx, dw) = unit.conv_grads((x, want_dx), &w, Batch::Images(&dz))?;
            Ok((dx, dw, [grads.weight, grads.bias].concat()))
        })
    })???;
    let Some(dw) = dw else {
        bail!("conv chain: a convolution gave no weight gradient")
    };
    let norm_at = unit.norm_at();
    read_f32(&dw, |dw| d_params[unit.at..norm_at].copy_from_slice(dw))?;
    d_params[norm_at..norm_at + 2 * c].copy_from_slice(&norm);
    Ok(dx)
}

/// The layer scale's gradient (`Σ dy · last` per channel, into `d_params` at `at`) and the
/// gradient of its input, `dy · gamma`, as [`super::channel_affine`] computes them.
pub(super) fn layer_scale_grad(
    last: &Tensor,
    dy: &Tensor,
    params: &Tensor,
    at: usize,
    d_params: &mut [f32],
) -> Result<Tensor> {
    let (n, c, s) = channel_geometry(last.shape(), "conv chain")?;
    let gamma = params.narrow(0, at, c)?;
    let zero = vec![0f32; c];
    let dx = read_f32(last, |x| {
        read_f32(dy, |dy| {
            read_f32(&gamma, |a| {
                let sums = grad_sums(Act::Identity, (x, dy), (n, c, s), (a, &zero), &zero);
                for (d, s) in d_params[at..at + c].iter_mut().zip(&sums) {
                    *d = s.1 as f32;
                }
                InputGrad::new(Act::Identity, (x, dy), (c, s), [a, &zero, a, &zero, &zero]).all()
            })
        })
    })???;
    Tensor::from_vec(dx, last.shape(), &Device::Cpu)
}

/// The op: its blocks, and what their forward kept for the backward.
struct ChainTrain {
    blocks: Vec<BlockOp>,
    /// What each block's forward kept.
    saved: Mutex<Option<Vec<Saved>>>,
}

impl CustomOp2 for ChainTrain {
    fn name(&self) -> &'static str {
        "conv-chain-train"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let mut kept: Vec<Saved> = Vec::with_capacity(self.blocks.len());
        let mut current: Option<Values> = None;
        for (k, block) in self.blocks.iter().enumerate() {
            let (out, saved) = match (current.take(), kept.last()) {
                (Some((v, shape)), _) => {
                    let input = CpuStorage::F32(v);
                    let layout = Layout::contiguous(&shape);
                    let (out, mut saved) =
                        block.forward(UnitIn::Stored(&input, &layout), (ps, pl))?;
                    saved.input = Some(tensor_of(input, shape)?);
                    (out, saved)
                }
                (None, None) => block.forward(UnitIn::Stored(xs, xl), (ps, pl))?,
                (None, Some(before)) => {
                    // The block before left its output to be read image by image.
                    let z = before.last_conv_out()?;
                    read_f32(z, |zv| -> Result<_> {
                        let y = self.blocks[k - 1].last()?.bn.output(zv, z.shape())?;
                        block.forward(UnitIn::Images(&y, z.shape()), (ps, pl))
                    })??
                }
            };
            kept.push(saved);
            current = out;
        }
        let Some((y, shape)) = current else {
            bail!(
                "{}: a run that does not end on a written output",
                self.name()
            )
        };
        *self.saved.lock().unwrap_or_else(|e| e.into_inner()) = Some(kept);
        Ok((CpuStorage::F32(y), shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let kept = take_saved(&self.saved, self.name())?;
        let params = params.detach();
        // Zeroed on every worker: a serial fill of the whole run's parameters left the others
        // waiting.
        let mut d_params = Vec::with_capacity(params.elem_count());
        d_params.par_extend(rayon::iter::repeat_n(0f32, params.elem_count()));
        let mut grad = Some(dy.contiguous()?);
        let mut kept = kept;
        for (k, block) in self.blocks.iter().enumerate().rev() {
            let (Some(mut saved), Some(dy)) = (kept.pop(), grad) else {
                bail!("{}: no gradient or saved values for block {k}", self.name())
            };
            let stored = saved.input.take();
            let (input, want_dx) = match (&stored, kept.last()) {
                (Some(t), _) => (UnitInput::Tensor(t), true),
                (None, Some(before)) => {
                    let z = before.last_conv_out()?;
                    let bn = &self.blocks[k - 1].last()?.bn;
                    (UnitInput::Images { z, bn }, true)
                }
                (None, None) => (UnitInput::Tensor(x), x.track_op()),
            };
            grad = block.backward((input, want_dx), &params, saved, &dy, &mut d_params)?;
        }
        let d_params = Tensor::from_vec(d_params, params.shape(), &Device::Cpu)?;
        Ok((grad, Some(d_params)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::uniform;
    use crate::ops::{channel_affine, conv_bn_train};
    use candle_core::Var;
    use rand::{rngs::StdRng, SeedableRng};

    /// A unit's parameters: weight shape, geometry, activation.
    type UnitCase = ([usize; 4], ConvGeometry, Act);

    fn geo(stride: usize, padding: usize, groups: usize) -> ConvGeometry {
        ConvGeometry {
            stride,
            padding,
            groups,
        }
    }

    /// Six blocks on a 4-channel input: a FusedIB-like one (dense 3×3 stride 2, then a 1×1
    /// projection), a 3×3 and a 1×1 conv-norm-act one, an ExtraDW-like one without residual
    /// (depthwise 3×3, then a 1×1 projection), a UIB-like one with a layer scale and a
    /// residual (depthwise 5×5, 1×1 expansion, depthwise 3×3, 1×1 projection), then one that
    /// halves the map (depthwise 3×3 stride 2, then a 1×1 projection).
    fn cases() -> Vec<(Vec<UnitCase>, bool, bool)> {
        vec![
            (
                vec![
                    ([8, 4, 3, 3], geo(2, 1, 1), Act::Relu),
                    ([6, 8, 1, 1], geo(1, 0, 1), Act::Identity),
                ],
                false,
                false,
            ),
            (vec![([6, 6, 3, 3], geo(1, 1, 1), Act::Relu)], false, false),
            (vec![([6, 6, 1, 1], geo(1, 0, 1), Act::Relu)], false, false),
            (
                vec![
                    ([6, 1, 3, 3], geo(1, 1, 6), Act::Relu),
                    ([6, 6, 1, 1], geo(1, 0, 1), Act::Identity),
                ],
                false,
                false,
            ),
            (
                vec![
                    ([6, 1, 5, 5], geo(1, 2, 6), Act::Identity),
                    ([12, 6, 1, 1], geo(1, 0, 1), Act::Relu),
                    ([12, 1, 3, 3], geo(1, 1, 12), Act::Gelu),
                    ([6, 12, 1, 1], geo(1, 0, 1), Act::Identity),
                ],
                true,
                true,
            ),
            (
                vec![
                    ([6, 1, 3, 3], geo(2, 1, 6), Act::Relu),
                    ([6, 6, 1, 1], geo(1, 0, 1), Act::Identity),
                ],
                false,
                false,
            ),
        ]
    }

    /// The variables of one unit: weight, batch-norm weight and bias.
    fn unit_vars(shape: [usize; 4], rng: &mut StdRng) -> Result<[Var; 3]> {
        let c = shape[0];
        Ok([
            Var::from_tensor(&uniform(&shape, rng)?)?,
            Var::from_tensor(&uniform(&[c], rng)?.affine(0.5, 1.0)?)?,
            Var::from_tensor(&uniform(&[c], rng)?)?,
        ])
    }

    /// The block of `units` with their parameters `vars`.
    fn chain_block<'a>(
        units: &[UnitCase],
        vars: &'a [[Var; 3]],
        layer_scale: Option<&'a Var>,
        residual: bool,
    ) -> ChainBlock<'a> {
        let units = units
            .iter()
            .zip(vars)
            .map(|((_, geo, act), [w, gw, gb])| ChainUnit {
                weight: w.as_tensor(),
                geo: *geo,
                norm: NormAct {
                    weight: gw.as_tensor(),
                    bias: gb.as_tensor(),
                    eps: 1e-5,
                    act: *act,
                },
            })
            .collect();
        ChainBlock {
            units,
            layer_scale: layer_scale.map(|s| s.as_tensor()),
            residual,
        }
    }

    /// The blocks one unit at a time, as the model ran them before the run op.
    fn apart(
        x: &Tensor,
        blocks: &[(Vec<UnitCase>, bool, bool)],
        vars: &[Vec<[Var; 3]>],
        scales: &[Option<Var>],
    ) -> Result<(Tensor, Vec<BatchStats>)> {
        let (mut h, mut stats) = (x.clone(), Vec::new());
        for (((units, _, residual), vars), scale) in blocks.iter().zip(vars).zip(scales) {
            let mut y = h.clone();
            for ((_, g, act), [w, gw, gb]) in units.iter().zip(vars) {
                let norm = NormAct {
                    weight: gw.as_tensor(),
                    bias: gb.as_tensor(),
                    eps: 1e-5,
                    act: *act,
                };
                let (out, s) = conv_bn_train(&y, w.as_tensor(), *g, norm)?.expect("a kernel");
                stats.push(s);
                y = out;
            }
            if let Some(gamma) = scale {
                y = channel_affine(&y, gamma, &gamma.zeros_like()?, Act::Identity)?;
            }
            h = if *residual { (y + &h)? } else { y };
        }
        Ok((h, stats))
    }

    /// Output, statistics and every gradient of a run of blocks equal those of its units run
    /// one at a time (zeros compared without their sign: candle adds gradients into zeros). On
    /// the larger input, dense, pointwise and depthwise units read their input image by image,
    /// across block boundaries too. On the smaller one, the blocks after the first carry their
    /// 6×6 maps with the batch innermost, whose batch-norm sums run in another order: the same
    /// up to rounding there.
    #[test]
    fn matches_the_units_one_by_one() -> Result<()> {
        for (seed, dims) in [(41, [3, 4, 12, 12]), (43, [2, 4, 32, 32])] {
            matches_one_by_one_on(seed, dims, false)?;
        }
        Ok(())
    }

    /// With the layer scale folded into the batch norm before it, the same up to rounding.
    #[test]
    fn folded_layer_scale_matches_the_units_one_by_one() -> Result<()> {
        for (seed, dims) in [(46, [3, 4, 12, 12]), (47, [2, 4, 32, 32])] {
            matches_one_by_one_on(seed, dims, true)?;
        }
        Ok(())
    }

    /// Whether `a` and `b` agree within `1e-4` of the larger of `b`'s largest magnitude and 1.
    fn close(a: &[f32], b: &[f32]) -> bool {
        let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
        a.len() == b.len() && a.iter().zip(b).all(|(a, b)| (a - b).abs() <= 1e-4 * scale)
    }

    /// [`chain_train`] against [`apart`] on `dims`: bit for bit where no layer scale is folded
    /// and no map is carried with the batch innermost, up to rounding otherwise.
    fn matches_one_by_one_on(seed: u64, dims: [usize; 4], with_scales: bool) -> Result<()> {
        let mut rng = StdRng::seed_from_u64(seed);
        let blocks = cases();
        let x = Var::from_tensor(&uniform(&dims, &mut rng)?)?;
        let vars = blocks
            .iter()
            .map(|(units, _, _)| units.iter().map(|u| unit_vars(u.0, &mut rng)).collect())
            .collect::<Result<Vec<Vec<_>>>>()?;
        let scales = blocks
            .iter()
            .map(|(units, scale, _)| {
                let c = units.last().expect("a unit").0[0];
                (*scale && with_scales)
                    .then(|| Var::from_tensor(&uniform(&[c], &mut rng)?))
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        let args: Vec<ChainBlock> = blocks
            .iter()
            .zip(&vars)
            .zip(&scales)
            .map(|(((units, _, residual), vars), scale)| {
                chain_block(units, vars, scale.as_ref(), *residual)
            })
            .collect();
        let inner = runs(&x, &args)?.iter().any(|(_, planes)| planes.is_some());
        assert_eq!(inner, dims[2] == 12, "{dims:?}: batch innermost");
        let exact = !with_scales && !inner;
        let (together, stats) = chain_train(&x, &args)?.expect("kernels for every unit");
        let (one_by_one, stats_apart) = apart(&x, &blocks, &vars, &scales)?;
        let stats: Vec<BatchStats> = stats.into_iter().flatten().collect();
        assert_eq!(stats.len(), stats_apart.len());
        for (a, b) in stats.iter().zip(&stats_apart) {
            assert_eq!(a.count, b.count);
            if exact {
                assert_eq!((&a.mean, &a.var), (&b.mean, &b.var));
            } else {
                assert!(
                    close(&a.mean, &b.mean) && close(&a.var, &b.var),
                    "{dims:?}: stats"
                );
            }
        }
        let r = uniform(together.dims(), &mut rng)?;
        let mut all: Vec<&Var> = vec![&x];
        all.extend(vars.iter().flatten().flatten());
        all.extend(scales.iter().flatten());
        let values = |y: &Tensor| -> Result<Vec<Tensor>> {
            let grads = (y * &r)?.sum_all()?.backward()?;
            let mut out = vec![y.flatten_all()?];
            for v in &all {
                let grad = grads.get(v.as_tensor()).expect("a gradient");
                out.push(grad.flatten_all()?);
            }
            Ok(out)
        };
        let (got, want) = (values(&together)?, values(&one_by_one)?);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            if !exact {
                // Some gradients are zero but for rounding (a bias before a batch norm): those
                // are held to the scale of the others.
                let (g, w) = (g.to_vec1::<f32>()?, w.to_vec1::<f32>()?);
                assert!(close(&g, &w), "{dims:?}: value {i}");
            } else {
                assert_eq!(
                    g.to_vec1::<f32>()?,
                    w.to_vec1::<f32>()?,
                    "{dims:?}: value {i}"
                );
            }
        }
        Ok(())
    }

    /// A unit reads its input image by image where it is not the block's first and its kernel
    /// reads such an input so: a dense or 1×1 convolution with outputs of at least 128 pixels
    /// (on smaller ones the product runs over the whole batch at once), a depthwise one on
    /// outputs at least 8 wide (narrower ones put the batch innermost).
    #[test]
    fn reads_images_where_the_kernel_can() -> Result<()> {
        let mut rng = StdRng::seed_from_u64(44);
        let expected: [(usize, [usize; 4], &[bool]); 4] = [
            (0, [2, 4, 24, 24], &[false, true]),
            (0, [2, 4, 12, 12], &[false, false]),
            (4, [2, 6, 12, 12], &[false, true, true, true]),
            (4, [2, 6, 6, 6], &[false, false, false, false]),
        ];
        for (case, dims, reads) in expected {
            let units = &cases()[case].0;
            let vars: Vec<[Var; 3]> = units
                .iter()
                .map(|u| unit_vars(u.0, &mut rng))
                .collect::<Result<_>>()?;
            let x = uniform(&dims, &mut rng)?;
            let block = chain_block(units, &vars, None, false);
            let (mut shape, mut joint) = (x.shape().clone(), Joint::default());
            let op =
                BlockOp::new(&x, &block, (&mut shape, &mut None), &mut joint)?.expect("kernels");
            let got: Vec<bool> = op.units.iter().map(|u| u.reads_images).collect();
            assert_eq!(got, reads, "block {case} on {dims:?}");
        }
        Ok(())
    }

    /// A block's first unit reads the block before's output image by image where that block
    /// ends on its batch norm, this one adds no residual, and the kernel can read so: on the
    /// larger input, the dense and the 1×1 blocks after the FusedIB-like one and the
    /// depthwise-led block after them, not the residual block nor the one that halves the map
    /// on 6-wide outputs (the batch goes innermost there); on the smaller one, none.
    #[test]
    fn blocks_read_the_block_before_where_they_can() -> Result<()> {
        let mut rng = StdRng::seed_from_u64(45);
        let blocks = cases();
        for (dims, expected) in [
            ([2, 4, 24, 24], [false, true, true, true, false, false]),
            ([2, 4, 12, 12], [false; 6]),
        ] {
            let vars = blocks
                .iter()
                .map(|(units, _, _)| units.iter().map(|u| unit_vars(u.0, &mut rng)).collect())
                .collect::<Result<Vec<Vec<_>>>>()?;
            let x = uniform(&dims, &mut rng)?;
            let (mut shape, mut joint) = (x.shape().clone(), Joint::default());
            let mut ops = Vec::new();
            for ((units, _, residual), vars) in blocks.iter().zip(&vars) {
                let block = chain_block(units, vars, None, *residual);
                ops.push(
                    BlockOp::new(&x, &block, (&mut shape, &mut None), &mut joint)?
                        .expect("kernels"),
                );
            }
            link_blocks(&mut ops);
            let got: Vec<bool> = ops.iter().map(|b| b.units[0].reads_images).collect();
            assert_eq!(got, expected, "{dims:?}");
            let lazy: Vec<bool> = ops.iter().map(|b| b.output_lazy).collect();
            assert_eq!(lazy[..5], expected[1..], "{dims:?}");
        }
        Ok(())
    }

    /// A grouping without a kernel of ours leaves the run to the caller; a residual across a
    /// change of shape and an empty run are errors.
    #[test]
    fn defers_and_rejects() -> Result<()> {
        let mut rng = StdRng::seed_from_u64(42);
        let x = uniform(&[2, 4, 6, 6], &mut rng)?;
        let grouped = uniform(&[4, 2, 3, 3], &mut rng)?;
        let (g, b) = (uniform(&[4], &mut rng)?, uniform(&[4], &mut rng)?);
        fn block<'a>(w: &'a Tensor, geo: ConvGeometry, gb: [&'a Tensor; 2]) -> Vec<ChainBlock<'a>> {
            vec![ChainBlock {
                units: vec![ChainUnit {
                    weight: w,
                    geo,
                    norm: NormAct {
                        weight: gb[0],
                        bias: gb[1],
                        eps: 1e-5,
                        act: Act::Relu,
                    },
                }],
                layer_scale: None,
                residual: geo.stride > 1,
            }]
        }
        assert!(chain_train(&x, &block(&grouped, geo(1, 1, 2), [&g, &b]))?.is_none());
        let strided = uniform(&[4, 4, 3, 3], &mut rng)?;
        let err = chain_train(&x, &block(&strided, geo(2, 1, 1), [&g, &b])).unwrap_err();
        assert!(err.to_string().contains("residual"), "{err}");
        assert!(chain_train(&x, &[]).is_err());
        Ok(())
    }
}
