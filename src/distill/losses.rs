//! Distillation losses, computed in f32. Teacher tensors must come in detached: nothing here
//! lets a gradient reach the teacher, and masks / constants are plain tensors without gradients.

use anyhow::{ensure, Result};
use candle_core::{DType, Tensor, D};
use candle_nn::ops::{log_softmax, softmax};

fn f32(t: &Tensor) -> Result<Tensor> {
    Ok(t.to_dtype(DType::F32)?)
}

/// Hinton KD: KL(softmax(t/T) ‖ softmax(s/T)) summed over classes, averaged over the batch, × T².
pub fn kd_loss(student: &Tensor, teacher: &Tensor, temperature: f64) -> Result<Tensor> {
    Ok((kd_per_sample(student, teacher, temperature)?.mean_all()? * (temperature * temperature))?)
}

/// Per-sample KL(softmax(t/T) ‖ softmax(s/T)) (no T² factor).
pub fn kd_per_sample(student: &Tensor, teacher: &Tensor, temperature: f64) -> Result<Tensor> {
    let s = (f32(student)? / temperature)?;
    let t = (f32(teacher)?.detach() / temperature)?;
    let log_ps = log_softmax(&s, D::Minus1)?;
    let log_pt = log_softmax(&t, D::Minus1)?;
    let pt = log_pt.exp()?;
    Ok((pt * (log_pt - log_ps)?)?.sum(D::Minus1)?)
}

/// One-hot mask [B, K] of the labels (a constant).
fn gt_mask(labels: &Tensor, classes: usize) -> Result<Tensor> {
    let y = labels.to_dtype(DType::U32)?.to_vec1::<u32>()?;
    let mut m = vec![0f32; y.len() * classes];
    for (i, &c) in y.iter().enumerate() {
        ensure!(
            (c as usize) < classes,
            "label {c} out of range for {classes} classes"
        );
        m[i * classes + c as usize] = 1.0;
    }
    Ok(Tensor::from_vec(m, (y.len(), classes), labels.device())?)
}

/// The two parts of Decoupled KD (Zhao et al., CVPR 2022), per sample, without T²:
/// TCKD = KL(b_t ‖ b_s) over the binary (target, non-target) split, and
/// NCKD = KL(p̂_t ‖ p̂_s) over the non-target classes renormalized.
/// Also returns the teacher's target probability p_t(gt). They recombine into KD as
/// KD = TCKD + (1 − p_t(gt)) · NCKD.
pub fn dkd_parts(
    student: &Tensor,
    teacher: &Tensor,
    labels: &Tensor,
    temperature: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (_, k) = student.dims2()?;
    let gt = gt_mask(labels, k)?;
    let other = (1.0 - &gt)?;
    let s = (f32(student)? / temperature)?;
    let t = (f32(teacher)?.detach() / temperature)?;
    let ps = softmax(&s, D::Minus1)?;
    let pt = softmax(&t, D::Minus1)?;
    let bin = |p: &Tensor| -> Result<Tensor> {
        let p_gt = (p * &gt)?.sum_keepdim(D::Minus1)?;
        let p_other = (p * &other)?.sum_keepdim(D::Minus1)?;
        Ok(Tensor::cat(&[p_gt, p_other], 1)?)
    };
    let (bs, bt) = (bin(&ps)?, bin(&pt)?);
    let eps = 1e-12;
    let tckd = (&bt * ((&bt + eps)?.log()? - (&bs + eps)?.log()?)?)?.sum(D::Minus1)?;
    // Non-target distribution: mask the target logit out with a large negative constant.
    let masked = |z: &Tensor| -> Result<Tensor> { Ok((z - (&gt * 1000.0)?)?) };
    let log_ps_nt = log_softmax(&masked(&s)?, D::Minus1)?;
    let log_pt_nt = log_softmax(&masked(&t)?, D::Minus1)?;
    let nckd = ((log_pt_nt.exp()? * &other)? * (log_pt_nt - log_ps_nt)?)?.sum(D::Minus1)?;
    let pt_gt = bt.narrow(1, 0, 1)?.squeeze(1)?;
    Ok((tckd, nckd, pt_gt))
}

/// DKD loss: (α·TCKD + β·NCKD) averaged over the batch, × T², scaled by the warm-up factor
/// min(1, epoch / warmup_epochs).
pub fn dkd_loss(
    student: &Tensor,
    teacher: &Tensor,
    labels: &Tensor,
    alpha: f64,
    beta: f64,
    temperature: f64,
    warmup: f64,
) -> Result<Tensor> {
    let (tckd, nckd, _) = dkd_parts(student, teacher, labels, temperature)?;
    let l = ((tckd.mean_all()? * alpha)? + (nckd.mean_all()? * beta)?)?;
    Ok((l * (temperature * temperature * warmup))?)
}

/// Average-pools `t` [B, C, H, W] down to `h`×`w` when H, W are integer multiples of them.
pub fn pool_to(t: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (_, _, th, tw) = t.dims4()?;
    if (th, tw) == (h, w) {
        return Ok(t.clone());
    }
    ensure!(
        th % h == 0 && tw % w == 0 && th / h == tw / w,
        "teacher feature {th}×{tw} cannot be pooled to the student's {h}×{w}"
    );
    Ok(t.avg_pool2d(th / h)?)
}

/// Attention transfer (Zagoruyko & Komodakis): the spatial map mean_c(f²), L2-normalized per
/// sample; loss = mean squared difference between student and (pooled) teacher maps.
pub fn attention_transfer(student: &Tensor, teacher: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = student.dims4()?;
    let t = pool_to(&f32(teacher)?.detach(), h, w)?;
    let map = |f: &Tensor| -> Result<Tensor> {
        let a = f.sqr()?.mean(1)?.flatten_from(1)?;
        let norm = (a.sqr()?.sum_keepdim(1)?.sqrt()? + 1e-6)?;
        Ok(a.broadcast_div(&norm)?)
    };
    Ok((map(&f32(student)?)? - map(&t)?)?.sqr()?.mean_all()?)
}

/// Mean squared error between an adapted student feature and the (pooled) teacher feature,
/// the teacher's standardized per channel over the batch (mean 0, variance 1, no gradient).
///
/// Residual streams of a trained MobileNetV4 reach values in the hundreds, so the raw squared
/// error would outweigh every other loss term by orders of magnitude; standardized, the loss is
/// of order one whatever the teacher, and the adapter's batch norm learns the scale.
pub fn feature_mse(adapted: &Tensor, teacher: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = adapted.dims4()?;
    let t = standardize_channels(&pool_to(&f32(teacher)?.detach(), h, w)?)?;
    Ok((f32(adapted)? - t)?.sqr()?.mean_all()?)
}

/// `(x − mean_c) / √(var_c + 1e-5)` per channel of `[B, C, H, W]`, statistics over B, H, W.
fn standardize_channels(x: &Tensor) -> Result<Tensor> {
    let channel_mean = |t: &Tensor| t.mean_keepdim(3)?.mean_keepdim(2)?.mean_keepdim(0);
    let centered = x.broadcast_sub(&channel_mean(x)?)?;
    let var = channel_mean(&centered.sqr()?)?;
    Ok(centered.broadcast_div(&(var + 1e-5)?.sqrt()?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn logits(v: &[f32], b: usize) -> Tensor {
        Tensor::from_vec(v.to_vec(), (b, v.len() / b), &Device::Cpu).unwrap()
    }

    fn scalar(t: &Tensor) -> f64 {
        t.to_scalar::<f32>().unwrap() as f64
    }

    #[test]
    fn kd_of_identical_logits_is_zero_and_kd_is_nonnegative() {
        let z = logits(&[1.0, -2.0, 0.5, 3.0, 0.0, 0.1], 2);
        assert!(scalar(&kd_loss(&z, &z, 4.0).unwrap()).abs() < 1e-6);
        let s = logits(&[0.3, 2.0, -1.0, 1.0, 1.0, -4.0], 2);
        for t in [1.0, 2.0, 4.0] {
            assert!(scalar(&kd_loss(&s, &z, t).unwrap()) > 0.0);
        }
    }

    #[test]
    fn kd_gradient_matches_the_closed_form() {
        // d/ds [T² · mean_b KL(pt ‖ ps)] = T · (ps − pt) / B.
        let (b, temp) = (2usize, 3.0f64);
        let s_vals = [0.3f32, 2.0, -1.0, 1.0, 1.0, -4.0];
        let t_vals = [1.0f32, -2.0, 0.5, 3.0, 0.0, 0.1];
        let s = Var::from_tensor(&logits(&s_vals, b)).unwrap();
        let t = logits(&t_vals, b);
        let grads = kd_loss(s.as_tensor(), &t, temp)
            .unwrap()
            .backward()
            .unwrap();
        let g = grads
            .get(&s)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let soft = |v: &[f32]| -> Vec<f64> {
            let e: Vec<f64> = v.iter().map(|x| (*x as f64 / temp).exp()).collect();
            let z: f64 = e.iter().sum();
            e.iter().map(|x| x / z).collect()
        };
        for r in 0..b {
            let ps = soft(&s_vals[r * 3..r * 3 + 3]);
            let pt = soft(&t_vals[r * 3..r * 3 + 3]);
            for c in 0..3 {
                let want = temp * (ps[c] - pt[c]) / b as f64;
                assert!(
                    (g[r * 3 + c] as f64 - want).abs() < 1e-5,
                    "{} vs {want}",
                    g[r * 3 + c]
                );
            }
        }
    }

    #[test]
    fn kd_does_not_send_gradients_to_the_teacher() {
        let s = Var::from_tensor(&logits(&[0.3, 2.0, -1.0], 1)).unwrap();
        let t = Var::from_tensor(&logits(&[1.0, -2.0, 0.5], 1)).unwrap();
        let grads = kd_loss(s.as_tensor(), t.as_tensor(), 2.0)
            .unwrap()
            .backward()
            .unwrap();
        assert!(grads.get(&t).is_none());
        let labels = Tensor::new(&[1u32], &Device::Cpu).unwrap();
        let grads = dkd_loss(s.as_tensor(), t.as_tensor(), &labels, 1.0, 8.0, 4.0, 1.0)
            .unwrap()
            .backward()
            .unwrap();
        assert!(grads.get(&t).is_none());
    }

    #[test]
    fn dkd_parts_recombine_into_kd() {
        let s = logits(&[0.3, 2.0, -1.0, 0.7, 1.0, 1.0, -4.0, 2.5], 2);
        let t = logits(&[1.0, -2.0, 0.5, 0.2, 3.0, 0.0, 0.1, -1.0], 2);
        let labels = Tensor::new(&[2u32, 0], &Device::Cpu).unwrap();
        for temp in [1.0, 4.0] {
            let kd = kd_per_sample(&s, &t, temp)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let (tckd, nckd, pt) = dkd_parts(&s, &t, &labels, temp).unwrap();
            let (tckd, nckd, pt) = (
                tckd.to_vec1::<f32>().unwrap(),
                nckd.to_vec1::<f32>().unwrap(),
                pt.to_vec1::<f32>().unwrap(),
            );
            for i in 0..2 {
                let recombined = tckd[i] + (1.0 - pt[i]) * nckd[i];
                assert!(
                    (recombined - kd[i]).abs() < 1e-5,
                    "{recombined} vs {}",
                    kd[i]
                );
                assert!(tckd[i] >= -1e-7 && nckd[i] >= -1e-7);
            }
        }
    }

    #[test]
    fn attention_transfer_and_feature_mse_pool_the_teacher() {
        let d = Device::Cpu;
        let s = Tensor::ones((2, 3, 2, 2), DType::F32, &d).unwrap();
        let t = Tensor::ones((2, 5, 4, 4), DType::F32, &d).unwrap();
        assert!(scalar(&attention_transfer(&s, &t).unwrap()).abs() < 1e-9);
        let bad = Tensor::ones((2, 3, 3, 3), DType::F32, &d).unwrap();
        assert!(feature_mse(&s, &bad).is_err());
    }

    #[test]
    fn feature_mse_compares_with_the_standardized_teacher() {
        let d = Device::Cpu;
        // The student that equals the standardized 2×2 pooling of the teacher has zero loss, at
        // any scale and offset of the teacher.
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let v: Vec<f32> = (0..4 * 3 * 4 * 4)
            .map(|_| rng.random_range(-2.0..2.0))
            .collect();
        let t = Tensor::from_vec(v, (4, 3, 4, 4), &d).unwrap();
        let s = standardize_channels(&t.avg_pool2d(2).unwrap()).unwrap();
        for (scale, offset) in [(1.0, 0.0), (300.0, -40.0)] {
            let t2 = t.affine(scale, offset).unwrap();
            assert!(scalar(&feature_mse(&s, &t2).unwrap()) < 1e-6);
        }
        // A student of zeros is one unit of variance away.
        let zeros = s.zeros_like().unwrap();
        assert!((scalar(&feature_mse(&zeros, &t).unwrap()) - 1.0).abs() < 1e-3);
    }
}
