//! Classification loss and accuracy, computed in f32.

use anyhow::Result;
use candle_core::{DType, Tensor, D};

/// Cross-entropy with label smoothing ε (PyTorch's definition): the target is (1−ε)·one-hot + ε/K.
/// `logits` [B, K], `labels` u32 [B]; returns the batch mean.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor, smoothing: f64) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?;
    let nll = logp
        .gather(&labels.to_dtype(DType::U32)?.unsqueeze(1)?, 1)?
        .squeeze(1)?
        .neg()?
        .mean_all()?;
    if smoothing == 0.0 {
        return Ok(nll);
    }
    let uniform = logp.mean(D::Minus1)?.neg()?.mean_all()?;
    Ok(((nll * (1.0 - smoothing))? + (uniform * smoothing)?)?)
}

/// Number of samples whose label is among the top-`k` logits.
///
/// A sample whose logits hold a NaN or an infinity counts as wrong: a diverged model scores 0.
pub fn correct_topk(logits: &Tensor, labels: &[u32], k: usize) -> Result<usize> {
    let rows = logits.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    Ok(rows
        .iter()
        .zip(labels)
        .filter(|(row, &y)| {
            let target = row[y as usize];
            // Ties count against the sample, so a constant output never looks accurate.
            row.iter().all(|v| v.is_finite()) && row.iter().filter(|&&v| v >= target).count() <= k
        })
        .count())
}

/// Whether every element of `t` is finite (no NaN, no ±inf), e.g. to refuse a diverged teacher.
/// Computed on `t`'s device; only one scalar is copied back.
pub fn all_finite(t: &Tensor) -> Result<bool> {
    let x = t.to_dtype(DType::F32)?;
    // 0·x is 0 where x is finite and NaN where it is NaN or ±inf; the sum keeps any NaN.
    let s = (x * 0.0)?.sum_all()?.to_scalar::<f32>()?;
    Ok(s == 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn cross_entropy_matches_hand_computation() {
        let d = Device::Cpu;
        let logits = Tensor::new(&[[2.0f32, 0.0, -1.0], [0.5, 0.5, 3.0]], &d).unwrap();
        let labels = Tensor::new(&[0u32, 1], &d).unwrap();
        let lse = |r: [f64; 3]| r.iter().map(|v| v.exp()).sum::<f64>().ln();
        let (r0, r1) = ([2.0, 0.0, -1.0], [0.5, 0.5, 3.0]);
        let nll = ((lse(r0) - 2.0) + (lse(r1) - 0.5)) / 2.0;
        let got = cross_entropy(&logits, &labels, 0.0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((got as f64 - nll).abs() < 1e-5);
        let unif = ((3.0 * lse(r0) - 1.0) / 3.0 + (3.0 * lse(r1) - 4.0) / 3.0) / 2.0;
        let want = 0.9 * nll + 0.1 * unif;
        let got = cross_entropy(&logits, &labels, 0.1)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((got as f64 - want).abs() < 1e-5);
    }

    #[test]
    fn topk_counts_ties_against_the_sample() {
        let d = Device::Cpu;
        let logits = Tensor::new(&[[1.0f32, 3.0, 2.0], [0.0, 0.0, 0.0]], &d).unwrap();
        assert_eq!(correct_topk(&logits, &[1, 0], 1).unwrap(), 1);
        assert_eq!(correct_topk(&logits, &[2, 0], 2).unwrap(), 1);
        assert_eq!(correct_topk(&logits, &[0, 0], 3).unwrap(), 2);
    }

    #[test]
    fn non_finite_rows_score_zero_at_top1_and_top5() {
        let d = Device::Cpu;
        let good: Vec<f32> = (0..8).map(|i| i as f32).collect();
        let mut rows = vec![good.clone()];
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for at in [0, 7] {
                let mut r = good.clone();
                r[at] = bad;
                rows.push(r);
            }
        }
        rows.push(vec![f32::NAN; 8]);
        let flat: Vec<f32> = rows.concat();
        let logits = Tensor::from_vec(flat, (rows.len(), 8), &d).unwrap();
        // Label 7 holds the largest finite logit in every row.
        let labels = vec![7u32; rows.len()];
        assert_eq!(correct_topk(&logits, &labels, 1).unwrap(), 1);
        assert_eq!(correct_topk(&logits, &labels, 5).unwrap(), 1);
        let zeros = vec![0u32; rows.len()];
        assert_eq!(correct_topk(&logits, &zeros, 5).unwrap(), 0);
    }

    #[test]
    fn all_finite_spots_nan_and_inf() {
        let d = Device::Cpu;
        let ok = Tensor::new(&[[1.0f32, -2.0], [3.0e4, 0.0]], &d).unwrap();
        assert!(all_finite(&ok).unwrap());
        assert!(all_finite(&ok.to_dtype(DType::F16).unwrap()).unwrap());
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let t = Tensor::new(&[[1.0f32, bad], [0.0, 0.0]], &d).unwrap();
            assert!(!all_finite(&t).unwrap(), "{bad}");
        }
        assert!(all_finite(&Tensor::zeros((0, 3), DType::F32, &d).unwrap()).unwrap());
    }
}
