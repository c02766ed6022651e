//! Access to CPU f32 storage: the slices handed to the custom ops, read access to a tensor's
//! elements, and in-place updates of a tensor from another one.

use std::cell::RefCell;

use candle_core::{bail, CpuStorage, InplaceOp2, Layout, Result, Storage, Tensor};

/// The f32 elements of a contiguous tensor, in row-major order.
///
/// The public entry points make their inputs contiguous before applying a custom op, so a
/// strided layout here is a caller error and is reported rather than silently mis-read.
pub(crate) fn f32_slice<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> Result<&'a [f32]> {
    let (start, end) = offsets(layout, op)?;
    Ok(&storage.as_slice::<f32>()?[start..end])
}

/// Mutable form of [`f32_slice`].
fn f32_slice_mut<'a>(
    storage: &'a mut CpuStorage,
    layout: &Layout,
    op: &str,
) -> Result<&'a mut [f32]> {
    let (start, end) = offsets(layout, op)?;
    match storage {
        CpuStorage::F32(v) => Ok(&mut v[start..end]),
        _ => bail!("{op}: expected f32 storage"),
    }
}

fn offsets(layout: &Layout, op: &str) -> Result<(usize, usize)> {
    let Some(offsets) = layout.contiguous_offsets() else {
        bail!(
            "{op}: expected a contiguous input, got strides {:?}",
            layout.stride()
        )
    };
    Ok(offsets)
}

/// Calls `f` with the elements of a contiguous f32 CPU tensor, without copying them.
pub fn read_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        bail!("read_f32: expected a CPU tensor")
    };
    Ok(f(f32_slice(cpu, layout, "read_f32")?))
}

/// Calls `f(dst, src)` with the elements of two contiguous f32 CPU tensors of equal size,
/// `dst` writable: an in-place update outside autograd (e.g. an optimizer step on a `Var`).
pub fn update_f32(dst: &Tensor, src: &Tensor, f: impl FnOnce(&mut [f32], &[f32])) -> Result<()> {
    if dst.elem_count() != src.elem_count() {
        bail!(
            "update_f32: {:?} cannot be updated from {:?}",
            dst.shape(),
            src.shape()
        )
    }
    dst.inplace_op2(src, &Update(RefCell::new(Some(f))))
}

/// The in-place op behind [`update_f32`]; the closure runs once.
struct Update<F>(RefCell<Option<F>>);

impl<F: FnOnce(&mut [f32], &[f32])> InplaceOp2 for Update<F> {
    fn name(&self) -> &'static str {
        "update-f32"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let dst = f32_slice_mut(s1, l1, self.name())?;
        let src = f32_slice(s2, l2, self.name())?;
        match self.0.borrow_mut().take() {
            Some(f) => f(dst, src),
            None => bail!("{}: applied twice", self.name()),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn updates_in_place_and_reads_back() -> Result<()> {
        let v = Var::new(&[1f32, 2., 3.], &Device::Cpu)?;
        let g = Tensor::new(&[10f32, 20., 30.], &Device::Cpu)?;
        update_f32(&v, &g, |p, g| {
            for (p, g) in p.iter_mut().zip(g) {
                *p += g;
            }
        })?;
        assert_eq!(v.to_vec1::<f32>()?, [11., 22., 33.]);
        assert_eq!(read_f32(&g, |s| s.iter().sum::<f32>())?, 60.);
        let short = Tensor::new(&[1f32], &Device::Cpu)?;
        assert!(update_f32(&v, &short, |_, _| {}).is_err());
        assert!(update_f32(&v, &g.to_dtype(candle_core::DType::F64)?, |_, _| {}).is_err());
        Ok(())
    }
}
