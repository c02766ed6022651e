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
pub fn correct_topk(logits: &Tensor, labels: &[u32], k: usize) -> Result<usize> {
    let rows = logits.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    Ok(rows
        .iter()
        .zip(labels)
        .filter(|(row, &y)| {
            let target = row[y as usize];
            // Ties count against the sample, so a constant output never looks accurate.
            row.iter().filter(|&&v| v >= target).count() <= k
        })
        .count())
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
}
