//! What [`super::conv2d`]'s kernels share beyond candle's op trait: a backward that can take the
//! output gradient one image at a time, as the fused convolution + batch norm produces it.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

use super::act::InputGrad;
use super::cpu::read_f32;
use super::uninit::assume_written;

/// A convolution output's gradient: a whole tensor's elements, or a per-channel op's input
/// gradient that the backward writes one image at a time into a scratch buffer, just before
/// that image's products.
#[derive(Clone, Copy)]
pub(super) enum OutGrad<'a> {
    Whole(&'a [f32]),
    Images(&'a InputGrad<'a>),
}

impl OutGrad<'_> {
    /// The whole gradient: the slice itself, or written into `owned`.
    pub fn whole<'s>(&'s self, owned: &'s mut Vec<f32>) -> &'s [f32] {
        match self {
            OutGrad::Whole(dy) => dy,
            OutGrad::Images(g) => {
                *owned = g.all();
                owned
            }
        }
    }

    /// Image `i`'s `len` elements: a slice of the whole gradient, or written into `scratch`.
    pub fn image<'s>(&'s self, i: usize, len: usize, scratch: &'s mut Vec<f32>) -> &'s [f32] {
        match self {
            OutGrad::Whole(dy) => &dy[i * len..(i + 1) * len],
            OutGrad::Images(g) => {
                assert_eq!(len, g.image_len(), "output gradient: image length");
                scratch.clear();
                scratch.reserve(len);
                let slots: &mut [MaybeUninit<f32>] = &mut scratch.spare_capacity_mut()[..len];
                g.image(i, slots);
                // SAFETY: `InputGrad::image` writes all of an image's slots, `len` of them.
                unsafe { assume_written(slots) }
            }
        }
    }
}

/// A [`ConvOp`]'s candle backward: its gradients for the whole output gradient `dy`, the input's
/// only where candle tracks it.
pub(super) fn whole_grads(
    op: &impl ConvOp,
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    read_f32(&dy.contiguous()?, |dy| {
        op.grads(x, w, OutGrad::Whole(dy), x.track_op())
    })?
}

/// Called with each image's index and output as a forward completes it.
pub(super) type ImageDone<'a> = &'a (dyn Fn(usize, &[f32]) + Sync);

/// A convolution kernel's candle op, whose backward also takes its output gradient image by
/// image.
pub(super) trait ConvOp: CustomOp2 + Send + Sync {
    /// The forward, calling `done(i, y_i)` on image `i`'s output right after computing it, on
    /// the same thread, while it is in cache. Kernels that do not compute image by image return
    /// without calling it, as this default does.
    fn forward_each(
        &self,
        (xs, xl): (&CpuStorage, &Layout),
        (ws, wl): (&CpuStorage, &Layout),
        done: ImageDone,
    ) -> Result<(CpuStorage, Shape)> {
        let _ = done;
        self.cpu_fwd(xs, xl, ws, wl)
    }

    /// `(dx, dw)` for the output gradient `dy`. `dx` is computed where `want_dx` says so; a
    /// kernel may also leave it out otherwise (`None`).
    fn grads(
        &self,
        x: &Tensor,
        w: &Tensor,
        dy: OutGrad,
        want_dx: bool,
    ) -> Result<(Option<Tensor>, Option<Tensor>)>;
}
