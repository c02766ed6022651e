//! Trial stores: where a study's trials live. One trait, three backends with one meaning:
//!
//! * [`jsonl`] — `runs/<name>/trials.jsonl`, the default: one fsynced line per finished trial
//!   (what every earlier version wrote; a torn tail is repaired on open).
//! * [`sqlite`] — `sqlite:PATH`: one embedded database file (WAL, one immediate transaction per
//!   change), able to hold many studies and a work queue.
//! * [`postgres`] — `postgres://…`: the same schema on a PostgreSQL server, for workers on many
//!   machines.
//!
//! The database schema: `studies(name, settings JSON, schema_version, closed)` and
//! `trials(study, idx, status, attempt, heartbeat, worker, job JSON, record JSON, error)`. A
//! trial is `waiting` (queued, `job` says what to train), `running` (claimed by `worker`, alive
//! while its `heartbeat` is fresh), `done` (`record` holds the finished [`Trial`], a diverged one
//! included) or `failed` (given up after too many attempts; `error` says why). A promotion
//! (successive halving) replaces the record of its index.

pub mod jsonl;
pub mod postgres;
pub mod sqlite;

use super::study::SearchState;
use super::trials::{Stage, Trial};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Version of the database schema this build writes; a study written by a newer one is refused.
pub const SCHEMA_VERSION: i64 = 1;

/// What a worker trains: one queued candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub index: usize,
    pub stage: Stage,
    /// Preset name for references; empty for searched candidates.
    #[serde(default)]
    pub label: String,
    /// The architecture as a one-line block string.
    pub arch: String,
    pub epochs: usize,
    /// A promotion: the trial as it stands, to be trained on to `epochs` and recorded again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote: Option<Box<Trial>>,
}

impl Job {
    /// Whether `record`, the latest record of this job's index, is this job's result.
    pub fn finished_by(&self, record: &Trial) -> bool {
        match &self.promote {
            None => true,
            Some(_) => record.epochs >= self.epochs || record.failed.is_some(),
        }
    }
}

/// A job claimed by one worker, and how many times it has been claimed (1 = first try).
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    pub job: Job,
    pub attempt: u32,
}

/// How many trials of a study are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub waiting: usize,
    pub running: usize,
    pub done: usize,
    pub failed: usize,
}

/// A study's finished trials, durable once recorded.
pub trait TrialStore {
    /// Where the store is, for messages (a path or a URL without its password).
    fn location(&self) -> String;
    /// The finished trials, one per index (the latest record), ordered by index.
    fn trials(&self) -> Result<Vec<Trial>>;
    /// Records a finished trial durably; a later record of the same index replaces it.
    fn record(&self, trial: &Trial) -> Result<()>;
    /// Every evaluation in the order it happened (a promotion is one of its own), where the
    /// store keeps them (the trial log); else the latest record of each trial.
    fn events(&self) -> Result<Vec<Trial>> {
        self.trials()
    }
    /// The work queue, for stores that have one (the databases).
    fn queue(&self) -> Option<&dyn TrialQueue> {
        None
    }
}

/// The work queue of a study in a database: what workers claim and train.
pub trait TrialQueue {
    /// The settings the study was created with.
    fn settings(&self) -> Result<serde_json::Value>;
    /// Adds waiting trials (an index already there is left as it is).
    fn enqueue(&self, jobs: &[Job]) -> Result<()>;
    /// Puts finished or failed trials back to waiting with a new job (a promotion, a retry); a
    /// trial that is waiting or running already is left as it is.
    fn requeue(&self, jobs: &[Job]) -> Result<()>;
    /// The trials given up on, with the reason, by index.
    fn failures(&self) -> Result<Vec<(usize, String)>>;
    /// Atomically takes the lowest waiting trial for `worker`, if any.
    fn claim(&self, worker: &str) -> Result<Option<Claim>>;
    /// Marks `worker`'s running trial `index` alive now.
    fn heartbeat(&self, index: usize, worker: &str) -> Result<()>;
    /// Running trials whose heartbeat is older than `stale_secs` go back to waiting, or to
    /// failed once they have had `max_attempts`; returns how many were changed.
    fn requeue_stale(&self, stale_secs: f64, max_attempts: u32) -> Result<usize>;
    /// Trials per state.
    fn counts(&self) -> Result<Counts>;
    /// Says that no more trials will be enqueued: workers exit once the queue is drained.
    fn close(&self) -> Result<()>;
    /// Whether [`TrialQueue::close`] was called.
    fn is_closed(&self) -> Result<bool>;
}

/// How to open a study in a store.
#[derive(Debug, Clone, Copy)]
pub enum OpenStudy<'a> {
    /// Create the study with these settings, or open it and record these settings.
    Create(&'a serde_json::Value),
    /// The study must exist (report, worker).
    Existing,
}

/// A parsed `--storage` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Jsonl(std::path::PathBuf),
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

/// What `--storage` accepts, for error messages.
pub const STORAGE_FORMS: &str =
    "sqlite:PATH, postgres://USER@HOST[:PORT]/DB (or postgresql://…), or a path ending in .jsonl";

impl StoreUrl {
    /// Parses `sqlite:PATH`, `postgres://…` / `postgresql://…`, or a `.jsonl` path.
    pub fn parse(url: &str) -> Result<Self> {
        let url = url.trim();
        if let Some(path) = url.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                bail!("--storage '{url}': sqlite: needs a file path (sqlite:runs/x/trials.sqlite)");
            }
            return Ok(Self::Sqlite(path.into()));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(url.to_string()));
        }
        if url.ends_with(".jsonl") && !url.contains("://") {
            return Ok(Self::Jsonl(url.into()));
        }
        bail!("--storage '{url}' is not a storage this version knows: expected {STORAGE_FORMS}")
    }
}

/// Opens study `study` in the store at `url` (see [`StoreUrl::parse`]).
pub fn open(url: &str, study: &str, how: OpenStudy) -> Result<Box<dyn TrialStore>> {
    let store: Box<dyn TrialStore> = match StoreUrl::parse(url)? {
        StoreUrl::Jsonl(p) => Box::new(jsonl::JsonlStore::open(&p, how)?),
        StoreUrl::Sqlite(p) => Box::new(sqlite::SqliteStore::open(&p, study, how)?),
        StoreUrl::Postgres(u) => Box::new(postgres::PgStore::open(&u, study, how)?),
    };
    Ok(store)
}

/// The finished trials of a run (see [`open_run`]).
pub fn read_run(run_dir: &Path, state: &SearchState, storage: Option<&str>) -> Result<Vec<Trial>> {
    open_run(run_dir, state, storage)?.trials()
}

/// The store of a run, for reading: `storage`, else the one its `search.json` names, else its
/// `trials.jsonl`.
pub fn open_run(
    run_dir: &Path,
    state: &SearchState,
    storage: Option<&str>,
) -> Result<Box<dyn TrialStore>> {
    let url = storage
        .map(str::to_string)
        .or_else(|| state.storage.clone())
        .unwrap_or_else(|| default_url(run_dir));
    open(&url, &state.study.name, OpenStudy::Existing)
}

/// Copies a search run's trials into the store at `url` (every evaluation in the order it
/// happened, where the source keeps them), and makes it the run's store in `search.json`, so
/// that `report` and `search --resume` use it. Returns how many records were written.
pub fn import_run(run_dir: &Path, url: &str) -> Result<usize> {
    let _lock = crate::fsutil::DirLock::acquire(run_dir)?;
    let mut state = SearchState::read(run_dir)?;
    let from = open_run(run_dir, &state, None)?;
    let to = open(
        url,
        &state.study.name,
        OpenStudy::Create(&state.study.settings()),
    )?;
    if to.location() == from.location() {
        bail!("{}: the run already uses this store", to.location());
    }
    let there = to.trials()?.len();
    if there > 0 {
        bail!(
            "{}: study '{}' already holds {there} trials; import into an empty study",
            to.location(),
            state.study.name
        );
    }
    let events = from.events()?;
    for t in &events {
        to.record(t)?;
    }
    state.storage = Some(url.to_string());
    state.write(run_dir)?;
    Ok(events.len())
}

/// The default store of a run folder: its trial log.
pub fn default_url(run_dir: &Path) -> String {
    run_dir.join("trials.jsonl").display().to_string()
}

/// The refusal for a study written by a newer schema.
fn check_schema(location: &str, study: &str, version: i64) -> Result<()> {
    if version > SCHEMA_VERSION {
        bail!(
            "{location}: study '{study}' was written with trial-store schema version {version}, \
             but this mnv4-lab reads up to version {SCHEMA_VERSION}: use a newer mnv4-lab"
        );
    }
    Ok(())
}

/// The refusal for a study that is not in the store, listing those that are.
fn no_such_study(location: &str, study: &str, known: &[String]) -> anyhow::Error {
    let known = match known.is_empty() {
        true => "it holds no studies".to_string(),
        false => format!("it holds: {}", known.join(", ")),
    };
    anyhow::anyhow!("{location}: no study named '{study}' ({known})")
}

/// Counts from (status, count) rows.
fn counts_from(rows: &[(String, i64)]) -> Counts {
    let mut c = Counts::default();
    for (status, n) in rows {
        let n = *n as usize;
        match status.as_str() {
            "waiting" => c.waiting += n,
            "running" => c.running += n,
            "done" => c.done += n,
            _ => c.failed += n,
        }
    }
    c
}

/// Seconds since the Unix epoch, for heartbeats.
fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Parses a stored trial record, naming where it came from.
fn parse_record(location: &str, study: &str, index: i64, json: &str) -> Result<Trial> {
    serde_json::from_str(json).map_err(|e| {
        anyhow::anyhow!("{location}: study '{study}' trial {index}: malformed record: {e}")
    })
}

/// Parses a stored job, naming where it came from.
fn parse_job(location: &str, study: &str, index: i64, json: &str) -> Result<Job> {
    serde_json::from_str(json).map_err(|e| {
        anyhow::anyhow!("{location}: study '{study}' trial {index}: malformed job: {e}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_urls_parse_or_say_what_is_accepted() {
        assert_eq!(
            StoreUrl::parse("sqlite:runs/x/t.sqlite").unwrap(),
            StoreUrl::Sqlite("runs/x/t.sqlite".into())
        );
        assert_eq!(
            StoreUrl::parse("sqlite:///tmp/t.db").unwrap(),
            StoreUrl::Sqlite("/tmp/t.db".into())
        );
        assert!(matches!(
            StoreUrl::parse("postgresql://u@h/db").unwrap(),
            StoreUrl::Postgres(_)
        ));
        assert_eq!(
            StoreUrl::parse("runs/x/trials.jsonl").unwrap(),
            StoreUrl::Jsonl("runs/x/trials.jsonl".into())
        );
        for bad in ["sqlite:", "mysql://h/db", "runs/x", "", "http://x.jsonl"] {
            let e = StoreUrl::parse(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("'{bad}'")), "{e}");
        }
    }
}
