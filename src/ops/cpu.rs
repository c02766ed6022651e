//! Access to the CPU storage handed to the custom ops.

use candle_core::{bail, CpuStorage, Layout, Result};

/// The f32 elements of a contiguous tensor, in row-major order.
///
/// The public entry points make their inputs contiguous before applying a custom op, so a
/// strided layout here is a caller error and is reported rather than silently mis-read.
pub(crate) fn f32_slice<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> Result<&'a [f32]> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        bail!(
            "{op}: expected a contiguous input, got strides {:?}",
            layout.stride()
        )
    };
    Ok(&storage.as_slice::<f32>()?[start..end])
}
