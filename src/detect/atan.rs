//! `atan` on f32 tensors with its gradient (candle has none): the aspect-ratio term of CIoU.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

struct Atan;

impl CustomOp1 for Atan {
    fn name(&self) -> &'static str {
        "atan"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(v), Some((start, end))) = (storage, layout.contiguous_offsets())
        else {
            candle_core::bail!("atan takes a contiguous f32 tensor");
        };
        let out = v[start..end].iter().map(|x| x.atan()).collect();
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        // d/dx atan x = 1 / (1 + x²)
        Ok(Some(grad_res.div(&(arg.sqr()? + 1.0)?)?))
    }
}

/// Element-wise arctangent of an f32 tensor, differentiable.
pub fn atan(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Atan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn atan_and_its_gradient_match_the_reference() {
        let xs = [-3.0f32, -0.5, 0.0, 0.25, 2.0, 40.0];
        let x = Var::new(&xs[..], &Device::Cpu).unwrap();
        let y = atan(x.as_tensor()).unwrap();
        let got = y.to_vec1::<f32>().unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        let g = grads.get(&x).unwrap().to_vec1::<f32>().unwrap();
        for (i, &v) in xs.iter().enumerate() {
            assert_eq!(got[i], v.atan());
            assert!((g[i] - 1.0 / (1.0 + v * v)).abs() < 1e-7, "{i}: {}", g[i]);
        }
    }
}
