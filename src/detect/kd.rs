//! Distillation losses between two YOLO11 detectors with the same classes and strides: the
//! teacher's per-class sigmoid scores as soft targets for the student's class logits, and the
//! teacher's P3–P5 feature maps as regression targets for the student's (through an adapter).

use super::loss::bce_with_logits;
use anyhow::{ensure, Result};
use candle_core::{DType, Tensor};
use candle_nn::ops::sigmoid;

/// Class-branch distillation for `[B, A, C]` logits: `T² ·` the mean over images and anchors of
/// `Σ_c [BCE(s/T, σ(t/T)) − BCE(t/T, σ(t/T))]`, a per-class Bernoulli KL divergence that is 0
/// exactly when the student's scores equal the teacher's. The teacher side is constant.
pub fn class_kd(student: &Tensor, teacher: &Tensor, temperature: f64) -> Result<Tensor> {
    ensure!(
        student.dims() == teacher.dims(),
        "class logits: student {:?}, teacher {:?}",
        student.dims(),
        teacher.dims()
    );
    ensure!(temperature > 0.0, "the temperature must be positive");
    let (b, a, _) = student.dims3()?;
    let s = (student / temperature)?;
    let t = (teacher.detach() / temperature)?;
    let p = sigmoid(&t)?;
    let kl = (bce_with_logits(&s, &p)? - bce_with_logits(&t, &p)?)?;
    Ok((kl.sum_all()? * (temperature * temperature / (b * a) as f64))?)
}

/// Mean squared error between a student map (already adapted to the teacher's channels) and the
/// teacher's map of the same shape.
pub fn feature_mse(adapted: &Tensor, teacher: &Tensor) -> Result<Tensor> {
    ensure!(
        adapted.dims() == teacher.dims(),
        "feature maps: adapted student {:?}, teacher {:?}",
        adapted.dims(),
        teacher.dims()
    );
    let d = (adapted - teacher.detach())?;
    Ok(d.sqr()?.mean_all()?.to_dtype(DType::F32)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn t(v: &[f32], shape: (usize, usize, usize)) -> Tensor {
        Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn class_kd_is_the_bernoulli_kl_and_vanishes_with_its_gradient_at_the_teacher() {
        let teacher = t(&[0.5, -1.0, 2.0, 0.0], (1, 2, 2));
        let same = Var::from_tensor(&teacher).unwrap();
        let l = class_kd(same.as_tensor(), &teacher, 2.0).unwrap();
        assert!(l.to_scalar::<f32>().unwrap().abs() < 1e-6);
        let g = l.backward().unwrap();
        let g = g
            .get(same.as_tensor())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert!(g.to_scalar::<f32>().unwrap() < 1e-7);
        // By hand: one anchor, one class, T = 1: KL(Bern(σ(0)) || Bern(σ(s))) at s = 1.
        let (s, p) = (1.0f64, 0.5f64);
        let q = 1.0 / (1.0 + (-s).exp());
        let want = p * (p / q).ln() + (1.0 - p) * ((1.0 - p) / (1.0 - q)).ln();
        let got = class_kd(&t(&[1.0], (1, 1, 1)), &t(&[0.0], (1, 1, 1)), 1.0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((got as f64 - want).abs() < 1e-6, "{got} vs {want}");
    }

    #[test]
    fn mismatched_shapes_are_named() {
        let e = class_kd(&t(&[0.0; 2], (1, 1, 2)), &t(&[0.0; 3], (1, 1, 3)), 1.0).unwrap_err();
        assert!(e.to_string().contains("class logits"), "{e}");
        let a = Tensor::zeros((1, 2, 2, 2), DType::F32, &Device::Cpu).unwrap();
        let b = Tensor::zeros((1, 3, 2, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(feature_mse(&a, &b).is_err());
    }
}
