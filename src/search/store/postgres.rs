//! The PostgreSQL trial store (`postgres://…`): the SQLite schema on a server, for workers on
//! many machines. A claim takes the lowest waiting trial with `FOR UPDATE SKIP LOCKED`, so
//! concurrent workers never claim the same one. A lost connection is retried with backoff, then
//! reported naming the server.

use super::{
    check_schema, no_such_study, now_secs, parse_job, parse_record, Claim, Counts, Job, OpenStudy,
    TrialQueue, TrialStore, SCHEMA_VERSION,
};
use crate::search::trials::Trial;
use anyhow::{Context, Result};
use postgres::{Client, NoTls, Transaction};
use std::cell::RefCell;
use std::time::Duration;

/// Tries at connecting (and at an operation whose connection dropped) before giving up.
const ATTEMPTS: u32 = 4;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS studies (
    name TEXT PRIMARY KEY,
    settings TEXT NOT NULL,
    schema_version BIGINT NOT NULL,
    closed BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE TABLE IF NOT EXISTS trials (
    study TEXT NOT NULL REFERENCES studies(name),
    idx BIGINT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('waiting', 'running', 'done', 'failed')),
    attempt BIGINT NOT NULL DEFAULT 0,
    heartbeat DOUBLE PRECISION,
    worker TEXT,
    job TEXT,
    record TEXT,
    error TEXT,
    PRIMARY KEY (study, idx)
);";

/// One study on a PostgreSQL server.
pub struct PgStore {
    client: RefCell<Client>,
    config: postgres::Config,
    location: String,
    study: String,
}

/// `url` with its password (in the user part or a `password=` parameter) replaced by `***`.
fn redact(url: &str) -> String {
    let url = match url.find("password=") {
        Some(at) => {
            let end = url[at..].find('&').map_or(url.len(), |e| at + e);
            format!("{}password=***{}", &url[..at], &url[end..])
        }
        None => url.to_string(),
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return url;
    };
    let host_end = rest.find('/').unwrap_or(rest.len());
    match rest[..host_end].rsplit_once('@') {
        Some((user, host)) if user.contains(':') => {
            let name = user.split(':').next().unwrap_or_default();
            format!("{scheme}://{name}:***@{host}{}", &rest[host_end..])
        }
        _ => url,
    }
}

/// Connects, retrying with backoff (0.25 s, doubling) while the server cannot be reached.
fn connect(config: &postgres::Config, location: &str) -> Result<Client> {
    let mut delay = Duration::from_millis(250);
    let mut attempt = 1;
    loop {
        match config.connect(NoTls) {
            Ok(c) => return Ok(c),
            Err(e) if attempt >= ATTEMPTS => {
                return Err(e).with_context(|| {
                    format!("cannot reach the PostgreSQL server at {location} ({ATTEMPTS} tries)")
                })
            }
            Err(e) => tracing::warn!("{location}: {e}; trying again in {delay:?}"),
        }
        std::thread::sleep(delay);
        delay *= 2;
        attempt += 1;
    }
}

impl PgStore {
    /// Opens study `study` on the server at `url` (created, with the schema, by `Create`).
    pub fn open(url: &str, study: &str, how: OpenStudy) -> Result<Self> {
        let location = redact(url);
        let mut config: postgres::Config = url.parse().with_context(|| {
            format!("--storage '{location}' is not a valid PostgreSQL URL (postgres://USER@HOST[:PORT]/DB)")
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        let client = connect(&config, &location)?;
        let store = Self {
            client: RefCell::new(client),
            config,
            location,
            study: study.to_string(),
        };
        store.prepare(how)?;
        Ok(store)
    }

    /// Schema and the study row.
    fn prepare(&self, how: OpenStudy) -> Result<()> {
        let (loc, study) = (self.location.clone(), self.study.clone());
        self.write("opening", |tx| {
            // One schema creator at a time: concurrent CREATE TABLE IF NOT EXISTS can collide.
            tx.execute("SELECT pg_advisory_xact_lock(4242424242)", &[])?;
            tx.batch_execute(SCHEMA)?;
            let row = tx.query_opt(
                "SELECT schema_version FROM studies WHERE name = $1",
                &[&study],
            )?;
            let version: Option<i64> = row.map(|r| r.get(0));
            if let Some(v) = version {
                check_schema(&loc, &study, v)?;
            }
            match (how, version) {
                (OpenStudy::Existing, None) => {
                    let rows = tx.query("SELECT name FROM studies ORDER BY name", &[])?;
                    let known: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
                    Err(no_such_study(&loc, &study, &known))
                }
                (OpenStudy::Existing, Some(_)) => Ok(()),
                (OpenStudy::Create(settings), _) => {
                    tx.execute(
                        "INSERT INTO studies (name, settings, schema_version) VALUES ($1, $2, $3)
                         ON CONFLICT (name) DO UPDATE SET settings = excluded.settings",
                        &[&study, &settings.to_string(), &SCHEMA_VERSION],
                    )?;
                    Ok(())
                }
            }
        })
    }

    /// Runs `f` on the connection, reconnecting (with backoff) when the connection was lost.
    fn with_client<T>(&self, what: &str, mut f: impl FnMut(&mut Client) -> Result<T>) -> Result<T> {
        let mut client = self.client.borrow_mut();
        let mut delay = Duration::from_millis(500);
        let mut attempt = 1;
        loop {
            if client.is_closed() {
                *client = connect(&self.config, &self.location)?;
            }
            match f(&mut client) {
                Ok(v) => return Ok(v),
                Err(e) if client.is_closed() && attempt < ATTEMPTS => {
                    tracing::warn!("{}: connection lost ({e:#}); retrying", self.location);
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("{}: {what} of study '{}'", self.location, self.study)
                    })
                }
            }
            std::thread::sleep(delay);
            delay *= 2;
            attempt += 1;
        }
    }

    /// Runs `f` in one transaction and commits it.
    fn write<T>(&self, what: &str, mut f: impl FnMut(&mut Transaction) -> Result<T>) -> Result<T> {
        self.with_client(what, |c| {
            let mut tx = c.transaction()?;
            let out = f(&mut tx)?;
            tx.commit()?;
            Ok(out)
        })
    }
}

impl TrialStore for PgStore {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn trials(&self) -> Result<Vec<Trial>> {
        let rows = self.with_client("reading the trials", |c| {
            Ok(c.query(
                "SELECT idx, record FROM trials
                 WHERE study = $1 AND record IS NOT NULL ORDER BY idx",
                &[&self.study],
            )?)
        })?;
        rows.iter()
            .map(|r| parse_record(&self.location, &self.study, r.get(0), r.get(1)))
            .collect()
    }

    fn record(&self, trial: &Trial) -> Result<()> {
        let json = serde_json::to_string(trial)?;
        let what = format!("recording trial {}", trial.index);
        self.write(&what, |tx| {
            tx.execute(
                "INSERT INTO trials (study, idx, status, record) VALUES ($1, $2, 'done', $3)
                 ON CONFLICT (study, idx) DO UPDATE
                 SET status = 'done', record = excluded.record, heartbeat = NULL, error = NULL",
                &[&self.study, &(trial.index as i64), &json],
            )?;
            Ok(())
        })
    }

    fn queue(&self) -> Option<&dyn TrialQueue> {
        Some(self)
    }
}

impl TrialQueue for PgStore {
    fn settings(&self) -> Result<serde_json::Value> {
        let text: String = self.with_client("reading the settings", |c| {
            Ok(c.query_one(
                "SELECT settings FROM studies WHERE name = $1",
                &[&self.study],
            )?
            .get(0))
        })?;
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{}: study '{}': malformed settings",
                self.location, self.study
            )
        })
    }

    fn enqueue(&self, jobs: &[Job]) -> Result<()> {
        self.write("enqueueing trials", |tx| {
            for job in jobs {
                tx.execute(
                    "INSERT INTO trials (study, idx, status, job) VALUES ($1, $2, 'waiting', $3)
                     ON CONFLICT (study, idx) DO NOTHING",
                    &[
                        &self.study,
                        &(job.index as i64),
                        &serde_json::to_string(job)?,
                    ],
                )?;
            }
            Ok(())
        })
    }

    fn requeue(&self, jobs: &[Job]) -> Result<()> {
        self.write("requeueing promotions", |tx| {
            for job in jobs {
                tx.execute(
                    "UPDATE trials SET status = 'waiting', job = $1, attempt = 0, worker = NULL,
                     heartbeat = NULL, error = NULL
                     WHERE study = $2 AND idx = $3 AND status IN ('done', 'failed')",
                    &[
                        &serde_json::to_string(job)?,
                        &self.study,
                        &(job.index as i64),
                    ],
                )?;
            }
            Ok(())
        })
    }

    fn failures(&self) -> Result<Vec<(usize, String)>> {
        let rows = self.with_client("reading failed trials", |c| {
            Ok(c.query(
                "SELECT idx, COALESCE(error, '') FROM trials
                 WHERE study = $1 AND status = 'failed' ORDER BY idx",
                &[&self.study],
            )?)
        })?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, i64>(0) as usize, r.get(1)))
            .collect())
    }

    fn claim(&self, worker: &str) -> Result<Option<Claim>> {
        let row = self.write("claiming a trial", |tx| {
            Ok(tx.query_opt(
                "UPDATE trials SET status = 'running', attempt = attempt + 1, worker = $1,
                 heartbeat = $2
                 WHERE study = $3 AND idx = (
                     SELECT idx FROM trials WHERE study = $3 AND status = 'waiting'
                     ORDER BY idx LIMIT 1 FOR UPDATE SKIP LOCKED)
                 RETURNING idx, job, attempt",
                &[&worker, &now_secs(), &self.study],
            )?)
        })?;
        let Some(r) = row else {
            return Ok(None);
        };
        let (idx, attempt): (i64, i64) = (r.get(0), r.get(2));
        Ok(Some(Claim {
            job: parse_job(&self.location, &self.study, idx, r.get(1))?,
            attempt: attempt as u32,
        }))
    }

    fn heartbeat(&self, index: usize, worker: &str) -> Result<()> {
        self.write("sending a heartbeat", |tx| {
            tx.execute(
                "UPDATE trials SET heartbeat = $1
                 WHERE study = $2 AND idx = $3 AND worker = $4 AND status = 'running'",
                &[&now_secs(), &self.study, &(index as i64), &worker],
            )?;
            Ok(())
        })
    }

    fn requeue_stale(&self, stale_secs: f64, max_attempts: u32) -> Result<usize> {
        let cutoff = now_secs() - stale_secs;
        let gave_up = format!(
            "gave up after {max_attempts} attempts: its workers stopped sending heartbeats"
        );
        self.write("requeueing stale trials", |tx| {
            let failed = tx.execute(
                "UPDATE trials SET status = 'failed', error = $1, worker = NULL
                 WHERE study = $2 AND status = 'running' AND heartbeat < $3 AND attempt >= $4",
                &[&gave_up, &self.study, &cutoff, &i64::from(max_attempts)],
            )?;
            let retried = tx.execute(
                "UPDATE trials SET status = 'waiting', worker = NULL
                 WHERE study = $1 AND status = 'running' AND heartbeat < $2",
                &[&self.study, &cutoff],
            )?;
            Ok((failed + retried) as usize)
        })
    }

    fn counts(&self) -> Result<Counts> {
        let rows = self.with_client("counting trials", |c| {
            Ok(c.query(
                "SELECT status, COUNT(*) FROM trials WHERE study = $1 GROUP BY status",
                &[&self.study],
            )?)
        })?;
        let rows: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        Ok(super::counts_from(&rows))
    }

    fn close(&self) -> Result<()> {
        self.write("closing", |tx| {
            tx.execute(
                "UPDATE studies SET closed = TRUE WHERE name = $1",
                &[&self.study],
            )?;
            Ok(())
        })
    }

    fn is_closed(&self) -> Result<bool> {
        self.with_client("reading the study", |c| {
            Ok(
                c.query_one("SELECT closed FROM studies WHERE name = $1", &[&self.study])?
                    .get(0),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("postgres://u:secret@h:5/db"),
            "postgres://u:***@h:5/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact("postgres://u:s@h/db?password=x&port=1"),
            "postgres://u:***@h/db?password=***&port=1"
        );
        assert_eq!(
            redact("postgresql:///db?host=/tmp"),
            "postgresql:///db?host=/tmp"
        );
    }
}
