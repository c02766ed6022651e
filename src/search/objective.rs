//! The objectives a search ranks on, parsed once from `search.objectives`: validation accuracy
//! (maximized) and costs (minimized). One place computes a trial's value of each, for the driver
//! and for the report.

use super::pareto::Point;
use super::trials::Trial;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// One objective of the search.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Objective {
    /// Best validation top-1 (ranked as the error 1 − top-1).
    ValTop1,
    /// Best validation box mAP50-95 of a YOLO11 detector on the candidate backbone, in a
    /// detection study (ranked as 1 − mAP).
    ValMap,
    /// Trainable parameters.
    Params,
    /// Multiply-accumulates per image.
    Macs,
    /// Measured batch-1 latency on this machine.
    LatencyMs,
    /// Measured batch-1 latency relative to a reference network timed in interleaved pairs
    /// (stable in rank on one machine).
    LatencyRatio,
    /// Batch-1 latency of the exported ONNX model in the tract runtime on this machine.
    RuntimeLatencyMs,
    /// Roofline latency on a named hardware profile.
    Roofline(String),
}

impl FromStr for Objective {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "val_top1" => Objective::ValTop1,
            "val_map" => Objective::ValMap,
            "params" => Objective::Params,
            "macs" => Objective::Macs,
            "latency_ms" => Objective::LatencyMs,
            "latency_ratio" => Objective::LatencyRatio,
            "runtime_latency_ms" => Objective::RuntimeLatencyMs,
            other => match other.strip_prefix("roofline:") {
                Some(p) if !p.is_empty() => Objective::Roofline(p.to_string()),
                _ => {
                    return Err(format!(
                        "unknown objective '{other}' (val_top1, val_map, params, macs, latency_ms, latency_ratio, runtime_latency_ms, roofline:<profile>)"
                    ))
                }
            },
        })
    }
}

impl TryFrom<String> for Objective {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Objective> for String {
    fn from(o: Objective) -> String {
        o.to_string()
    }
}

impl fmt::Display for Objective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Objective::ValTop1 => f.write_str("val_top1"),
            Objective::ValMap => f.write_str("val_map"),
            Objective::Params => f.write_str("params"),
            Objective::Macs => f.write_str("macs"),
            Objective::LatencyMs => f.write_str("latency_ms"),
            Objective::LatencyRatio => f.write_str("latency_ratio"),
            Objective::RuntimeLatencyMs => f.write_str("runtime_latency_ms"),
            Objective::Roofline(p) => write!(f, "roofline:{p}"),
        }
    }
}

impl Objective {
    /// Whether this is a study's score (maximized, stored as the trial's validation score)
    /// rather than a cost.
    pub fn is_score(&self) -> bool {
        matches!(self, Objective::ValTop1 | Objective::ValMap)
    }

    /// The trial's value in minimized form (validation accuracy becomes the error).
    pub fn value(&self, t: &Trial) -> Result<f64> {
        Ok(match self {
            Objective::ValTop1 | Objective::ValMap => 1.0 - t.val_top1.unwrap_or(0.0),
            Objective::Params => t.params as f64,
            Objective::Macs => t.macs as f64,
            Objective::LatencyMs => t.latency_ms,
            Objective::LatencyRatio => t
                .latency_ratio
                .with_context(|| format!("trial {} has no latency ratio", t.index))?,
            Objective::RuntimeLatencyMs => t
                .runtime_latency_ms
                .with_context(|| format!("trial {} has no ONNX runtime latency", t.index))?,
            Objective::Roofline(p) => *t
                .roofline_ms
                .get(p)
                .with_context(|| format!("trial {} has no roofline latency for '{p}'", t.index))?,
        })
    }

    /// Short name of a score in tables (`val top-1`, `val mAP50-95`); the objective's key for
    /// a cost.
    pub fn short_name(&self) -> String {
        match self {
            Objective::ValTop1 => "val top-1".into(),
            Objective::ValMap => "val mAP50-95".into(),
            other => other.to_string(),
        }
    }

    /// Axis label and display scale of an objective.
    pub fn axis(&self) -> (String, f64) {
        match self {
            Objective::Params => ("parameters (millions)".into(), 1e-6),
            Objective::Macs => ("MACs per image (millions)".into(), 1e-6),
            Objective::LatencyMs => ("measured latency, batch 1, this machine (ms)".into(), 1.0),
            Objective::LatencyRatio => {
                let (name, width) = super::latency::REFERENCE;
                let what = format!("latency relative to {name} ×{width}, batch 1, this machine");
                (what, 1.0)
            }
            Objective::RuntimeLatencyMs => (
                "ONNX runtime (tract) latency, batch 1, this machine (ms)".into(),
                1.0,
            ),
            Objective::Roofline(p) => (format!("{p} roofline latency (ms)"), 1.0),
            Objective::ValTop1 => ("validation top-1 (%)".into(), 100.0),
            Objective::ValMap => ("validation box mAP50-95 (%)".into(), 100.0),
        }
    }
}

/// The ranking point of a trial under `objectives`.
pub fn trial_point(t: &Trial, objectives: &[Objective]) -> Result<Point> {
    Ok(Point {
        objectives: objectives
            .iter()
            .map(|o| o.value(t))
            .collect::<Result<_>>()?,
        violation: t.violation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_refused() {
        for s in [
            "val_top1",
            "params",
            "macs",
            "latency_ms",
            "latency_ratio",
            "runtime_latency_ms",
            "roofline:pixel6-cpu",
        ] {
            assert_eq!(s.parse::<Objective>().unwrap().to_string(), s);
        }
        for bad in ["latency", "runtime_latency", "roofline:", "", "VAL_TOP1"] {
            let e = bad.parse::<Objective>().unwrap_err();
            assert!(e.contains("unknown objective"), "{e}");
            assert!(e.contains("runtime_latency_ms"), "{e}");
        }
        let o: Objective = serde_json::from_str("\"runtime_latency_ms\"").unwrap();
        assert_eq!(o, Objective::RuntimeLatencyMs);
        assert_eq!(serde_json::to_string(&o).unwrap(), "\"runtime_latency_ms\"");
    }

    #[test]
    fn values_are_minimized() {
        let t = Trial {
            val_top1: Some(0.9),
            params: 7,
            ..Trial::default()
        };
        assert!((Objective::ValTop1.value(&t).unwrap() - 0.1).abs() < 1e-12);
        assert_eq!(Objective::Params.value(&t).unwrap(), 7.0);
        assert!(Objective::Roofline("x".into()).value(&t).is_err());
        assert!(Objective::RuntimeLatencyMs.value(&t).is_err());
        assert!(Objective::LatencyRatio.value(&t).is_err());
        let timed = Trial {
            runtime_latency_ms: Some(1.5),
            latency_ratio: Some(0.8),
            ..t
        };
        assert_eq!(Objective::RuntimeLatencyMs.value(&timed).unwrap(), 1.5);
        assert_eq!(Objective::LatencyRatio.value(&timed).unwrap(), 0.8);
    }
}
