//! Claim latency and contention of the work queue: W threads, each with its own connection (as
//! W workers would have), drain a study of N no-op trials (claim, then record a finished trial)
//! from one throw-away PostgreSQL server and from one SQLite file. Heartbeats are left out.
//!
//!     cargo bench --bench queue_contention                 # W = 1, 8, 32; N = 2000
//!     cargo bench --bench queue_contention -- 64 5000      # W = 64, N = 5000
//!
//! Prints a Markdown table: trials per second, claim latency percentiles, and how many trials
//! were claimed more than once (must be 0).

#[path = "../tests/common/pg.rs"]
mod pg;

use mnv4_lab::search::store::{open, Job, OpenStudy};
use mnv4_lab::search::trials::{Stage, Trial};
use std::time::Instant;

/// What one drain measured.
struct Drain {
    seconds: f64,
    /// Latency of every successful claim, milliseconds, sorted.
    claims_ms: Vec<f64>,
    claimed_twice: usize,
    recorded: usize,
}

fn drain(url: &str, study: &str, workers: usize, trials: usize) -> anyhow::Result<Drain> {
    let settings = serde_json::json!({ "version": "queue-bench" });
    let store = open(url, study, OpenStudy::Create(&settings))?;
    let queue = store.queue().expect("a database store has a queue");
    let jobs: Vec<Job> = (0..trials)
        .map(|index| Job {
            index,
            stage: Stage::Coarse,
            label: String::new(),
            arch: String::new(),
            epochs: 1,
            promote: None,
        })
        .collect();
    queue.enqueue(&jobs)?;
    queue.close()?;
    let started = Instant::now();
    let per_worker = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| s.spawn(move || worker(url, study, &format!("bench-{w}"))))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a bench worker panicked"))
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let mut claims_ms = Vec::new();
    let mut seen = vec![0usize; trials];
    for (lat, idx) in per_worker {
        claims_ms.extend(lat);
        for i in idx {
            seen[i] += 1;
        }
    }
    claims_ms.sort_by(f64::total_cmp);
    Ok(Drain {
        seconds,
        claims_ms,
        claimed_twice: seen.iter().filter(|&&n| n > 1).count(),
        recorded: store.trials()?.len(),
    })
}

/// One worker's loop: claim, record, until the queue is empty; its claim latencies and indices.
fn worker(url: &str, study: &str, me: &str) -> anyhow::Result<(Vec<f64>, Vec<usize>)> {
    let store = open(url, study, OpenStudy::Existing)?;
    let queue = store.queue().expect("a database store has a queue");
    let (mut lat, mut idx) = (Vec::new(), Vec::new());
    loop {
        let t0 = Instant::now();
        let Some(claim) = queue.claim(me)? else {
            return Ok((lat, idx));
        };
        lat.push(t0.elapsed().as_secs_f64() * 1e3);
        idx.push(claim.job.index);
        store.record(&Trial {
            index: claim.job.index,
            feasible: true,
            val_top1: Some(0.5),
            epochs: 1,
            ..Trial::default()
        })?;
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (workers, trials) = match args.as_slice() {
        [w, n, ..] => (vec![*w], *n),
        [w] => (vec![*w], 2000),
        _ => (vec![1, 8, 32], 2000),
    };
    let server = pg::start("queue-bench").map_err(anyhow::Error::msg)?;
    let dir = std::env::temp_dir().join(format!("mnv4-queue-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    println!("| store | workers | trials | trials/s | claim p50 ms | p95 ms | p99 ms | max ms | claimed twice |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &w in &workers {
        let sqlite = format!("sqlite:{}", dir.join(format!("w{w}.sqlite")).display());
        for (name, url) in [("PostgreSQL", server.url.as_str()), ("SQLite", &sqlite)] {
            let d = drain(url, &format!("bench-w{w}"), w, trials)?;
            assert_eq!(d.recorded, trials, "{name}: every trial recorded once");
            let c = &d.claims_ms;
            println!(
                "| {name} | {w} | {trials} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} | {} |",
                trials as f64 / d.seconds,
                pct(c, 0.5),
                pct(c, 0.95),
                pct(c, 0.99),
                c[c.len() - 1],
                d.claimed_twice
            );
        }
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
