//! The trial log: one JSON line per finished trial, appended and fsynced before the next trial
//! starts, so `kill -9` loses nothing that finished. Opening the log for writing repairs a tail
//! that a crash left behind (a torn line is moved to `trials.jsonl.torn`; a complete record
//! without its newline gets one), so the next append starts on a line of its own. Damage
//! anywhere else is an error naming the line.

use super::strategy::StrategyKind;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Which part of the search produced a trial.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Widths and depths with a fixed inverted bottleneck.
    #[default]
    Coarse,
    /// Per-block UIB choices and MQA placement on the coarse front's skeletons.
    Fine,
    /// A MobileNetV4 preset trained with the candidates' budget, for comparison.
    Reference,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Coarse => "coarse",
            Stage::Fine => "fine",
            Stage::Reference => "reference",
        })
    }
}

/// One evaluated (or rejected) candidate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    /// Position in the search (0-based, over all stages).
    pub index: usize,
    pub stage: Stage,
    pub strategy: StrategyKind,
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
    /// Why training failed (it diverged), when it did; such a trial is a result, never retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

/// The log of a search run, open for appending.
#[derive(Debug)]
pub struct TrialLog {
    path: PathBuf,
}

impl TrialLog {
    /// Opens (or starts) the log at `path`, repairing a crash-damaged tail; returns the log and
    /// the trials it holds.
    pub fn open(path: &Path) -> Result<(Self, Vec<Trial>)> {
        repair_tail(path)?;
        let trials = load(path)?;
        Ok((
            Self {
                path: path.to_path_buf(),
            },
            trials,
        ))
    }

    /// Appends `trial` durably (write + fsync).
    pub fn append(&self, trial: &Trial) -> Result<()> {
        let mut line = serde_json::to_string(trial)?;
        line.push('\n');
        let path = &self.path;
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening trial log {}", path.display()))?;
        f.write_all(line.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        f.sync_all()
            .with_context(|| format!("syncing {}", path.display()))
    }
}

/// Makes the log end with a newline: a complete last record gets its newline; a torn one is
/// appended to `PATH.torn` and cut off.
fn repair_tail(path: &Path) -> Result<()> {
    let Ok(bytes) = std::fs::read(path) else {
        return Ok(());
    };
    let start = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let tail = &bytes[start..];
    if tail.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let mut f = OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("opening trial log {}", path.display()))?;
    if serde_json::from_slice::<Trial>(tail).is_ok() {
        f.write_all(b"\n")?;
    } else {
        let torn = path.with_extension("jsonl.torn");
        let mut t = OpenOptions::new().create(true).append(true).open(&torn)?;
        t.write_all(tail)?;
        t.write_all(b"\n")?;
        t.sync_all()?;
        f.set_len(start as u64)?;
        tracing::warn!(
            "{}: cut off a torn last line (an interrupted write), kept in {}",
            path.display(),
            torn.display()
        );
    }
    f.sync_all()
        .with_context(|| format!("syncing {}", path.display()))
}

/// Reads the log without changing it. Later records for the same index (a promoted,
/// longer-trained candidate) replace earlier ones; the result is ordered by index. A torn last
/// line is ignored.
pub fn load(path: &Path) -> Result<Vec<Trial>> {
    let mut by_index: BTreeMap<usize, Trial> = BTreeMap::new();
    for t in load_events(path)? {
        by_index.insert(t.index, t);
    }
    Ok(by_index.into_values().collect())
}

/// Every record of the log in the order it was written: each evaluation as it happened (a
/// promotion is a record of its own). A torn last line is ignored.
pub fn load_events(path: &Path) -> Result<Vec<Trial>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let lines: Vec<&str> = text.split('\n').collect();
    let mut events = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Trial>(line) {
            Ok(t) => events.push(t),
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
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial(index: usize, epochs: usize) -> Trial {
        Trial {
            index,
            arch: "a".into(),
            hash: "h".into(),
            feasible: true,
            val_top1: Some(0.5),
            stage_val_top1: Some(0.5),
            params: 1,
            macs: 2,
            latency_ms: 0.1,
            epochs,
            seed: 3,
            wall_seconds: 1.0,
            ..Trial::default()
        }
    }

    fn temp(tag: &str) -> PathBuf {
        let p =
            std::env::temp_dir().join(format!("mnv4-trials-{tag}-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&p);
        let _ = std::fs::remove_file(p.with_extension("jsonl.torn"));
        p
    }

    fn tear(p: &Path, bytes: &[u8]) {
        OpenOptions::new()
            .append(true)
            .open(p)
            .unwrap()
            .write_all(bytes)
            .unwrap();
    }

    #[test]
    fn appends_reload_and_damage_inside_is_named() {
        let p = temp("inside");
        let (log, _) = TrialLog::open(&p).unwrap();
        log.append(&trial(0, 1)).unwrap();
        log.append(&trial(1, 1)).unwrap();
        log.append(&trial(0, 3)).unwrap();
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

    #[test]
    fn a_torn_tail_is_cut_before_the_next_append_three_times_over() {
        let p = temp("torn");
        let (log, _) = TrialLog::open(&p).unwrap();
        log.append(&trial(0, 1)).unwrap();
        for round in 1..=3 {
            tear(&p, b"{\"index\": 9, \"sta");
            let (log, loaded) = TrialLog::open(&p).unwrap();
            assert_eq!(loaded.len(), round, "round {round}");
            log.append(&trial(round, 1)).unwrap();
            assert_eq!(load(&p).unwrap().len(), round + 1, "round {round}");
        }
        let torn = std::fs::read_to_string(p.with_extension("jsonl.torn")).unwrap();
        assert_eq!(torn.lines().count(), 3, "every torn line is kept aside");
        std::fs::remove_file(&p).unwrap();
        std::fs::remove_file(p.with_extension("jsonl.torn")).unwrap();
    }

    #[test]
    fn a_complete_record_without_its_newline_is_kept() {
        let p = temp("nonl");
        let (log, _) = TrialLog::open(&p).unwrap();
        log.append(&trial(0, 1)).unwrap();
        tear(&p, serde_json::to_string(&trial(1, 1)).unwrap().as_bytes());
        let (log, loaded) = TrialLog::open(&p).unwrap();
        assert_eq!(loaded.len(), 2);
        log.append(&trial(2, 1)).unwrap();
        assert_eq!(load(&p).unwrap().len(), 3);
        assert!(!p.with_extension("jsonl.torn").exists());
        std::fs::remove_file(&p).unwrap();
    }
}
