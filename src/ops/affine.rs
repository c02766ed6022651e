//! Per-channel affine map fused with an activation, `y = act(x · scale + shift)` over channel
//! dim 1, as one candle custom op with its own backward: eval-mode batch norm in one pass.

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

use super::act::{affine_act, channel_geometry, grad_sums, Act, InputGrad};
use super::cpu::{f32_slice, read_f32};
use super::images::ImageSource;

/// `act(x · scale + shift)` for `x: [N, C, ...]`, `scale` and `shift` of shape `[C]`.
///
/// CPU and f32 only. Differentiable with respect to all three inputs.
pub fn channel_affine(x: &Tensor, scale: &Tensor, shift: &Tensor, act: Act) -> Result<Tensor> {
    x.contiguous()?.apply_op3(
        &scale.contiguous()?,
        &shift.contiguous()?,
        ChannelAffine { act },
    )
}

struct ChannelAffine {
    act: Act,
}

impl CustomOp3 for ChannelAffine {
    fn name(&self) -> &'static str {
        "channel-affine"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.name())?;
        let scale = f32_slice(s2, l2, self.name())?;
        let shift = f32_slice(s3, l3, self.name())?;
        let (_, c, s) = channel_geometry(l1.shape(), self.name())?;
        if scale.len() != c || shift.len() != c {
            bail!(
                "{}: scale {:?} / shift {:?} do not match {c} channels",
                self.name(),
                l2.shape(),
                l3.shape()
            )
        }
        let y = if s > 0 {
            affine_act(x, c, s, scale, shift, self.act)
        } else {
            Vec::new()
        };
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        scale: &Tensor,
        shift: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let geometry = channel_geometry(x.shape(), self.name())?;
        let (dx, dscale, dshift) = read_f32(x, |x| {
            read_f32(&dy, |dy| {
                read_f32(scale, |a| {
                    read_f32(shift, |b| backward(self.act, x, dy, a, b, geometry))
                })
            })
        })????;
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), x.device())?),
            Some(Tensor::from_vec(dscale, scale.shape(), x.device())?),
            Some(Tensor::from_vec(dshift, shift.shape(), x.device())?),
        ))
    }
}

/// `(dx, dscale, dshift)`: `dz = dy · act'(z)`, `dx = scale · dz`, `dscale = Σ dz · x`,
/// `dshift = Σ dz`.
fn backward(
    act: Act,
    x: &[f32],
    dy: &[f32],
    scale: &[f32],
    shift: &[f32],
    (n, c, s): (usize, usize, usize),
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    if s == 0 {
        return (vec![0.0; x.len()], vec![0.0; c], vec![0.0; c]);
    }
    let zero = vec![0f32; c];
    let sums = grad_sums(act, (x, dy), (n, c, s), (scale, shift), &zero);
    let dx = InputGrad::new(act, (x, dy), (c, s), [scale, shift, scale, &zero, &zero]).all();
    let dshift = sums.iter().map(|s| s.0 as f32).collect();
    let dscale = sums.iter().map(|s| s.1 as f32).collect();
    (dx, dscale, dshift)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::{assert_close, uniform};
    use candle_core::Var;
    use rand::{rngs::StdRng, SeedableRng};

    /// The generic composition: broadcast multiply, broadcast add, activation.
    fn reference(x: &Tensor, a: &Tensor, b: &Tensor, act: Act) -> Result<Tensor> {
        let mut shape = vec![1; x.rank()];
        shape[1] = x.dim(1)?;
        let z = x
            .broadcast_mul(&a.reshape(shape.as_slice())?)?
            .broadcast_add(&b.reshape(shape.as_slice())?)?;
        match act {
            Act::Identity => Ok(z),
            Act::Relu => z.relu(),
            Act::Gelu => z.gelu_erf(),
        }
    }

    type Fused<'a> = &'a dyn Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>;

    fn grads(f: Fused, args: &[Tensor; 3], r: &Tensor) -> Result<Vec<Tensor>> {
        let vars = args
            .iter()
            .map(Var::from_tensor)
            .collect::<Result<Vec<_>>>()?;
        let y = f(
            vars[0].as_tensor(),
            vars[1].as_tensor(),
            vars[2].as_tensor(),
        )?;
        let g = (&y * r)?.sum_all()?.backward()?;
        let mut out = vec![y];
        for v in &vars {
            out.push(g.get(v.as_tensor()).cloned().expect("gradient missing"));
        }
        Ok(out)
    }

    fn inputs(shape: &[usize], seed: u64) -> Result<([Tensor; 3], Tensor)> {
        let mut rng = StdRng::seed_from_u64(seed);
        let x = (uniform(shape, &mut rng)? * 2.0)?;
        let a = uniform(&[shape[1]], &mut rng)?;
        let b = uniform(&[shape[1]], &mut rng)?;
        Ok(([x, a, b], uniform(shape, &mut rng)?))
    }

    #[test]
    fn matches_generic_composition() -> Result<()> {
        // The last map (9 × 8) is walked channel row by channel row, the others image by image.
        let shapes: [&[usize]; 5] = [
            &[4, 3, 5, 6],
            &[2, 8, 1, 1],
            &[16, 5],
            &[1, 6, 9, 7],
            &[2, 3, 9, 8],
        ];
        for (seed, shape) in (0u64..).zip(shapes) {
            for act in [Act::Identity, Act::Relu, Act::Gelu] {
                let (args, r) = inputs(shape, seed)?;
                let got = grads(&|x, a, b| channel_affine(x, a, b, act), &args, &r)?;
                let want = grads(&|x, a, b| reference(x, a, b, act), &args, &r)?;
                for (i, what) in ["forward", "input grad", "scale grad", "shift grad"]
                    .iter()
                    .enumerate()
                {
                    assert_close(&got[i], &want[i], &format!("{shape:?} {act:?}: {what}"))?;
                }
            }
        }
        Ok(())
    }

    /// Central differences of `sum(y * r)` in f64 against the analytic gradients.
    #[test]
    fn finite_differences() -> Result<()> {
        for act in [Act::Identity, Act::Gelu] {
            let (args, r) = inputs(&[2, 3, 2, 2], 7)?;
            let f = |x: &Tensor, a: &Tensor, b: &Tensor| channel_affine(x, a, b, act);
            let g = grads(&f, &args, &r)?;
            let rv = r.flatten_all()?.to_vec1::<f32>()?;
            let loss = |args: &[Tensor; 3]| -> Result<f64> {
                let y = f(&args[0], &args[1], &args[2])?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                Ok(y.iter()
                    .zip(&rv)
                    .map(|(&y, &r)| f64::from(y) * f64::from(r))
                    .sum())
            };
            let h = 1e-2f32;
            for which in 0..3 {
                let analytic = g[which + 1].flatten_all()?.to_vec1::<f32>()?;
                let base = args[which].flatten_all()?.to_vec1::<f32>()?;
                for (i, &gi) in analytic.iter().enumerate() {
                    let nudged = |d: f32| -> Result<f64> {
                        let mut a = args.clone();
                        let mut v = base.clone();
                        v[i] += d;
                        a[which] = Tensor::from_vec(v, args[which].shape(), args[0].device())?;
                        loss(&a)
                    };
                    let fd = (nudged(h)? - nudged(-h)?) / (2.0 * f64::from(h));
                    assert!(
                        (fd - f64::from(gi)).abs() < 1e-2 * (1.0 + fd.abs()),
                        "{act:?} arg {which} [{i}]: analytic {gi}, finite difference {fd}"
                    );
                }
            }
        }
        Ok(())
    }
}
