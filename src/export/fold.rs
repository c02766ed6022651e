//! Batch norm in eval mode as a per-channel affine map, and folded into the convolution before it.

/// The four tensors of one batch norm.
#[derive(Debug, Clone)]
pub struct BnParams {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub running_mean: Vec<f32>,
    pub running_var: Vec<f32>,
}

impl BnParams {
    /// Eval-mode `(scale, shift)`: `y = scale · x + shift` with `scale = weight / √(var + eps)`,
    /// `shift = bias − mean · scale` (computed in f64).
    pub fn affine(&self, eps: f64) -> (Vec<f32>, Vec<f32>) {
        let mut scale = Vec::with_capacity(self.weight.len());
        let mut shift = Vec::with_capacity(self.weight.len());
        for c in 0..self.weight.len() {
            let s = f64::from(self.weight[c]) / (f64::from(self.running_var[c]) + eps).sqrt();
            scale.push(s as f32);
            shift.push((f64::from(self.bias[c]) - f64::from(self.running_mean[c]) * s) as f32);
        }
        (scale, shift)
    }
}

/// Folds `bn` into a bias-free convolution whose weight `[out, …]` is `weight`: returns the
/// new weight (each output channel's filter times its scale) and the bias (the shift).
pub fn fold_into_conv(weight: &[f32], bn: &BnParams, eps: f64) -> (Vec<f32>, Vec<f32>) {
    let (scale, shift) = bn.affine(eps);
    let per_out = weight.len() / scale.len();
    let folded = weight
        .chunks(per_out)
        .zip(&scale)
        .flat_map(|(filter, &s)| filter.iter().map(move |&w| w * s))
        .collect();
    (folded, shift)
}

/// Multiplies each output channel of a convolution (weight `[out, …]`, optional bias `[out]`)
/// by `gamma[out]`: a per-channel scale after the conv, folded into it.
pub fn scale_outputs(weight: &mut [f32], bias: Option<&mut [f32]>, gamma: &[f32]) {
    let per_out = weight.len() / gamma.len();
    for (filter, &g) in weight.chunks_mut(per_out).zip(gamma) {
        filter.iter_mut().for_each(|w| *w *= g);
    }
    if let Some(bias) = bias {
        bias.iter_mut().zip(gamma).for_each(|(b, &g)| *b *= g);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layer_scale_multiplies_each_output_filter_and_its_bias() {
        let mut w = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut b = [1.0, -1.0];
        scale_outputs(&mut w, Some(&mut b), &[2.0, 0.5]);
        assert_eq!(w, [2.0, 4.0, 6.0, 2.0, 2.5, 3.0]);
        assert_eq!(b, [2.0, -0.5]);
        scale_outputs(&mut w, None, &[0.5, 2.0]);
        assert_eq!(w, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn folding_scales_each_output_filter_and_moves_the_shift_into_the_bias() {
        let bn = BnParams {
            weight: vec![4.0, 1.0],
            bias: vec![0.5, -1.0],
            running_mean: vec![1.0, 0.0],
            running_var: vec![3.0, 0.0],
        };
        let (w, b) = fold_into_conv(&[1.0, 2.0, 3.0, 4.0], &bn, 1.0);
        assert_eq!(w, [2.0, 4.0, 3.0, 4.0]);
        assert_eq!(b, [-1.5, -1.0]);
    }
}
