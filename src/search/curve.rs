//! A searched model against the preset curve on one cost axis (MACs or latency): the curve's mean
//! test top-1 interpolated at the model's cost, linearly in log cost between the two presets
//! around it, and the model's difference from it with a Welch 95 % interval over the seeds of
//! all three. Nothing is extrapolated: a model cheaper or dearer than every preset is said to be.

use crate::report::stats::{mean_sd, Estimate};
use std::fmt::Write as _;

/// A model on the cost axis: its cost and its test top-1 over seeds.
#[derive(Debug, Clone, Copy)]
pub struct CurvePoint<'a> {
    pub cost: f64,
    pub top1: &'a [f64],
}

/// Where a model stands against the curve.
#[derive(Debug, Clone, PartialEq)]
pub enum Versus {
    /// Within the curve's cost range: the curve's mean there, and model − curve (`None` with
    /// fewer than two seeds on a side).
    Inside {
        curve_top1: f64,
        delta: Option<Estimate>,
    },
    /// Cheaper than every preset.
    Below,
    /// Dearer than every preset.
    Above,
    /// No preset to compare with.
    NoCurve,
}

/// The model against the curve (presets in any order).
pub fn versus_curve(model: CurvePoint, curve: &[CurvePoint]) -> Versus {
    let mut curve = curve.to_vec();
    curve.sort_by(|a, b| a.cost.total_cmp(&b.cost));
    let (Some(first), Some(last)) = (curve.first(), curve.last()) else {
        return Versus::NoCurve;
    };
    if model.cost < first.cost {
        return Versus::Below;
    }
    if model.cost > last.cost {
        return Versus::Above;
    }
    let upper = curve
        .iter()
        .position(|p| p.cost >= model.cost)
        .unwrap_or(curve.len() - 1);
    let (a, b) = (curve[upper.saturating_sub(1)], curve[upper]);
    let w = if b.cost > a.cost && model.cost > a.cost {
        (model.cost.ln() - a.cost.ln()) / (b.cost.ln() - a.cost.ln())
    } else {
        1.0
    };
    Versus::Inside {
        curve_top1: (1.0 - w) * mean_sd(a.top1).0 + w * mean_sd(b.top1).0,
        delta: Estimate::combine(&[(1.0, model.top1), (w - 1.0, a.top1), (-w, b.top1)]),
    }
}

/// A retrained model's results, as the comparison reads them.
#[derive(Debug, Clone, Copy)]
pub struct Retrained<'a> {
    pub label: &'a str,
    /// A searched model (compared) or a preset on the curve (compared with).
    pub searched: bool,
    pub on_curve: bool,
    /// `kd` or `ce`: models are compared with the curve of their own arm.
    pub arm: &'a str,
    pub macs: f64,
    pub latency_ms: f64,
    /// Test top-1 over seeds.
    pub top1: &'a [f64],
}

/// One cell pair of the table (the curve's top-1 at the model's cost, the difference and its
/// verdict) and whether the model beats the curve.
fn cells(v: &Versus) -> (String, String, bool) {
    match v {
        Versus::Inside { curve_top1, delta } => {
            let curve = format!("{:.2}%", 100.0 * curve_top1);
            match delta {
                Some(d) => (
                    curve,
                    format!(
                        "{:+.2} [{:+.2}, {:+.2}] {}",
                        100.0 * d.value,
                        100.0 * d.lo,
                        100.0 * d.hi,
                        d.verdict()
                    ),
                    d.lo > 0.0,
                ),
                None => (curve, "one seed: no interval".into(), false),
            }
        }
        Versus::Below => ("–".into(), "cheaper than every preset".into(), false),
        Versus::Above => ("–".into(), "dearer than every preset".into(), false),
        Versus::NoCurve => ("–".into(), "no preset in this arm".into(), false),
    }
}

/// The searched models of one arm and how many of them beat the curve.
struct Tally<'a> {
    arm: &'a str,
    models: usize,
    better_at_macs: usize,
    better_at_latency: usize,
}

/// One searched model's table row, and whether it beats the curve of its arm at equal MACs and
/// at equal latency.
fn table_row(models: &[Retrained], m: &Retrained) -> (String, bool, bool) {
    let at = |cost: fn(&Retrained) -> f64| {
        let curve: Vec<CurvePoint> = models
            .iter()
            .filter(|p| p.on_curve && p.arm == m.arm)
            .map(|p| CurvePoint {
                cost: cost(p),
                top1: p.top1,
            })
            .collect();
        let model = CurvePoint {
            cost: cost(m),
            top1: m.top1,
        };
        cells(&versus_curve(model, &curve))
    };
    let (c_macs, d_macs, v_macs) = at(|p| p.macs);
    let (c_lat, d_lat, v_lat) = at(|p| p.latency_ms);
    let row = format!(
        "| {} | {} | {:.2} M | {c_macs} | {d_macs} | {:.3} | {c_lat} | {d_lat} |\n",
        m.label,
        m.arm,
        m.macs / 1e6,
        m.latency_ms
    );
    (row, v_macs, v_lat)
}

/// The report section: every searched model against the curve of its arm at equal MACs and at
/// equal latency (points of top-1, 95 % intervals), and per arm how many are better.
pub fn markdown(models: &[Retrained]) -> String {
    let mut md = String::from("\n## Against the preset curve\n\n");
    md.push_str("Each searched model's test top-1 minus the conv-small curve's at the same MACs and at the same measured latency (the curve interpolated linearly in log cost between the two presets around the model, never extrapolated), in points, with a 95 % Welch interval over the seeds of the model and both presets.\n\n");
    md.push_str("| model | arm | MACs | curve at equal MACs | Δ at equal MACs [95 % CI] | latency (ms) | curve at equal latency | Δ at equal latency [95 % CI] |\n|---|---|---:|---:|---|---:|---:|---|\n");
    let mut tallies: Vec<Tally> = Vec::new();
    for m in models.iter().filter(|m| m.searched) {
        let (row, at_macs, at_latency) = table_row(models, m);
        md.push_str(&row);
        let i = match tallies.iter().position(|t| t.arm == m.arm) {
            Some(i) => i,
            None => {
                tallies.push(Tally {
                    arm: m.arm,
                    models: 0,
                    better_at_macs: 0,
                    better_at_latency: 0,
                });
                tallies.len() - 1
            }
        };
        let t = &mut tallies[i];
        t.models += 1;
        t.better_at_macs += usize::from(at_macs);
        t.better_at_latency += usize::from(at_latency);
    }
    md.push('\n');
    for t in tallies {
        let _ = writeln!(
            md,
            "Arm `{}`: {} of {n} searched models beat the curve at equal MACs and {} of {n} at equal latency, with an interval above 0.\n",
            t.arm,
            t.better_at_macs,
            t.better_at_latency,
            n = t.models
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_curve_is_interpolated_in_log_cost_and_never_extrapolated() {
        let small = [0.80, 0.82];
        let large = [0.88, 0.90];
        let curve = [
            CurvePoint {
                cost: 400.0,
                top1: &large,
            },
            CurvePoint {
                cost: 100.0,
                top1: &small,
            },
        ];
        // 200 is halfway between 100 and 400 in log cost: the curve is at 0.85 there.
        let model = [0.90, 0.92];
        let v = versus_curve(
            CurvePoint {
                cost: 200.0,
                top1: &model,
            },
            &curve,
        );
        let Versus::Inside {
            curve_top1,
            delta: Some(d),
        } = v
        else {
            panic!("{v:?}")
        };
        assert!((curve_top1 - 0.85).abs() < 1e-12);
        assert!((d.value - 0.06).abs() < 1e-12);
        let want = Estimate::combine(&[(1.0, &model), (-0.5, &small), (-0.5, &large)]).unwrap();
        assert!((d.lo - want.lo).abs() < 1e-9 && (d.hi - want.hi).abs() < 1e-9);
        let at = |cost| versus_curve(CurvePoint { cost, top1: &model }, &curve);
        assert_eq!(at(50.0), Versus::Below);
        assert_eq!(at(800.0), Versus::Above);
        // On a preset the curve is that preset.
        let Versus::Inside { curve_top1, .. } = at(100.0) else {
            panic!()
        };
        assert!((curve_top1 - 0.81).abs() < 1e-12);
        let Versus::Inside { curve_top1, .. } = at(400.0) else {
            panic!()
        };
        assert!((curve_top1 - 0.89).abs() < 1e-12);
    }

    #[test]
    fn the_section_compares_each_searched_model_with_the_curve_of_its_arm() {
        let (small, large, good, ce) = ([0.80, 0.81], [0.86, 0.87], [0.90, 0.91], [0.70, 0.71]);
        let model = |label, searched, arm, macs, latency_ms, top1| Retrained {
            label,
            searched,
            on_curve: !searched,
            arm,
            macs,
            latency_ms,
            top1,
        };
        let models = [
            model("conv-small-0.5", false, "kd", 1e6, 1.0, &small[..]),
            model("conv-small-1", false, "kd", 4e6, 4.0, &large[..]),
            model("t0003", true, "kd", 2e6, 8.0, &good[..]),
            model("t0003", true, "ce", 2e6, 8.0, &ce[..]),
        ];
        let md = markdown(&models);
        assert!(
            md.contains("| t0003 | kd | 2.00 M | 83.50% | +7.00 ["),
            "{md}"
        );
        assert!(md.contains("dearer than every preset"), "{md}");
        assert!(md.contains("Arm `kd`: 1 of 1 searched models beat the curve at equal MACs and 0 of 1 at equal latency"), "{md}");
        // The ce arm has no curve of its own here: nothing to compare with.
        assert!(md.contains("no preset in this arm"), "{md}");
        assert!(md.contains("Arm `ce`: 0 of 1"), "{md}");
    }
}
