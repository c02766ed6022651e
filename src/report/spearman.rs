//! Spearman's rank correlation: the Pearson correlation of the two samples' ranks, tied values
//! sharing the average of the ranks they span.

use anyhow::{ensure, Result};

/// 1-based ranks of `values`, ties given the average of the ranks they span.
pub fn average_ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let tied = order[start..]
            .iter()
            .take_while(|&&i| values[i] == values[order[start]])
            .count();
        let mean = start as f64 + (tied as f64 + 1.0) / 2.0;
        for &i in &order[start..start + tied] {
            ranks[i] = mean;
        }
        start += tied;
    }
    ranks
}

/// Pearson correlation of two equally long samples; NaN when either is constant.
fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    sab / (saa * sbb).sqrt()
}

/// Spearman's ρ of paired samples `a` and `b` (average ranks for ties). Needs at least two pairs
/// of finite values; NaN when either sample is constant.
pub fn spearman(a: &[f64], b: &[f64]) -> Result<f64> {
    ensure!(
        a.len() == b.len(),
        "rank correlation of samples of different sizes ({} and {})",
        a.len(),
        b.len()
    );
    ensure!(a.len() >= 2, "rank correlation needs at least two pairs");
    ensure!(
        a.iter().chain(b).all(|v| v.is_finite()),
        "rank correlation of a sample with a non-finite value"
    );
    Ok(pearson(&average_ranks(a), &average_ranks(b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_share_the_average_rank() {
        assert_eq!(
            average_ranks(&[10.0, 20.0, 20.0, 5.0, 20.0]),
            vec![2.0, 4.0, 4.0, 1.0, 4.0]
        );
    }

    /// By hand: ranks a = (1, 2.5, 2.5, 4, 5), b = (2, 1, 3, 5, 4); centred on 3 they are
    /// (−2, −0.5, −0.5, 1, 2) and (−1, −2, 0, 2, 1). Σ products = 2 + 1 + 0 + 2 + 2 = 7,
    /// Σ a² = 4 + 0.25 + 0.25 + 1 + 4 = 9.5, Σ b² = 10, so ρ = 7 / √95.
    #[test]
    fn matches_a_hand_computed_example_with_a_tie() {
        let a = [1.0, 3.0, 3.0, 7.0, 9.0];
        let b = [0.2, 0.1, 0.5, 0.9, 0.7];
        let rho = spearman(&a, &b).unwrap();
        assert!((rho - 7.0 / 95f64.sqrt()).abs() < 1e-12, "{rho}");
    }

    #[test]
    fn monotone_samples_correlate_perfectly() {
        let a = [1.0, 2.0, 3.0, 4.0];
        let up = [10.0, 100.0, 1000.0, 10000.0];
        let down = [4.0, 3.0, 2.5, -1.0];
        assert!((spearman(&a, &up).unwrap() - 1.0).abs() < 1e-12);
        assert!((spearman(&a, &down).unwrap() + 1.0).abs() < 1e-12);
    }

    #[test]
    fn bad_samples_are_errors() {
        assert!(spearman(&[1.0, 2.0], &[1.0]).is_err());
        assert!(spearman(&[1.0], &[1.0]).is_err());
        assert!(spearman(&[1.0, f64::NAN], &[1.0, 2.0]).is_err());
        assert!(spearman(&[1.0, 1.0], &[1.0, 2.0]).unwrap().is_nan());
    }
}
