//! The SQLite trial store (`sqlite:PATH`): one embedded database file in WAL mode, every change
//! in one immediate transaction with a full sync, so a `kill -9` at any moment leaves the last
//! committed state. Workers on one machine share it; the immediate transaction makes a claim
//! atomic.

use super::{
    check_schema, no_such_study, now_secs, parse_job, parse_record, Claim, Counts, Job, OpenStudy,
    TrialQueue, TrialStore, SCHEMA_VERSION,
};
use crate::search::trials::Trial;
use anyhow::{bail, Context, Result};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::Duration;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS studies (
    name TEXT PRIMARY KEY,
    settings TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    closed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS trials (
    study TEXT NOT NULL REFERENCES studies(name),
    idx INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('waiting', 'running', 'done', 'failed')),
    attempt INTEGER NOT NULL DEFAULT 0,
    heartbeat DOUBLE PRECISION,
    worker TEXT,
    job TEXT,
    record TEXT,
    error TEXT,
    PRIMARY KEY (study, idx)
);";

/// One study in a SQLite database file.
pub struct SqliteStore {
    conn: RefCell<Connection>,
    path: PathBuf,
    study: String,
}

impl SqliteStore {
    /// Opens study `study` in the database at `path` (created, with the study, by `Create`).
    pub fn open(path: &Path, study: &str, how: OpenStudy) -> Result<Self> {
        let loc = format!("sqlite:{}", path.display());
        match how {
            OpenStudy::Existing if !path.is_file() => bail!("no trial database at {loc}"),
            OpenStudy::Existing => {}
            OpenStudy::Create(_) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                }
            }
        }
        let conn = Connection::open(path).with_context(|| format!("opening {loc}"))?;
        let store = Self {
            conn: RefCell::new(conn),
            path: path.to_path_buf(),
            study: study.to_string(),
        };
        store
            .prepare(how)
            .with_context(|| format!("opening {loc}"))?;
        Ok(store)
    }

    /// Settings, schema and the study row.
    fn prepare(&self, how: OpenStudy) -> Result<()> {
        {
            let conn = self.conn.borrow();
            conn.busy_timeout(Duration::from_secs(60))?;
            let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                tracing::warn!("{}: journal mode is {mode}, not WAL", self.location());
            }
            conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")?;
        }
        self.write(|tx| {
            tx.execute_batch(SCHEMA)?;
            let version: Option<i64> = tx
                .query_row(
                    "SELECT schema_version FROM studies WHERE name = ?1",
                    [&self.study],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(v) = version {
                check_schema(&self.location(), &self.study, v)?;
            }
            match (how, version) {
                (OpenStudy::Existing, None) => {
                    let mut q = tx.prepare("SELECT name FROM studies ORDER BY name")?;
                    let known = q
                        .query_map([], |r| r.get(0))?
                        .collect::<rusqlite::Result<Vec<String>>>()?;
                    Err(no_such_study(&self.location(), &self.study, &known))
                }
                (OpenStudy::Existing, Some(_)) => Ok(()),
                (OpenStudy::Create(settings), _) => {
                    tx.execute(
                        "INSERT INTO studies (name, settings, schema_version) VALUES (?1, ?2, ?3)
                         ON CONFLICT (name) DO UPDATE SET settings = excluded.settings",
                        params![self.study, settings.to_string(), SCHEMA_VERSION],
                    )?;
                    Ok(())
                }
            }
        })
    }

    /// Runs `f` in one immediate (write-locking) transaction and commits it.
    fn write<T>(&self, f: impl FnOnce(&Transaction) -> Result<T>) -> Result<T> {
        let mut conn = self.conn.borrow_mut();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    fn context(&self, what: &str) -> String {
        format!("{}: {what} of study '{}'", self.location(), self.study)
    }
}

impl TrialStore for SqliteStore {
    fn location(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }

    fn trials(&self) -> Result<Vec<Trial>> {
        let conn = self.conn.borrow();
        let mut q = conn.prepare(
            "SELECT idx, record FROM trials WHERE study = ?1 AND record IS NOT NULL ORDER BY idx",
        )?;
        let rows = q
            .query_map([&self.study], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
            .with_context(|| self.context("reading the trials"))?;
        let loc = self.location();
        rows.iter()
            .map(|(i, json)| parse_record(&loc, &self.study, *i, json))
            .collect()
    }

    fn record(&self, trial: &Trial) -> Result<()> {
        let json = serde_json::to_string(trial)?;
        self.write(|tx| {
            tx.execute(
                "INSERT INTO trials (study, idx, status, record) VALUES (?1, ?2, 'done', ?3)
                 ON CONFLICT (study, idx) DO UPDATE
                 SET status = 'done', record = excluded.record, heartbeat = NULL, error = NULL",
                params![self.study, trial.index as i64, json],
            )?;
            Ok(())
        })
        .with_context(|| self.context(&format!("recording trial {}", trial.index)))
    }

    fn queue(&self) -> Option<&dyn TrialQueue> {
        Some(self)
    }
}

impl TrialQueue for SqliteStore {
    fn settings(&self) -> Result<serde_json::Value> {
        let text: String = self.conn.borrow().query_row(
            "SELECT settings FROM studies WHERE name = ?1",
            [&self.study],
            |r| r.get(0),
        )?;
        serde_json::from_str(&text).with_context(|| self.context("malformed settings"))
    }

    fn enqueue(&self, jobs: &[Job]) -> Result<()> {
        self.write(|tx| {
            for job in jobs {
                tx.execute(
                    "INSERT INTO trials (study, idx, status, job) VALUES (?1, ?2, 'waiting', ?3)
                     ON CONFLICT (study, idx) DO NOTHING",
                    params![self.study, job.index as i64, serde_json::to_string(job)?],
                )?;
            }
            Ok(())
        })
        .with_context(|| self.context("enqueueing trials"))
    }

    fn requeue(&self, jobs: &[Job]) -> Result<()> {
        self.write(|tx| {
            for job in jobs {
                tx.execute(
                    "UPDATE trials SET status = 'waiting', job = ?1, attempt = 0, worker = NULL,
                     heartbeat = NULL, error = NULL
                     WHERE study = ?2 AND idx = ?3 AND status IN ('done', 'failed')",
                    params![serde_json::to_string(job)?, self.study, job.index as i64],
                )?;
            }
            Ok(())
        })
        .with_context(|| self.context("requeueing promotions"))
    }

    fn failures(&self) -> Result<Vec<(usize, String)>> {
        let conn = self.conn.borrow();
        let mut q = conn.prepare(
            "SELECT idx, COALESCE(error, '') FROM trials
             WHERE study = ?1 AND status = 'failed' ORDER BY idx",
        )?;
        let rows = q
            .query_map([&self.study], |r| {
                Ok((r.get::<_, i64>(0)? as usize, r.get::<_, String>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>();
        rows.with_context(|| self.context("reading failed trials"))
    }

    fn claim(&self, worker: &str) -> Result<Option<Claim>> {
        let loc = self.location();
        self.write(|tx| {
            let next: Option<(i64, String, u32)> = tx
                .query_row(
                    "SELECT idx, job, attempt FROM trials
                     WHERE study = ?1 AND status = 'waiting' ORDER BY idx LIMIT 1",
                    [&self.study],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let Some((idx, job, attempt)) = next else {
                return Ok(None);
            };
            tx.execute(
                "UPDATE trials SET status = 'running', attempt = attempt + 1, worker = ?1,
                 heartbeat = ?2 WHERE study = ?3 AND idx = ?4",
                params![worker, now_secs(), self.study, idx],
            )?;
            let job = parse_job(&loc, &self.study, idx, &job)?;
            Ok(Some(Claim {
                job,
                attempt: attempt + 1,
            }))
        })
        .with_context(|| self.context("claiming a trial"))
    }

    fn heartbeat(&self, index: usize, worker: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE trials SET heartbeat = ?1
                 WHERE study = ?2 AND idx = ?3 AND worker = ?4 AND status = 'running'",
                params![now_secs(), self.study, index as i64, worker],
            )?;
            Ok(())
        })
    }

    fn requeue_stale(&self, stale_secs: f64, max_attempts: u32) -> Result<usize> {
        let cutoff = now_secs() - stale_secs;
        self.write(|tx| {
            let gave_up = format!(
                "gave up after {max_attempts} attempts: its workers stopped sending heartbeats"
            );
            let failed = tx.execute(
                "UPDATE trials SET status = 'failed', error = ?1, worker = NULL
                 WHERE study = ?2 AND status = 'running' AND heartbeat < ?3 AND attempt >= ?4",
                params![gave_up, self.study, cutoff, max_attempts],
            )?;
            let retried = tx.execute(
                "UPDATE trials SET status = 'waiting', worker = NULL
                 WHERE study = ?1 AND status = 'running' AND heartbeat < ?2",
                params![self.study, cutoff],
            )?;
            Ok(failed + retried)
        })
        .with_context(|| self.context("requeueing stale trials"))
    }

    fn counts(&self) -> Result<Counts> {
        let conn = self.conn.borrow();
        let mut q =
            conn.prepare("SELECT status, COUNT(*) FROM trials WHERE study = ?1 GROUP BY status")?;
        let rows = q
            .query_map([&self.study], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(super::counts_from(&rows))
    }

    fn close(&self) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE studies SET closed = 1 WHERE name = ?1",
                [&self.study],
            )?;
            Ok(())
        })
    }

    fn is_closed(&self) -> Result<bool> {
        let closed: i64 = self.conn.borrow().query_row(
            "SELECT closed FROM studies WHERE name = ?1",
            [&self.study],
            |r| r.get(0),
        )?;
        Ok(closed != 0)
    }
}
