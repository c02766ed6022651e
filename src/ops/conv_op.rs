//! What [`super::conv2d`]'s kernels share beyond candle's op trait: a backward that can take the
//! output gradient one image at a time, as the fused convolution + batch norm produces it, and,
//! for the kernels that can, an input computed one image at a time as well ([`ReadsImages`]).

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

use super::cpu::{f32_slice, read_f32};
use super::images::Batch;

/// A [`ConvOp`]'s candle backward: its gradients for the whole output gradient `dy`, the input's
/// only where candle tracks it.
pub(super) fn whole_grads(
    op: &impl ConvOp,
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    read_f32(&dy.contiguous()?, |dy| {
        op.grads(x, w, Batch::Whole(dy), x.track_op())
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
        dy: Batch,
        want_dx: bool,
    ) -> Result<(Option<Tensor>, Option<Tensor>)>;

    /// This kernel as one that can read its input image by image, if it is one.
    fn image_reader(&self) -> Option<&dyn ReadsImages> {
        None
    }
}

/// A kernel that can take its input image by image too ([`Batch::Images`]), computing each
/// image into scratch just before its products, so that the per-channel op before it (batch
/// norm and activation) need not write its output whole and have it read back.
pub(super) trait ReadsImages {
    /// Whether an input of shape `x` is read image by image with a weight of shape `w`;
    /// otherwise the kernel would first write it whole, and the caller had better hand it over
    /// whole.
    fn reads_images(&self, x: &Shape, w: &Shape) -> bool;

    /// [`ConvOp::forward_each`] on the input `x = (values, shape)`, with the weight `w`.
    fn forward_images(
        &self,
        x: (Batch, &Shape),
        w: (&CpuStorage, &Layout),
        done: ImageDone,
    ) -> Result<(CpuStorage, Shape)>;

    /// [`ConvOp::grads`] on the input `x = (values, shape)`: `(dx, dw)`.
    fn grads_images(&self, x: (Batch, &Shape), w: &Tensor, dy: Batch) -> Result<(Tensor, Tensor)>;
}

/// The weight of `(ws, wl)` for [`ReadsImages::forward_images`] of `op` on an input of shape `x`,
/// or an error where that kernel does not read such an input image by image.
pub(super) fn image_weight<'a>(
    (reader, op): (&dyn ReadsImages, &str),
    x: &Shape,
    (ws, wl): (&'a CpuStorage, &Layout),
) -> Result<&'a [f32]> {
    if !reader.reads_images(x, wl.shape()) {
        candle_core::bail!("{op}: an input {x:?} is not read image by image")
    }
    f32_slice(ws, wl, op)
}
