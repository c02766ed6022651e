//! CPU kernels used by the model builder: convolutions, train-mode batch norm and per-channel
//! affine maps fused with their activation, the attention softmax ([`softmax_last_dim`]),
//! in-place f32 updates for the optimizer, and the allocator setting they rely on
//! ([`retain_freed_memory`]); [`on_workers`] runs a whole pass on the thread pool they share.
//!
//! [`conv2d`] is the single entry point. On the [`ConvPath::Fast`] path, for f32 tensors on the
//! CPU, it routes depthwise convolutions to [`depthwise_conv2d`], 1x1 stride-1 convolutions to
//! [`conv1x1`] and other dense convolutions to [`dense::conv2d`] (im2col + matmul per sample); everything
//! else, and every convolution on the [`ConvPath::Generic`] path, goes to candle's
//! `Tensor::conv2d`. All routes are differentiable. [`conv_bn_train`] runs the same kernels
//! followed by train-mode batch norm as one op, [`chain_train`] a run of conv blocks and
//! [`mqa_train`] a multi-query attention block, each as one train-mode op.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use candle_core::{CustomOp2, DType, Result, Shape, Tensor};

use conv_op::ConvOp;

mod act;
mod affine;
mod alloc;
mod attention;
mod batch_inner;
mod batchnorm;
mod chain;
mod channel_major;
mod column_table;
mod conv_bn;
mod conv_op;
mod cpu;
pub mod dense;
mod depthwise;
mod depthwise_plane;
mod depthwise_small;
mod epilogue;
mod gemm;
mod images;
pub(crate) mod nhwc;
mod pointwise;
pub mod simd;
mod softmax;
#[cfg(test)]
mod testutil;
mod uninit;
mod vecmath;
mod window;
mod workers;

pub use act::Act;
pub use affine::channel_affine;
pub use alloc::{retain_freed_memory, Arenas};
pub use attention::{mqa_train, KvArgs, MqaArgs};
pub use batchnorm::{batch_norm_train, BatchStats};
pub use chain::{chain_train, ChainBlock, ChainUnit};
pub use conv_bn::{conv_bn_train, ConvGeometry, NormAct};
pub use cpu::{read_f32, update_f32};
pub use depthwise::depthwise_conv2d;
pub(crate) use gemm::{product, Mat, Threads};
pub use pointwise::conv1x1;
pub use softmax::softmax_last_dim;
pub(crate) use softmax::softmax_rows;
pub use workers::{on_workers, run_candle_ops_inline};

/// Which convolution kernels [`conv2d`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvPath {
    /// The custom CPU kernels of this module where they apply, candle's otherwise (default).
    Fast,
    /// Candle's `Tensor::conv2d` for every convolution.
    Generic,
}

const UNSET: u8 = 0;
const FAST: u8 = 1;
const GENERIC: u8 = 2;

static CONV_PATH: AtomicU8 = AtomicU8::new(UNSET);

/// Selects the convolution kernels for the whole process.
pub fn set_conv_path(path: ConvPath) {
    CONV_PATH.store(encode(path), Ordering::Relaxed);
}

/// The current convolution path. Until [`set_conv_path`] is called this is
/// [`ConvPath::Generic`] if the environment variable `MNV4_CONV` is `generic` at the first
/// call, and [`ConvPath::Fast`] otherwise.
pub fn conv_path() -> ConvPath {
    match CONV_PATH.load(Ordering::Relaxed) {
        FAST => ConvPath::Fast,
        GENERIC => ConvPath::Generic,
        _ => {
            let from_env = path_from_env(std::env::var("MNV4_CONV").ok().as_deref());
            // A concurrent `set_conv_path` wins over the environment.
            match CONV_PATH.compare_exchange(
                UNSET,
                encode(from_env),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => from_env,
                Err(_) => conv_path(),
            }
        }
    }
}

fn encode(path: ConvPath) -> u8 {
    match path {
        ConvPath::Fast => FAST,
        ConvPath::Generic => GENERIC,
    }
}

/// The path selected by the value of `MNV4_CONV`.
fn path_from_env(value: Option<&str>) -> ConvPath {
    match value {
        Some(v) if v.trim().eq_ignore_ascii_case("generic") => ConvPath::Generic,
        _ => ConvPath::Fast,
    }
}

/// 2-D convolution of `x: [B, Cin, H, W]` with `w: [Cout, Cin / groups, kh, kw]`, symmetric
/// zero padding, no dilation; the same contract as candle's
/// `x.conv2d(w, padding, stride, 1, groups)`, using the kernels of the current [`conv_path`].
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    groups: usize,
) -> Result<Tensor> {
    let kernel = route(x, w, stride, padding, groups)?;
    // The layer-by-layer path, which eval-mode forwards take; training takes the fused ops.
    match kernel_op(
        kernel,
        x.shape(),
        w.shape(),
        (stride, padding),
        Pass::Forward,
    )? {
        Some(op) => x.contiguous()?.apply_op2_arc(
            &w.contiguous()?,
            Arc::new(op as Box<dyn CustomOp2 + Send + Sync>),
        ),
        None => x.conv2d(w, padding, stride, 1, groups),
    }
}

/// Whether a backward follows a kernel's forward; some kernels pick their layout by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    /// Forward only, or a backward that may run without the kernels' help.
    Forward,
    /// A training op's forward, its backward to come.
    Training,
}

/// The op of the kernel `route` names for `pass`, checked against the shapes of `x` and `w`;
/// `None` for candle's convolution.
fn kernel_op(
    route: Route,
    x: &Shape,
    w: &Shape,
    (stride, padding): (usize, usize),
    pass: Pass,
) -> Result<Option<Box<dyn ConvOp>>> {
    Ok(match route {
        Route::Depthwise => Some(Box::new(depthwise::DepthwiseConv2d::new(stride, pass))),
        Route::Pointwise => Some(Box::new(pointwise::Conv1x1::new(x, w)?)),
        Route::Dense => Some(Box::new(dense::DenseConv::new(x, w, stride, padding)?)),
        Route::Generic => None,
    })
}

/// The kernel [`conv2d`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Depthwise,
    Pointwise,
    Dense,
    Generic,
}

fn route(x: &Tensor, w: &Tensor, stride: usize, padding: usize, groups: usize) -> Result<Route> {
    let f32_cpu = x.device().is_cpu() && x.dtype() == DType::F32 && w.dtype() == DType::F32;
    route_shapes(f32_cpu, x.shape(), w.shape(), (stride, padding, groups))
}

/// [`route`] by shapes; `f32_cpu` says whether both tensors are f32 on the CPU.
fn route_shapes(
    f32_cpu: bool,
    x: &Shape,
    w: &Shape,
    (stride, padding, groups): (usize, usize, usize),
) -> Result<Route> {
    if !(f32_cpu && conv_path() == ConvPath::Fast) {
        return Ok(Route::Generic);
    }
    let (_, c_in, _, _) = x.dims4()?;
    let (c_out, w_in, kh, kw) = w.dims4()?;
    Ok(
        if groups == c_in && c_out == c_in && w_in == 1 && kh == kw && padding == kh / 2 {
            Route::Depthwise
        } else if groups == 1 && (kh, kw, stride, padding) == (1, 1, 1, 0) {
            Route::Pointwise
        } else if groups == 1 {
            Route::Dense
        } else {
            Route::Generic
        },
    )
}

#[cfg(test)]
mod tests {
    use super::testutil::{check_against_generic, uniform};
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};

    #[test]
    fn env_value_selects_path() {
        assert_eq!(path_from_env(None), ConvPath::Fast);
        assert_eq!(path_from_env(Some("fast")), ConvPath::Fast);
        assert_eq!(path_from_env(Some("")), ConvPath::Fast);
        assert_eq!(path_from_env(Some("generic")), ConvPath::Generic);
        assert_eq!(path_from_env(Some("GENERIC")), ConvPath::Generic);
    }

    /// The only test that changes the process-wide path, so the others see no race.
    #[test]
    fn switch_routes_and_results() -> Result<()> {
        let mut rng = StdRng::seed_from_u64(11);
        let x = uniform(&[2, 8, 9, 6], &mut rng)?;
        let cases = [
            // (weight shape, stride, padding, groups, fast route)
            ([8, 1, 3, 3], 2, 1, 8, Route::Depthwise),
            ([8, 1, 5, 5], 1, 2, 8, Route::Depthwise),
            ([8, 1, 3, 3], 1, 0, 8, Route::Generic),
            ([4, 8, 1, 1], 1, 0, 1, Route::Pointwise),
            ([4, 8, 1, 1], 2, 0, 1, Route::Dense),
            ([16, 8, 3, 3], 2, 1, 1, Route::Dense),
            ([8, 4, 3, 3], 1, 1, 2, Route::Generic),
        ];
        for (seed, (w_shape, stride, padding, groups, fast_route)) in (0u64..).zip(cases) {
            let w = uniform(&w_shape, &mut rng)?;
            set_conv_path(ConvPath::Generic);
            assert_eq!(conv_path(), ConvPath::Generic);
            assert_eq!(route(&x, &w, stride, padding, groups)?, Route::Generic);
            let generic = conv2d(&x, &w, stride, padding, groups)?;
            set_conv_path(ConvPath::Fast);
            assert_eq!(route(&x, &w, stride, padding, groups)?, fast_route);
            let fast = conv2d(&x, &w, stride, padding, groups)?;
            let diff = (&fast - &generic)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(
                diff < 1e-4,
                "{w_shape:?}: fast and generic differ by {diff}"
            );
            check_against_generic(
                &|x: &Tensor, w: &Tensor| conv2d(x, w, stride, padding, groups),
                [2, 8, 9, 6],
                w_shape,
                (stride, padding, groups),
                seed,
            )?;
        }
        let x64 = x.to_dtype(DType::F64)?;
        let w64 = uniform(&[8, 1, 3, 3], &mut rng)?.to_dtype(DType::F64)?;
        assert_eq!(route(&x64, &w64, 1, 1, 8)?, Route::Generic);
        Ok(())
    }
}
