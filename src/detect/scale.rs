//! YOLO11's compound scales: one letter picks a depth gain, a width gain and a channel cap.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A YOLO11 model size, from nano to extra large.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Yolo11Scale {
    N,
    S,
    M,
    L,
    X,
}

/// The valid scale letters, smallest first.
pub const SCALES: [Yolo11Scale; 5] = [
    Yolo11Scale::N,
    Yolo11Scale::S,
    Yolo11Scale::M,
    Yolo11Scale::L,
    Yolo11Scale::X,
];

impl Yolo11Scale {
    /// The lower-case letter (`n` … `x`).
    pub fn letter(self) -> &'static str {
        match self {
            Yolo11Scale::N => "n",
            Yolo11Scale::S => "s",
            Yolo11Scale::M => "m",
            Yolo11Scale::L => "l",
            Yolo11Scale::X => "x",
        }
    }

    /// (depth gain, width gain, channel cap) as `yolo11.yaml` lists them.
    pub fn multipliers(self) -> (f64, f64, usize) {
        match self {
            Yolo11Scale::N => (0.50, 0.25, 1024),
            Yolo11Scale::S => (0.50, 0.50, 1024),
            Yolo11Scale::M => (0.50, 1.00, 512),
            Yolo11Scale::L => (1.00, 1.00, 512),
            Yolo11Scale::X => (1.00, 1.50, 512),
        }
    }

    /// Whether every C3k2 nests C3k blocks whatever the layer asks: Ultralytics' model parser
    /// switches the flag on for the m, l and x sizes.
    pub fn forces_c3k(self) -> bool {
        matches!(self, Yolo11Scale::M | Yolo11Scale::L | Yolo11Scale::X)
    }

    /// A layer's output channels at this scale: the nominal width capped, scaled, then rounded
    /// up to a multiple of 8.
    pub fn channels(self, nominal: usize) -> usize {
        let (_, width, cap) = self.multipliers();
        let scaled = nominal.min(cap) as f64 * width;
        ((scaled / 8.0).ceil() as usize * 8).max(8)
    }

    /// A layer's repeat count at this scale: counts above one are scaled by the depth gain and
    /// rounded half to even (as Python's `round`), never below one.
    pub fn repeats(self, nominal: usize) -> usize {
        if nominal <= 1 {
            return nominal;
        }
        let (depth, _, _) = self.multipliers();
        ((nominal as f64 * depth).round_ties_even() as usize).max(1)
    }

    /// Parses a model name `yolo11n` … `yolo11x` (any case). `None` when the name does not
    /// start with `yolo`; an error naming the valid models when it does but is not one of them.
    pub fn from_model_name(name: &str) -> Option<Result<Self>> {
        let lower = name.trim().to_ascii_lowercase();
        if !lower.starts_with("yolo") {
            return None;
        }
        let scale = lower.strip_prefix("yolo11").and_then(|l| l.parse().ok());
        Some(scale.ok_or_else(|| {
            let names: Vec<String> = SCALES.iter().map(|s| format!("yolo11{s}")).collect();
            anyhow::anyhow!(
                "unknown detector '{name}' (detectors: {})",
                names.join(", ")
            )
        }))
    }
}

impl fmt::Display for Yolo11Scale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.letter())
    }
}

impl FromStr for Yolo11Scale {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim().to_ascii_lowercase();
        match SCALES.iter().find(|sc| sc.letter() == t) {
            Some(&sc) => Ok(sc),
            None => bail!("unknown YOLO11 scale '{s}' (valid: n, s, m, l, x)"),
        }
    }
}
