//! The JSONL trial log (the default store): one JSON line per finished trial, appended and
//! fsynced before the next trial starts, so `kill -9` loses nothing that finished. Opening the
//! log for writing repairs a tail that a crash left behind (a torn line is moved to
//! `trials.jsonl.torn`; a complete record without its newline gets one), so the next append
//! starts on a line of its own. Damage anywhere else is an error naming the line.

use super::{OpenStudy, TrialStore};
use crate::search::trials::Trial;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The log of a search run, open for appending.
#[derive(Debug)]
pub struct JsonlStore {
    path: PathBuf,
}

impl JsonlStore {
    /// Opens the log at `path`: `Create` starts it when missing and repairs a crash-damaged tail;
    /// `Existing` only reads, and the log must be there.
    pub fn open(path: &Path, how: OpenStudy) -> Result<Self> {
        match how {
            OpenStudy::Create(_) => repair_tail(path)?,
            OpenStudy::Existing if !path.is_file() => {
                bail!("no trial log at {}", path.display())
            }
            OpenStudy::Existing => {}
        }
        Ok(Self {
            path: path.to_path_buf(),
        })
    }
}

impl TrialStore for JsonlStore {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn trials(&self) -> Result<Vec<Trial>> {
        load(&self.path)
    }

    fn events(&self) -> Result<Vec<Trial>> {
        load_events(&self.path)
    }

    /// Appends `trial` durably (write + fsync).
    fn record(&self, trial: &Trial) -> Result<()> {
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
fn load(path: &Path) -> Result<Vec<Trial>> {
    let mut by_index: BTreeMap<usize, Trial> = BTreeMap::new();
    for t in load_events(path)? {
        by_index.insert(t.index, t);
    }
    Ok(by_index.into_values().collect())
}

/// Every record of the log in the order it was written: each evaluation as it happened (a
/// promotion is a record of its own). A torn last line is ignored.
fn load_events(path: &Path) -> Result<Vec<Trial>> {
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
    use crate::search::trials::Trial;

    const NEW: OpenStudy = OpenStudy::Create(&serde_json::Value::Null);

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
        let log = JsonlStore::open(&p, NEW).unwrap();
        log.record(&trial(0, 1)).unwrap();
        log.record(&trial(1, 1)).unwrap();
        log.record(&trial(0, 3)).unwrap();
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
        let log = JsonlStore::open(&p, NEW).unwrap();
        log.record(&trial(0, 1)).unwrap();
        for round in 1..=3 {
            tear(&p, b"{\"index\": 9, \"sta");
            let log = JsonlStore::open(&p, NEW).unwrap();
            let loaded = log.trials().unwrap();
            assert_eq!(loaded.len(), round, "round {round}");
            log.record(&trial(round, 1)).unwrap();
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
        let log = JsonlStore::open(&p, NEW).unwrap();
        log.record(&trial(0, 1)).unwrap();
        tear(&p, serde_json::to_string(&trial(1, 1)).unwrap().as_bytes());
        let log = JsonlStore::open(&p, NEW).unwrap();
        let loaded = log.trials().unwrap();
        assert_eq!(loaded.len(), 2);
        log.record(&trial(2, 1)).unwrap();
        assert_eq!(load(&p).unwrap().len(), 3);
        assert!(!p.with_extension("jsonl.torn").exists());
        std::fs::remove_file(&p).unwrap();
    }
}
