//! A worker: stateless, it claims a waiting trial of a study in a database store, trains it with
//! the study's recorded settings (data, recipe, teacher found or built by the same keys), records
//! the result, and exits once the study is closed and its queue drained. While it trains, a
//! second connection sends heartbeats; a trial whose heartbeat goes stale (its worker died) is
//! put back to waiting by the next worker that looks, and failed after too many attempts.

use super::driver::evaluator;
use super::store::{self, OpenStudy, TrialQueue, TrialStore};
use super::study::StudySpec;
use anyhow::{anyhow, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The store's URL (`sqlite:PATH` or `postgres://…`).
    pub storage: String,
    pub study: String,
    pub quiet: bool,
    /// Seconds between heartbeats.
    pub heartbeat_secs: f64,
    /// A running trial whose heartbeat is older than this many seconds is retried.
    pub stale_secs: f64,
    /// Claims of one trial before it is failed.
    pub max_attempts: u32,
    /// Seconds to wait before looking again when nothing is waiting.
    pub poll_secs: f64,
    /// Stop claiming once the process that started this worker is gone (`search --workers`).
    pub exit_with_parent: bool,
}

impl WorkerOptions {
    /// Defaults: heartbeat every 10 s, stale after 60 s, 3 attempts, poll every 2 s.
    pub fn new(storage: &str, study: &str) -> Self {
        Self {
            storage: storage.to_string(),
            study: study.to_string(),
            quiet: false,
            heartbeat_secs: 10.0,
            stale_secs: 60.0,
            max_attempts: 3,
            poll_secs: 2.0,
            exit_with_parent: false,
        }
    }
}

/// This worker's name in the store: host and process id.
fn worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    format!("{host}:{}", std::process::id())
}

/// Works on the study until it is closed and drained; returns how many trials this worker trained.
pub fn work(opts: &WorkerOptions) -> Result<usize> {
    let store = store::open(&opts.storage, &opts.study, OpenStudy::Existing)?;
    let queue = queue_of(store.as_ref())?;
    let spec = StudySpec::from_settings(&queue.settings()?, &store.location())?;
    // Built at the first claim: by then the driver has prepared the teacher (it queues nothing
    // before), so a worker started early never trains a teacher of its own.
    let mut eval = None;
    let me = worker_id();
    let parent = std::os::unix::process::parent_id();
    let mut trained = 0;
    loop {
        if opts.exit_with_parent && std::os::unix::process::parent_id() != parent {
            tracing::warn!("worker {me}: the search that started it is gone; stopping");
            break;
        }
        queue.requeue_stale(opts.stale_secs, opts.max_attempts)?;
        let Some(claim) = queue.claim(&me)? else {
            let c = queue.counts()?;
            if queue.is_closed()? && c.waiting == 0 && c.running == 0 {
                break;
            }
            std::thread::sleep(Duration::from_secs_f64(opts.poll_secs));
            continue;
        };
        let job = &claim.job;
        tracing::info!(
            "worker {me}: trial {} (attempt {})",
            job.index,
            claim.attempt
        );
        let beat = Heartbeat::start(opts, job.index, &me);
        if eval.is_none() {
            eval = Some(evaluator(&spec, opts.quiet)?);
        }
        let trial = eval.as_ref().expect("built above").run_job(job);
        beat.stop();
        store.record(&trial?)?;
        tracing::info!("worker {me}: recorded trial {}", job.index);
        trained += 1;
    }
    tracing::info!(
        "worker {me}: study {} is done; trained {trained} trials",
        opts.study
    );
    Ok(trained)
}

fn queue_of(store: &dyn TrialStore) -> Result<&dyn TrialQueue> {
    store.queue().ok_or_else(|| {
        anyhow!(
            "{}: a JSONL trial log has no work queue; workers need sqlite:PATH or postgres://…",
            store.location()
        )
    })
}

/// A thread that marks one trial alive on its own connection until stopped.
struct Heartbeat {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Heartbeat {
    fn start(opts: &WorkerOptions, index: usize, worker: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, opts, worker) = (Arc::clone(&stop), opts.clone(), worker.to_string());
        let thread = std::thread::spawn(move || {
            let beat = || -> Result<()> {
                let store = store::open(&opts.storage, &opts.study, OpenStudy::Existing)?;
                let tick = Duration::from_millis(100);
                let mut since = Duration::ZERO;
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    since += tick;
                    if since.as_secs_f64() >= opts.heartbeat_secs {
                        queue_of(store.as_ref())?.heartbeat(index, &worker)?;
                        since = Duration::ZERO;
                    }
                }
                Ok(())
            };
            if let Err(e) = beat() {
                tracing::warn!("heartbeats of trial {index} stopped: {e:#}");
            }
        });
        Self { stop, thread }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}
