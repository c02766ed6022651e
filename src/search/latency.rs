//! Candidate latency that ranks the same way twice on one machine. Each timed run of the
//! candidate is paired with a run of a fixed reference network ([`REFERENCE`] with the same
//! input and classes), and the candidate is also reported as the median of the per-pair ratios,
//! with a distribution-free 95 % interval: a slow-down that hits both runs of a pair (another
//! process, frequency scaling) cancels in the ratio.

use crate::model::{Mode, Network};
use crate::space::Arch;
use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use std::time::Instant;

/// The reference network: a preset and its width.
pub const REFERENCE: (&str, f64) = ("conv-small", 0.5);
/// Untimed runs of each network before the timed pairs.
const WARMUP_RUNS: usize = 3;

/// A candidate's measured latency.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencyMeasure {
    /// Median batch-1 time of the candidate, milliseconds.
    pub ms: f64,
    /// Median batch-1 time of the reference network in the same pairs, milliseconds.
    pub reference_ms: f64,
    /// Median of candidate / reference over the timed pairs.
    pub ratio: f64,
    /// 95 % interval of that median (order statistics; the sample's range below 6 pairs).
    pub ratio_ci: [f64; 2],
}

/// Batch-1 eval-mode latency of `arch` at `size`², `repeats` timed pairs (at least one) with the
/// reference network after warm-up.
pub fn measure_latency(arch: &Arch, size: usize, repeats: usize) -> Result<LatencyMeasure> {
    let (name, width) = REFERENCE;
    let reference = crate::space::presets::preset(name, width)
        .map_err(anyhow::Error::msg)?
        .with_io(arch.in_chans, arch.num_classes);
    let nets = [
        Network::new(arch, &Device::Cpu, 0)?,
        Network::new(&reference, &Device::Cpu, 0)?,
    ];
    let x = Tensor::zeros((1, arch.in_chans, size, size), DType::F32, &Device::Cpu)?;
    let run = |net: &Network| -> Result<()> {
        net.forward(&x, Mode::Eval)?.sum_all()?.to_scalar::<f32>()?;
        Ok(())
    };
    time_pairs(&|| run(&nets[0]), &|| run(&nets[1]), repeats)
}

/// Times `candidate` against `reference` in `repeats` interleaved pairs (at least one) after
/// warm-up: the candidate's median time and the median per-pair ratio with its interval.
pub fn time_pairs(
    candidate: &dyn Fn() -> Result<()>,
    reference: &dyn Fn() -> Result<()>,
    repeats: usize,
) -> Result<LatencyMeasure> {
    let time = |f: &dyn Fn() -> Result<()>| -> Result<f64> {
        let t0 = Instant::now();
        f()?;
        Ok(t0.elapsed().as_secs_f64() * 1e3)
    };
    for _ in 0..WARMUP_RUNS {
        time(candidate)?;
        time(reference)?;
    }
    let (mut ms, mut reference_ms, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..repeats.max(1) {
        // Alternate which runs first, so neither always runs on a warmer cache.
        let (a, b) = match i % 2 {
            0 => (time(candidate)?, time(reference)?),
            _ => {
                let b = time(reference)?;
                (time(candidate)?, b)
            }
        };
        ms.push(a);
        reference_ms.push(b);
        ratios.push(a / b);
    }
    let ratio_ci = median_interval(&mut ratios);
    Ok(LatencyMeasure {
        ms: median(&mut ms),
        reference_ms: median(&mut reference_ms),
        ratio: median(&mut ratios),
        ratio_ci,
    })
}

/// The median of a non-empty sample (the upper one of an even count), sorting it.
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// A distribution-free interval of ≥ 95 % for the median of a non-empty sample: the k-th
/// smallest and k-th largest values, with k the largest rank such that
/// P(Binomial(n, ½) < k) ≤ 2.5 %; the sample's range when n is too small for that.
pub fn median_interval(v: &mut [f64]) -> [f64; 2] {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let mut k = 0;
    let (mut below, mut term) = (0.0f64, 0.5f64.powi(n as i32));
    // below = P(B ≤ j − 1) as j grows; term = P(B = j).
    for j in 0..n {
        if below + term > 0.025 {
            break;
        }
        below += term;
        term *= (n - j) as f64 / (j + 1) as f64;
        k = j + 1;
    }
    let k = k.max(1);
    [v[k - 1], v[n - k]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_interval_uses_binomial_order_statistics() {
        // n = 10: P(B ≤ 1) = 11/1024 ≤ 2.5 % < P(B ≤ 2) = 56/1024, so the 2nd and 9th values.
        let mut v: Vec<f64> = (1..=10).rev().map(f64::from).collect();
        assert_eq!(median_interval(&mut v), [2.0, 9.0]);
        // n = 5 is too small for 95 %: the range.
        assert_eq!(median_interval(&mut [3.0, 1.0, 2.0, 5.0, 4.0]), [1.0, 5.0]);
        // n = 20: P(B ≤ 5) = 2.07 % ≤ 2.5 % < P(B ≤ 6) = 5.77 %, so the 6th and 15th.
        let mut v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(median_interval(&mut v), [6.0, 15.0]);
    }

    #[test]
    fn the_reference_measured_against_itself_is_near_one() {
        let (name, width) = REFERENCE;
        let arch = crate::space::presets::preset(name, width)
            .unwrap()
            .with_io(1, 10);
        let m = measure_latency(&arch, 32, 9).unwrap();
        assert!(m.ms > 0.0 && m.ratio_ci[0] <= m.ratio && m.ratio <= m.ratio_ci[1]);
        assert!((0.3..3.0).contains(&m.ratio), "{m:?}");
    }
}
