//! The trial log: one JSON line per finished trial, appended and fsynced before the next trial
//! starts, so `kill -9` loses nothing that finished. A torn last line (the write the kill cut)
//! is ignored on reading; damage anywhere else is an error naming the line.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

/// One evaluated (or rejected) candidate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    /// Position in the search (0-based, over all stages).
    pub index: usize,
    /// `coarse`, `fine` or `reference`.
    pub stage: String,
    pub strategy: String,
    /// A label for reference points (the preset name); empty otherwise.
    #[serde(default)]
    pub label: String,
    /// The architecture as a one-line block string.
    pub arch: String,
    /// Hash of the canonical architecture.
    pub hash: String,
    /// Within every budget.
    pub feasible: bool,
    /// Sum of relative budget excesses (0 when feasible).
    pub violation: f64,
    /// Index of the earlier trial with the same architecture, whose results this one reuses.
    pub duplicate_of: Option<usize>,
    /// Best validation top-1 (fraction) after all training; absent when not trained.
    pub val_top1: Option<f64>,
    /// Validation top-1 at the stage's budget, before successive halving — what the strategy saw.
    pub stage_val_top1: Option<f64>,
    pub params: u64,
    pub macs: u64,
    /// Measured latency on this machine: batch 1, median after warm-up, milliseconds.
    pub latency_ms: f64,
    /// Roofline latency per hardware profile, milliseconds.
    pub roofline_ms: BTreeMap<String, f64>,
    /// Epochs trained.
    pub epochs: usize,
    /// Seed of the candidate's weights.
    pub seed: u64,
    pub wall_seconds: f64,
}

/// Appends `trial` to the log durably (write + fsync).
pub fn append(path: &Path, trial: &Trial) -> Result<()> {
    let mut line = serde_json::to_string(trial)?;
    line.push('\n');
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening trial log {}", path.display()))?;
    f.write_all(line.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    f.sync_all()
        .with_context(|| format!("syncing {}", path.display()))?;
    Ok(())
}

/// Reads the log. Later records for the same index (a promoted, longer-trained candidate)
/// replace earlier ones; the result is ordered by index.
pub fn load(path: &Path) -> Result<Vec<Trial>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let lines: Vec<&str> = text.split('\n').collect();
    let mut by_index: BTreeMap<usize, Trial> = BTreeMap::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Trial>(line) {
            Ok(t) => {
                by_index.insert(t.index, t);
            }
            // The last line without its newline is a write cut short by a crash.
            Err(_) if i + 1 == lines.len() => {
                tracing::warn!(
                    "{}: ignoring a torn last line (an interrupted write)",
                    path.display()
                );
            }
            Err(e) => bail!("{} line {}: {e}", path.display(), i + 1),
        }
    }
    Ok(by_index.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial(index: usize, epochs: usize) -> Trial {
        Trial {
            index,
            stage: "coarse".into(),
            strategy: "random".into(),
            label: String::new(),
            arch: "a".into(),
            hash: "h".into(),
            feasible: true,
            violation: 0.0,
            duplicate_of: None,
            val_top1: Some(0.5),
            stage_val_top1: Some(0.5),
            params: 1,
            macs: 2,
            latency_ms: 0.1,
            roofline_ms: BTreeMap::new(),
            epochs,
            seed: 3,
            wall_seconds: 1.0,
        }
    }

    #[test]
    fn appends_reload_and_a_torn_tail_is_ignored() {
        let p = std::env::temp_dir().join(format!("mnv4-trials-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&p);
        append(&p, &trial(0, 1)).unwrap();
        append(&p, &trial(1, 1)).unwrap();
        append(&p, &trial(0, 3)).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"{\"index\": 2, \"sta")
            .unwrap();
        let t = load(&p).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].epochs, 3, "the later record of a trial wins");
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replace("\"index\":1", "\"index\":oops");
        std::fs::write(&p, text).unwrap();
        assert!(load(&p).unwrap_err().to_string().contains("line 2"));
        std::fs::remove_file(&p).unwrap();
    }
}
