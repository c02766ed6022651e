//! What the inference kernels do to a convolution's sums before they leave the cache:
//! `y = act(z + bias) · gamma + residual`, per channel of a channels-last row block.

use super::act::{with_act, Act, ActFn};
use super::simd::multiversion;

/// The per-channel tail of a convolution in the inference path, with batch norm already folded
/// into its weight and `bias`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Epilogue<'a> {
    /// One value per output channel.
    pub bias: &'a [f32],
    pub act: Act,
    /// A layer scale that could not be folded (the convolution has an activation).
    pub gamma: Option<&'a [f32]>,
}

impl Epilogue<'_> {
    /// The number of channels.
    pub fn channels(&self) -> usize {
        self.bias.len()
    }

    /// Applies the epilogue in place to `rows` (`[n, C]`, `C = bias.len()`), adding the
    /// same-shaped `residual` last when given.
    pub fn apply(&self, rows: &mut [f32], residual: Option<&[f32]>) {
        let c = self.channels();
        assert!(
            c > 0 && rows.len().is_multiple_of(c),
            "epilogue: rows of {c} channels"
        );
        if let Some(r) = residual {
            assert_eq!(r.len(), rows.len(), "epilogue: residual shape");
        }
        if let Some(g) = self.gamma {
            assert_eq!(g.len(), c, "epilogue: gamma length");
        }
        apply_rows(self, rows, residual);
    }
}

multiversion! {
    fn apply_rows(ep: &Epilogue, rows: &mut [f32], residual: Option<&[f32]>) {
        with_act!(ep.act, A => match (ep.gamma, residual) {
            (None, None) => plain::<A>(rows, ep.bias),
            (None, Some(r)) => with_residual::<A>(rows, ep.bias, r),
            (Some(g), r) => scaled::<A>(rows, ep.bias, g, r),
        })
    }
}

#[inline(always)]
fn plain<A: ActFn>(rows: &mut [f32], bias: &[f32]) {
    for row in rows.chunks_exact_mut(bias.len()) {
        for (y, &b) in row.iter_mut().zip(bias) {
            *y = A::apply(*y + b);
        }
    }
}

#[inline(always)]
fn with_residual<A: ActFn>(rows: &mut [f32], bias: &[f32], residual: &[f32]) {
    let c = bias.len();
    for (row, res) in rows.chunks_exact_mut(c).zip(residual.chunks_exact(c)) {
        for ((y, &b), &r) in row.iter_mut().zip(bias).zip(res) {
            *y = A::apply(*y + b) + r;
        }
    }
}

#[inline(always)]
fn scaled<A: ActFn>(rows: &mut [f32], bias: &[f32], gamma: &[f32], residual: Option<&[f32]>) {
    let c = bias.len();
    for (i, row) in rows.chunks_exact_mut(c).enumerate() {
        for ((y, &b), &g) in row.iter_mut().zip(bias).zip(gamma) {
            *y = A::apply(*y + b) * g;
        }
        if let Some(res) = residual {
            for (y, &r) in row.iter_mut().zip(&res[i * c..(i + 1) * c]) {
                *y += r;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::simd::{capped, ALL};

    #[test]
    fn bias_activation_scale_and_residual_in_that_order() {
        let bias = [1.0, -1.0];
        let gamma = [2.0, 3.0];
        let res = [10.0, 20.0, 30.0, 40.0];
        let z = [-3.0f32, 0.5, 0.5, 4.0];
        let ep = |act, gamma| Epilogue {
            bias: &bias,
            act,
            gamma,
        };
        let run = |e: Epilogue, r: Option<&[f32]>| {
            let at_each: Vec<[f32; 4]> = ALL
                .map(|limit| {
                    let mut y = z;
                    capped(limit, || e.apply(&mut y, r));
                    y
                })
                .to_vec();
            assert!(at_each.windows(2).all(|w| w[0] == w[1]), "{at_each:?}");
            at_each[0]
        };
        assert_eq!(run(ep(Act::Identity, None), None), [-2.0, -0.5, 1.5, 3.0]);
        assert_eq!(run(ep(Act::Relu, None), None), [0.0, 0.0, 1.5, 3.0]);
        assert_eq!(
            run(ep(Act::Relu, None), Some(&res)),
            [10.0, 20.0, 31.5, 43.0]
        );
        let scaled = run(ep(Act::Relu, Some(&gamma)), Some(&res));
        assert_eq!(scaled, [10.0, 20.0, 33.0, 49.0]);
        let gelu = run(ep(Act::Gelu, None), None);
        assert!((gelu[2] - 1.399_789).abs() < 1e-5, "{gelu:?}");
    }
}
