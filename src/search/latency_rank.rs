//! How the latency measures rank architectures: candidates sampled from a search space, each
//! timed in candle ([`measure_latency`]) and in the tract ONNX runtime ([`runtime_latency`]),
//! next to its MACs and its roofline latency on every hardware profile; then Spearman's ρ
//! between every pair of measures.

use super::latency::measure_latency;
use super::space::SearchSpace;
use crate::cost::{cost, Profile};
use crate::export::runtime::runtime_latency;
use crate::report::spearman::spearman;
use crate::space::Arch;
use anyhow::{ensure, Context, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// What to sample and how to time it.
#[derive(Debug, Clone)]
pub struct RankSettings {
    /// Architectures to sample.
    pub samples: usize,
    /// Input resolution (square).
    pub size: usize,
    /// Input channels and classes of every sample.
    pub in_chans: usize,
    pub num_classes: usize,
    /// Seed of the sampler.
    pub seed: u64,
    /// Timed runs per latency measurement (the median is kept).
    pub repeats: usize,
}

/// Every measure of every sampled architecture.
#[derive(Debug, Clone)]
pub struct RankTable {
    /// Measure names: `latency_ms`, `runtime_latency_ms`, `macs`, then `roofline:<profile>`.
    pub measures: Vec<String>,
    /// The sampled architectures as block strings.
    pub archs: Vec<String>,
    /// `values[a][m]`: measure `m` of architecture `a`.
    pub values: Vec<Vec<f64>>,
}

/// A sample of the space: a coarse skeleton with random per-block choices (and MQA, where the
/// space allows it), as the fine stage proposes them.
fn sample(space: &SearchSpace, rng: &mut StdRng, s: &RankSettings) -> Arch {
    let coarse = space.sample_coarse(rng);
    space
        .sample_fine(rng, &coarse)
        .with_io(s.in_chans, s.num_classes)
}

/// Every measure of one architecture, in the order of [`measure_names`].
fn measure_one(arch: &Arch, s: &RankSettings, profiles: &[Profile]) -> Result<Vec<f64>> {
    let c = cost(arch, s.size, s.size, profiles);
    let mut row = vec![
        measure_latency(arch, s.size, s.repeats)
            .context("candle latency")?
            .ms,
        runtime_latency(arch, s.size, s.repeats)?,
        c.macs as f64,
    ];
    row.extend(c.roofline_ms.iter().map(|(_, ms)| *ms));
    Ok(row)
}

/// The measure names for `profiles`.
fn measure_names(profiles: &[Profile]) -> Vec<String> {
    let fixed = ["latency_ms", "runtime_latency_ms", "macs"].map(String::from);
    let roofs = profiles.iter().map(|p| format!("roofline:{}", p.name));
    fixed.into_iter().chain(roofs).collect()
}

/// Samples `s.samples` architectures from `space` and measures each; `progress` is told each
/// finished one (its position and row).
pub fn measure_space(
    space: &SearchSpace,
    profiles: &[Profile],
    s: &RankSettings,
    mut progress: impl FnMut(usize, &Arch, &[f64]),
) -> Result<RankTable> {
    ensure!(s.samples >= 2, "the rank study needs at least two samples");
    ensure!(s.size > 0, "the input size must be positive");
    let mut rng = StdRng::seed_from_u64(s.seed);
    let mut table = RankTable {
        measures: measure_names(profiles),
        archs: Vec::with_capacity(s.samples),
        values: Vec::with_capacity(s.samples),
    };
    for i in 0..s.samples {
        let arch = sample(space, &mut rng, s);
        let row = measure_one(&arch, s, profiles)
            .with_context(|| format!("sample {i}: {}", arch.to_block_string()))?;
        progress(i, &arch, &row);
        table.archs.push(arch.to_block_string());
        table.values.push(row);
    }
    Ok(table)
}

impl RankTable {
    /// One measure over every architecture.
    pub fn column(&self, m: usize) -> Vec<f64> {
        self.values.iter().map(|row| row[m]).collect()
    }

    /// Spearman's ρ between every pair of measures: `rho[i][j]`.
    pub fn correlations(&self) -> Result<Vec<Vec<f64>>> {
        let n = self.measures.len();
        let cols: Vec<Vec<f64>> = (0..n).map(|m| self.column(m)).collect();
        cols.iter()
            .map(|a| cols.iter().map(|b| spearman(a, b)).collect())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::load_profiles;
    use std::path::Path;

    #[test]
    fn a_tiny_study_has_a_symmetric_unit_diagonal_table() {
        let space = SearchSpace::load(Path::new("search_spaces/small.toml")).unwrap();
        let profiles = load_profiles(None).unwrap();
        let s = RankSettings {
            samples: 3,
            size: 16,
            in_chans: 1,
            num_classes: 10,
            seed: 0,
            repeats: 1,
        };
        let mut seen = 0;
        let table = measure_space(&space, &profiles, &s, |_, _, _| seen += 1).unwrap();
        assert_eq!(seen, 3);
        assert_eq!(table.measures.len(), 3 + profiles.len());
        assert!(table.values.iter().flatten().all(|v| *v > 0.0));
        let rho = table.correlations().unwrap();
        for (i, row) in rho.iter().enumerate() {
            assert!((row[i] - 1.0).abs() < 1e-12 || row[i].is_nan());
            for (j, v) in row.iter().enumerate() {
                assert!(v.is_nan() && rho[j][i].is_nan() || (v - rho[j][i]).abs() < 1e-12);
            }
        }
    }
}
