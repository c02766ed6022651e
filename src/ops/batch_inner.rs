//! Small maps carried with the batch innermost through a run of blocks.
//!
//! On maps of a few pixels, the depthwise kernels put the batch innermost
//! ([`super::depthwise_small`]) and the 1×1 convolutions multiply the whole batch at once in
//! channel-major layout ([`super::channel_major`]), each transposing its operands in and out,
//! and batch norm walks channel rows of a few elements. Carried as `[C, H·W, B]` instead, with
//! the shape `[1, C, H·W, B]`, the map is an `[N, C, S]` tensor of one image whose channel rows
//! hold all of a channel's values: batch norm, the 1×1 convolutions (one product over all
//! columns, whatever their order), the layer scale and the residual add run on it unchanged,
//! and only the depthwise convolutions need the planes back, which [`InnerDepthwise`] knows.
//! The run transposes its input once on the way in and its output once on the way out.

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

use super::channel_major::transpose;
use super::conv_op::{whole_grads, ConvOp, ImageDone, ReadsImages};
use super::cpu::{f32_slice, read_f32};
use super::depthwise_small::{backward_inner, forward_inner, TapTable};
use super::images::Batch;

/// Planes of at most this many pixels run with the batch innermost.
const MAX_PLANE: usize = 196;

/// The planes of a map carried with the batch innermost: batch, height and width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Planes {
    pub batch: usize,
    pub h: usize,
    pub w: usize,
}

impl Planes {
    /// The planes of a `[B, C, H, W]` map.
    pub(super) fn of(shape: &Shape) -> Result<Self> {
        let (batch, _, h, w) = shape.dims4()?;
        Ok(Self { batch, h, w })
    }

    /// The planes of a `[B, C, H, W]` map small enough to carry with the batch innermost.
    pub(super) fn of_small(shape: &Shape) -> Result<Option<Self>> {
        let p = Self::of(shape)?;
        Ok((p.batch > 1 && p.h * p.w <= MAX_PLANE).then_some(p))
    }

    /// The planes after a convolution with a weight of shape `w` (`[C, _, k, k]`, padding
    /// `k / 2`) and `stride`.
    pub(super) fn after(&self, w: &Shape, stride: usize) -> Result<Self> {
        let k = w.dims4()?.2;
        let side = |n: usize| match (n + 2 * (k / 2)).checked_sub(k) {
            Some(room) if stride > 0 => Ok(room / stride + 1),
            _ => bail!("batch innermost: kernel {k} stride {stride} does not fit {self:?}"),
        };
        Ok(Self {
            batch: self.batch,
            h: side(self.h)?,
            w: side(self.w)?,
        })
    }

    /// The shape of a map of `c` channels on these planes carried with the batch innermost.
    pub(super) fn inner_shape(&self, c: usize) -> Shape {
        Shape::from((1, c, self.h * self.w, self.batch))
    }

    /// `x: [B, C, H, W]` as `[1, C, H·W, B]`.
    pub(super) fn enter(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        if (b, h, w) != (self.batch, self.h, self.w) {
            bail!("batch innermost: a map {:?} is not {self:?}", x.shape())
        }
        let op = Transposed {
            rows: b,
            cols: c * h * w,
            out: Shape::from((1, c, h * w, b)),
        };
        x.contiguous()?.apply_op1(op)
    }

    /// `y: [1, C, H·W, B]` as `[B, C, H, W]`, the inverse of [`Planes::enter`].
    pub(super) fn leave(&self, y: &Tensor) -> Result<Tensor> {
        let (one, c, p, b) = y.dims4()?;
        if (one, p, b) != (1, self.h * self.w, self.batch) {
            bail!("batch innermost: a map {:?} is not {self:?}", y.shape())
        }
        let op = Transposed {
            rows: c * p,
            cols: b,
            out: Shape::from((b, c, self.h, self.w)),
        };
        y.contiguous()?.apply_op1(op)
    }
}

/// The transpose of a `rows × cols` matrix, given the shape `out`; its backward transposes back.
#[derive(Debug)]
struct Transposed {
    rows: usize,
    cols: usize,
    out: Shape,
}

impl CustomOp1 for Transposed {
    fn name(&self) -> &'static str {
        "batch-innermost-transpose"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        if x.len() != self.rows * self.cols {
            bail!("{}: {} values for {self:?}", self.name(), x.len())
        }
        let y = transpose(x, self.rows, self.cols);
        Ok((CpuStorage::F32(y), self.out.clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let dx = read_f32(&dy.contiguous()?, |dy| transpose(dy, self.cols, self.rows))?;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

/// A depthwise convolution (weight `[C, 1, k, k]`, `k` odd, padding `k / 2`) of a map carried
/// as `[1, C, H·W, B]`, with [`super::depthwise_small`]'s kernels and none of their transposes.
pub(super) struct InnerDepthwise {
    table: TapTable,
    batch: usize,
}

impl InnerDepthwise {
    /// The op on `planes` with a weight of shape `w` and `stride`.
    pub(super) fn new(planes: Planes, w: &Shape, stride: usize) -> Result<Self> {
        let (_, one, kh, kw) = w.dims4()?;
        if one != 1 || kh != kw || kh % 2 == 0 {
            bail!("depthwise (batch innermost): weight {w:?} is not [C, 1, k, k] with k odd")
        }
        let out = planes.after(w, stride)?;
        Ok(Self {
            table: TapTable::new(planes.h, planes.w, kh, stride, (out.h, out.w)),
            batch: planes.batch,
        })
    }

    /// The channels of a map of shape `x` and a weight of shape `w`, checked against each
    /// other and the planes.
    fn channels(&self, x: &Shape, w: &Shape) -> Result<usize> {
        let (one, c, p, b) = x.dims4()?;
        let (wc, _, k, _) = w.dims4()?;
        if (one, p * b, wc) != (1, self.table.in_pixels() * self.batch, c)
            || k * k != self.table.taps()
        {
            bail!("depthwise (batch innermost): input {x:?} / weight {w:?} do not match its planes")
        }
        Ok(c)
    }
}

impl InnerDepthwise {
    /// The forward on `x` (of shape `x_shape`) with the weight `(ws, wl)`.
    fn forward(
        &self,
        (x, x_shape): (Batch, &Shape),
        (ws, wl): (&CpuStorage, &Layout),
    ) -> Result<(CpuStorage, Shape)> {
        let c = self.channels(x_shape, wl.shape())?;
        let w = f32_slice(ws, wl, "depthwise (batch innermost)")?;
        if !x.holds(1, c * self.table.in_pixels() * self.batch) {
            bail!("depthwise (batch innermost): an input that is not {x_shape:?}")
        }
        let y = forward_inner(&self.table, (self.batch, c), x, w);
        let shape = Shape::from((1, c, self.table.out_pixels(), self.batch));
        Ok((CpuStorage::F32(y), shape))
    }

    /// `(dx, dw)` for the input `x` (of shape `x_shape`), the weight `w` and the output
    /// gradient `dy`.
    fn backward(
        &self,
        (x, x_shape): (Batch, &Shape),
        w: &Tensor,
        dy: Batch,
    ) -> Result<(Tensor, Tensor)> {
        let c = self.channels(x_shape, w.shape())?;
        let (p, q, b) = (self.table.in_pixels(), self.table.out_pixels(), self.batch);
        if !x.holds(1, c * p * b) || !dy.holds(1, c * q * b) {
            bail!("depthwise (batch innermost): an input or output gradient that is not {x_shape:?}'s")
        }
        let (dx, dw) = read_f32(&w.contiguous()?, |wv| {
            backward_inner(&self.table, (b, c), x, wv, dy)
        })?;
        Ok((
            Tensor::from_vec(dx, x_shape, w.device())?,
            Tensor::from_vec(dw, w.shape(), w.device())?,
        ))
    }
}

impl CustomOp2 for InnerDepthwise {
    fn name(&self) -> &'static str {
        "depthwise-batch-innermost"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(xs, xl, self.name())?;
        self.forward((Batch::Whole(x), xl.shape()), (ws, wl))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        whole_grads(self, x, w, dy)
    }
}

impl ConvOp for InnerDepthwise {
    fn grads(
        &self,
        x: &Tensor,
        w: &Tensor,
        dy: Batch,
        _want_dx: bool,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = read_f32(&x.contiguous()?, |xv| {
            self.backward((Batch::Whole(xv), x.shape()), w, dy)
        })??;
        Ok((Some(dx), Some(dw)))
    }

    fn image_reader(&self) -> Option<&dyn ReadsImages> {
        Some(self)
    }
}

/// The map is one image whose channel rows the kernel reads as their turn comes: the batch norm
/// before it need not write its output whole.
impl ReadsImages for InnerDepthwise {
    fn reads_images(&self, _x: &Shape, _w: &Shape) -> bool {
        true
    }

    fn forward_images(
        &self,
        x: (Batch, &Shape),
        w: (&CpuStorage, &Layout),
        _done: ImageDone,
    ) -> Result<(CpuStorage, Shape)> {
        self.forward(x, w)
    }

    fn grads_images(&self, x: (Batch, &Shape), w: &Tensor, dy: Batch) -> Result<(Tensor, Tensor)> {
        self.backward(x, w, dy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::depthwise_conv2d;
    use crate::ops::testutil::uniform;
    use candle_core::Var;
    use rand::{rngs::StdRng, SeedableRng};

    /// A depthwise convolution between [`Planes::enter`] and [`Planes::leave`] gives the values
    /// and gradients of [`depthwise_conv2d`] on the planes, up to rounding (its forward may sum
    /// the taps in another order).
    #[test]
    fn depthwise_matches_depthwise_conv2d() -> Result<()> {
        let mut rng = StdRng::seed_from_u64(7);
        let cases = [
            ([5, 3, 7, 7], 5, 1),
            ([4, 2, 6, 5], 3, 1),
            ([2, 4, 3, 3], 3, 1),
            ([3, 2, 14, 14], 3, 2),
            ([2, 3, 7, 6], 5, 2),
        ];
        for (dims, k, stride) in cases {
            let x = Var::from_tensor(&uniform(&dims, &mut rng)?)?;
            let w = Var::from_tensor(&uniform(&[dims[1], 1, k, k], &mut rng)?)?;
            let planes = Planes::of(x.shape())?;
            let op = InnerDepthwise::new(planes, w.shape(), stride)?;
            let inner = planes.enter(&x)?.apply_op2(w.as_tensor(), op)?;
            let got = planes.after(w.shape(), stride)?.leave(&inner)?;
            let want = depthwise_conv2d(&x, &w, stride)?;
            let r = uniform(want.dims(), &mut rng)?;
            let grads = |y: &Tensor| -> Result<Vec<Vec<f32>>> {
                let g = (y * &r)?.sum_all()?.backward()?;
                let mut out = vec![y.flatten_all()?.to_vec1()?];
                for v in [&x, &w] {
                    out.push(g.get(v).expect("a gradient").flatten_all()?.to_vec1()?);
                }
                Ok(out)
            };
            for (i, (g, w)) in grads(&got)?.iter().zip(grads(&want)?).enumerate() {
                let worst = g
                    .iter()
                    .zip(&w)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(
                    g.len() == w.len() && worst < 1e-5,
                    "{dims:?} k {k}: value {i}: {worst}"
                );
            }
        }
        Ok(())
    }

    /// Entering and leaving restores the map; large planes and batches of one stay as they are.
    #[test]
    fn enters_small_planes_and_leaves_them_as_they_were() -> Result<()> {
        let mut rng = StdRng::seed_from_u64(8);
        let x = uniform(&[3, 4, 5, 6], &mut rng)?;
        let planes = Planes::of_small(x.shape())?.expect("small planes");
        let inner = planes.enter(&x)?;
        assert_eq!(inner.dims(), [1, 4, 30, 3]);
        let iv = inner.flatten_all()?.to_vec1::<f32>()?;
        let xv = x.flatten_all()?.to_vec1::<f32>()?;
        // Element (b, c, p) of the map sits at (c, p, b) inside.
        assert_eq!(iv[(2 * 30 + 7) * 3 + 1], xv[(4 + 2) * 30 + 7]);
        let back = planes.leave(&inner)?.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(back, xv);
        assert!(Planes::of_small(&Shape::from((3, 4, 15, 14)))?.is_none());
        assert!(Planes::of_small(&Shape::from((1, 4, 5, 6)))?.is_none());
        Ok(())
    }
}
