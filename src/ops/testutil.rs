//! Shared test helpers: seeded inputs, candle's generic convolution as reference, gradient
//! comparison and finite-difference checks.

use candle_core::{Device, Result, Tensor, Var};
use rand::{rngs::StdRng, Rng, SeedableRng};

/// A convolution `(x, w) -> y` under test.
pub(crate) type Conv<'a> = &'a dyn Fn(&Tensor, &Tensor) -> Result<Tensor>;

/// Tensor of the given shape, uniform in `[-1, 1)`, from a seeded RNG.
pub(crate) fn uniform(shape: &[usize], rng: &mut StdRng) -> Result<Tensor> {
    let n = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    Tensor::from_vec(data, shape, &Device::Cpu)
}

/// Candle's generic `conv2d`, with the padding written out as explicit zero rows and columns and
/// the unread trailing ones cropped, so that candle's backward (whose transposed convolution
/// takes its output padding from the height alone) also holds for non-square strided inputs.
pub(crate) fn generic(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    groups: usize,
) -> Result<Tensor> {
    let (_, _, h, wd) = x.dims4()?;
    let (_, _, kh, kw) = w.dims4()?;
    let used = |n: usize, k: usize| (n + 2 * padding - k) / stride * stride + k;
    x.pad_with_zeros(2, padding, padding)?
        .pad_with_zeros(3, padding, padding)?
        .narrow(2, 0, used(h, kh))?
        .narrow(3, 0, used(wd, kw))?
        .conv2d(w, 0, stride, 1, groups)
}

/// Output and gradients of `loss = sum(conv(x, w) * r)`.
pub(crate) struct Grads {
    pub y: Tensor,
    pub dx: Tensor,
    pub dw: Tensor,
}

/// Runs `conv` on fresh variables holding `x` and `w` and back-propagates `sum(y * r)`.
pub(crate) fn grads(conv: Conv, x: &Tensor, w: &Tensor, r: &Tensor) -> Result<Grads> {
    let (xv, wv) = (Var::from_tensor(x)?, Var::from_tensor(w)?);
    let y = conv(xv.as_tensor(), wv.as_tensor())?;
    let g = (&y * r)?.sum_all()?.backward()?;
    let take = |v: &Var| g.get(v.as_tensor()).cloned().expect("gradient missing");
    Ok(Grads {
        dx: take(&xv),
        dw: take(&wv),
        y,
    })
}

/// Asserts `max |got - want| <= 1e-4 * max |want| + 1e-6`, shapes equal, and a non-zero reference.
pub(crate) fn assert_close(got: &Tensor, want: &Tensor, what: &str) -> Result<()> {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let scale = want.abs()?.max_all()?.to_scalar::<f32>()?;
    let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
    assert!(scale > 0.0, "{what}: reference is all zeros");
    assert!(
        diff <= 1e-4 * scale + 1e-6,
        "{what}: max abs diff {diff} vs max abs reference {scale}"
    );
    Ok(())
}

/// Compares `fast` with the generic reference (forward, input and weight gradients) on seeded
/// inputs of shape `x_shape` and weights of shape `w_shape`.
pub(crate) fn check_against_generic(
    fast: Conv,
    x_shape: [usize; 4],
    w_shape: [usize; 4],
    (stride, padding, groups): (usize, usize, usize),
    seed: u64,
) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    let (x, w) = (uniform(&x_shape, &mut rng)?, uniform(&w_shape, &mut rng)?);
    let reference = |x: &Tensor, w: &Tensor| generic(x, w, stride, padding, groups);
    let y_shape = reference(&x, &w)?.dims().to_vec();
    let r = uniform(&y_shape, &mut rng)?;
    let want = grads(&reference, &x, &w, &r)?;
    let got = grads(fast, &x, &w, &r)?;
    let what =
        format!("x {x_shape:?} w {w_shape:?} stride {stride} padding {padding} groups {groups}");
    assert_close(&got.y, &want.y, &format!("{what}: forward"))?;
    assert_close(&got.dx, &want.dx, &format!("{what}: input gradient"))?;
    assert_close(&got.dw, &want.dw, &format!("{what}: weight gradient"))
}

/// Checks both gradients of `sum(conv(x, w) * r)` against central finite differences.
///
/// The loss is linear in every single element of `x` and of `w`, so the difference quotient is
/// exact up to f32 rounding of the outputs, which are summed in f64.
pub(crate) fn check_finite_differences(
    conv: Conv,
    x_shape: [usize; 4],
    w_shape: [usize; 4],
    seed: u64,
) -> Result<()> {
    const EPS: f32 = 1e-2;
    let mut rng = StdRng::seed_from_u64(seed);
    let (x, w) = (uniform(&x_shape, &mut rng)?, uniform(&w_shape, &mut rng)?);
    let r = uniform(conv(&x, &w)?.dims(), &mut rng)?;
    let rv: Vec<f64> = r
        .flatten_all()?
        .to_vec1::<f32>()?
        .into_iter()
        .map(f64::from)
        .collect();
    let loss = |x: &Tensor, w: &Tensor| -> Result<f64> {
        let y = conv(x, w)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(y.iter().zip(&rv).map(|(&y, r)| f64::from(y) * r).sum())
    };
    let analytic = grads(conv, &x, &w, &r)?;
    let nudge = |t: &Tensor, i: usize, d: f32| -> Result<Tensor> {
        let mut v = t.flatten_all()?.to_vec1::<f32>()?;
        v[i] += d;
        Tensor::from_vec(v, t.dims(), t.device())
    };
    let mut checked = 0;
    for (name, grad, is_x) in [
        ("input", &analytic.dx, true),
        ("weight", &analytic.dw, false),
    ] {
        let g = grad.flatten_all()?.to_vec1::<f32>()?;
        let scale = g.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
        assert!(scale > 0.0, "{name} gradient is all zeros");
        for (i, &gi) in g.iter().enumerate() {
            let t = if is_x { &x } else { &w };
            let (plus, minus) = (nudge(t, i, EPS)?, nudge(t, i, -EPS)?);
            let (lp, lm) = if is_x {
                (loss(&plus, &w)?, loss(&minus, &w)?)
            } else {
                (loss(&x, &plus)?, loss(&x, &minus)?)
            };
            let fd = (lp - lm) / (2.0 * f64::from(EPS));
            let err = (fd - f64::from(gi)).abs();
            assert!(
                err <= 1e-3 * scale + 1e-4,
                "{name} gradient [{i}]: analytic {gi}, finite difference {fd}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, x.elem_count() + w.elem_count());
    Ok(())
}
