//! The measured noise floor of a search: front members trained again with another weight seed
//! ([`super::trials::Stage::Repeat`]) against their first evaluation.

use super::trials::Trial;
use std::fmt::Write as _;

/// Repeated evaluations and the standard deviation of one evaluation they imply.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseFloor {
    /// (member index, first validation top-1, repeated validation top-1).
    pub pairs: Vec<(usize, f64, f64)>,
    /// √(Σ (a − b)² / 2n): the standard deviation of one evaluation's validation top-1.
    pub sigma: f64,
}

impl NoiseFloor {
    /// The floor from every trained repeat in `trials` and its member; `None` without one.
    pub fn from_trials(trials: &[Trial]) -> Option<Self> {
        let pairs: Vec<(usize, f64, f64)> = trials
            .iter()
            .filter_map(|r| {
                let of = r.repeat_of()?;
                let first = trials.iter().find(|t| t.index == of)?;
                Some((of, first.val_top1?, r.val_top1?))
            })
            .collect();
        if pairs.is_empty() {
            return None;
        }
        let sq: f64 = pairs.iter().map(|(_, a, b)| (a - b).powi(2)).sum();
        let sigma = (sq / (2 * pairs.len()) as f64).sqrt();
        Some(Self { pairs, sigma })
    }

    /// The smallest difference between two single evaluations that is resolved at 95 %:
    /// 1.96 · √2 · σ.
    pub fn resolved_gap(&self) -> f64 {
        1.96 * std::f64::consts::SQRT_2 * self.sigma
    }

    /// The report's noise section (Markdown); `score` names the validation score
    /// (`val top-1`, `val mAP50-95`).
    pub fn markdown(&self, score: &str) -> String {
        let mut md = String::from("\n## Noise floor\n\n");
        let _ = writeln!(
            md,
            "{} front member(s) trained again with another weight seed (same data order and budget): one evaluation's {score} varies by σ = {:.2} points, so two single evaluations closer than 1.96·√2·σ = {:.2} points are not resolved (marked ≈ in the front table, against the next cheaper member). With this few repeats σ itself is uncertain.\n",
            self.pairs.len(),
            100.0 * self.sigma,
            100.0 * self.resolved_gap()
        );
        let _ = writeln!(
            md,
            "| member | {score} | again | difference |\n|---:|---:|---:|---:|"
        );
        for (i, a, b) in &self.pairs {
            let _ = writeln!(
                md,
                "| {i} | {:.2}% | {:.2}% | {:+.2} |",
                100.0 * a,
                100.0 * b,
                100.0 * (b - a)
            );
        }
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::trials::Stage;

    fn trial(index: usize, stage: Stage, label: &str, val: f64) -> Trial {
        Trial {
            index,
            stage,
            label: label.into(),
            val_top1: Some(val),
            ..Trial::default()
        }
    }

    #[test]
    fn the_floor_pools_the_squared_differences_of_every_repeat() {
        let trials = [
            trial(3, Stage::Fine, "", 0.80),
            trial(5, Stage::Coarse, "", 0.70),
            trial(9, Stage::Repeat, "t0003", 0.78),
            trial(10, Stage::Repeat, "t0005", 0.74),
        ];
        let n = NoiseFloor::from_trials(&trials).unwrap();
        assert_eq!(n.pairs, vec![(3, 0.80, 0.78), (5, 0.70, 0.74)]);
        let want = ((0.02f64.powi(2) + 0.04f64.powi(2)) / 4.0).sqrt();
        assert!((n.sigma - want).abs() < 1e-12);
        assert!((n.resolved_gap() - 1.96 * 2f64.sqrt() * want).abs() < 1e-12);
        assert!(n
            .markdown("val top-1")
            .contains("| 3 | 80.00% | 78.00% | -2.00 |"));
        assert_eq!(NoiseFloor::from_trials(&trials[..2]), None);
    }
}
