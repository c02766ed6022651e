//! Intervals for comparisons over seeds: Student's t quantile and a linear combination of
//! independent sample means with its Welch–Satterthwaite 95 % interval.

/// Two-sided 95 % quantiles of Student's t for 1 to 30 degrees of freedom (tables).
const T975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];

/// The 97.5 % quantile of Student's t with `dof` degrees of freedom (at least 1; fractional
/// values are interpolated, above 30 a Cornish–Fisher expansion around the normal's 1.96).
pub fn t975(dof: f64) -> f64 {
    let dof = dof.max(1.0);
    if dof <= 30.0 {
        let lo = dof.floor() as usize;
        let hi = dof.ceil() as usize;
        let frac = dof - lo as f64;
        return T975[lo - 1] * (1.0 - frac) + T975[hi - 1] * frac;
    }
    let z = 1.959_963_984_540_054_f64;
    z + (z.powi(3) + z) / (4.0 * dof)
        + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * dof * dof)
}

/// Mean and sample standard deviation (0 for fewer than two values).
pub fn mean_sd(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 {
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// An estimate with its 95 % interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub value: f64,
    pub lo: f64,
    pub hi: f64,
}

impl Estimate {
    /// `Σ wᵢ · mean(samplesᵢ)` over independent samples, with the Welch–Satterthwaite interval.
    /// `None` when a term with a non-zero weight has fewer than two samples.
    pub fn combine(terms: &[(f64, &[f64])]) -> Option<Estimate> {
        let mut value = 0.0;
        let mut var = 0.0;
        let mut dof_den = 0.0;
        for &(w, xs) in terms.iter().filter(|t| t.0 != 0.0) {
            let n = xs.len();
            if n < 2 {
                return None;
            }
            let (mean, sd) = mean_sd(xs);
            let v = w * w * sd * sd / n as f64;
            value += w * mean;
            var += v;
            dof_den += v * v / (n - 1) as f64;
        }
        let half = if var > 0.0 {
            t975(var * var / dof_den) * var.sqrt()
        } else {
            0.0
        };
        Some(Estimate {
            value,
            lo: value - half,
            hi: value + half,
        })
    }

    /// "better" (interval above 0), "worse" (below) or "no significant difference".
    pub fn verdict(&self) -> &'static str {
        if self.lo > 0.0 {
            "better"
        } else if self.hi < 0.0 {
            "worse"
        } else {
            "no significant difference"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_quantiles_follow_the_table_and_approach_the_normal() {
        assert_eq!(t975(2.0), 4.303);
        assert!((t975(2.5) - (4.303 + 3.182) / 2.0).abs() < 1e-12);
        assert_eq!(t975(0.3), 12.706);
        // Tables: t(0.975; 40) = 2.021, t(0.975; 120) = 1.980.
        assert!((t975(40.0) - 2.021).abs() < 2e-3, "{}", t975(40.0));
        assert!((t975(120.0) - 1.980).abs() < 1e-3, "{}", t975(120.0));
        assert!((t975(30.0) - t975(30.000001)).abs() < 1e-3);
    }

    #[test]
    fn a_difference_of_two_means_gets_welchs_interval() {
        let a = [0.90, 0.92, 0.94];
        let b = [0.88, 0.89, 0.90];
        let d = Estimate::combine(&[(1.0, &a), (-1.0, &b)]).unwrap();
        // By hand: means 0.92 and 0.89; variances 4e-4 and 1e-4; v = (4e-4 + 1e-4) / 3;
        // dof = v² / ((4e-4/3)²/2 + (1e-4/3)²/2) = 2.9412.
        let v: f64 = 5e-4 / 3.0;
        let dof = v * v / ((4e-4f64 / 3.0).powi(2) / 2.0 + (1e-4f64 / 3.0).powi(2) / 2.0);
        assert!((dof - 2.9412).abs() < 1e-4);
        // t interpolated between the table's 2 and 3 degrees of freedom.
        let t = 4.303 * (3.0 - dof) + 3.182 * (dof - 2.0);
        assert!((d.value - 0.03).abs() < 1e-12);
        assert!((d.hi - d.value - t * v.sqrt()).abs() < 1e-12);
        assert!((d.value - d.lo - t * v.sqrt()).abs() < 1e-12);
        assert_eq!(d.verdict(), "no significant difference");
        assert_eq!(Estimate::combine(&[(1.0, &a), (-1.0, &b[..1])]), None);
        // A zero weight drops its term, whatever its size.
        assert!(Estimate::combine(&[(1.0, &a), (0.0, &b[..1])]).is_some());
    }

    #[test]
    fn verdicts_read_the_sign_of_the_interval() {
        let e = |lo, hi| Estimate { value: 0.0, lo, hi };
        assert_eq!(e(0.1, 0.2).verdict(), "better");
        assert_eq!(e(-0.2, -0.1).verdict(), "worse");
        assert_eq!(e(-0.1, 0.1).verdict(), "no significant difference");
    }
}
