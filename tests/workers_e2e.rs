//! Two `mnv4-lab worker` processes on one study in a throw-away PostgreSQL server: every queued
//! trial is trained and recorded exactly once, and both exit when the study is done; a worker
//! killed with SIGKILL mid-trial loses nothing: its trial goes stale and another retries it.

mod common;

use mnv4_lab::search::space::SearchSpace;
use mnv4_lab::search::store::{open, Job, OpenStudy};
use mnv4_lab::search::study::StudySpec;
use mnv4_lab::search::trials::Stage;
use rand::SeedableRng;
use std::path::Path;
use std::process::{Command, Stdio};

/// A small study named `name` writing under `out`, and `n` sampled candidates to train for
/// `epochs`.
fn study(out: &Path, name: &str, n: usize, epochs: usize) -> (StudySpec, Vec<Job>) {
    let sets: Vec<String> = [
        format!("name=\"{name}\""),
        format!("output.dir=\"{}\"", out.display()),
        "data.train_limit=256".into(),
        "data.eval_limit=200".into(),
        "data.val_size=200".into(),
        "distill.kd_weight=0".into(),
        "distill.feature_weight=0".into(),
        "search.latency_repeats=2".into(),
    ]
    .into();
    let exp = concat!(env!("CARGO_MANIFEST_DIR"), "/experiments/quick.toml");
    let spec = mnv4_lab::experiment::Experiment::load(exp.as_ref(), &sets)
        .unwrap()
        .study()
        .unwrap();
    let space = SearchSpace::load(&spec.search.space).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let jobs = (0..n)
        .map(|index| Job {
            index,
            stage: Stage::Coarse,
            label: String::new(),
            arch: space.sample_coarse(&mut rng).to_block_string(),
            epochs,
        })
        .collect();
    (spec, jobs)
}

/// `mnv4-lab worker` on study `name`, retrying trials whose heartbeat is `stale` seconds old.
fn worker(url: &str, name: &str, stale: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mnv4-lab"));
    c.args(["worker", "--storage", url, "--study", name])
        .args(["--threads", "1", "--quiet", "--stale-secs", stale])
        .stdout(Stdio::null());
    c
}

#[test]
fn two_workers_finish_every_trial_exactly_once() {
    if !common::have_training_inputs() {
        return;
    }
    let Some(pg) = common::require(common::pg::start("workers"), "a PostgreSQL server") else {
        return;
    };
    let out = std::env::temp_dir().join(format!("mnv4-workers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let (spec, jobs) = study(&out, "pool", 6, 1);
    let store = open(&pg.url, &spec.name, OpenStudy::Create(&spec.settings())).unwrap();
    let queue = store.queue().unwrap();
    queue.enqueue(&jobs).unwrap();
    queue.close().unwrap();

    let workers: Vec<_> = (0..2)
        .map(|_| {
            worker(&pg.url, "pool", "60")
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut log = String::new();
    for w in workers {
        let o = w.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(o.status.success(), "a worker failed: {err}");
        log.push_str(&err);
    }
    for i in 0..6 {
        let times = log.matches(&format!("recorded trial {i}")).count(); // indices < 10
        assert_eq!(times, 1, "trial {i} recorded {times} times:\n{log}");
    }
    let trials = store.trials().unwrap();
    assert_eq!(trials.len(), 6);
    for (i, t) in trials.iter().enumerate() {
        assert_eq!((t.index, t.epochs), (i, 1), "{t:?}");
        assert!(t.val_top1.is_some() || !t.feasible, "{t:?}");
    }
    let c = queue.counts().unwrap();
    assert_eq!((c.done, c.waiting, c.running, c.failed), (6, 0, 0, 0));
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn a_worker_killed_mid_trial_loses_nothing() {
    if !common::have_training_inputs() {
        return;
    }
    let Some(pg) = common::require(common::pg::start("killed"), "a PostgreSQL server") else {
        return;
    };
    let out = std::env::temp_dir().join(format!("mnv4-killed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let (spec, jobs) = study(&out, "killed", 3, 2);
    let store = open(&pg.url, &spec.name, OpenStudy::Create(&spec.settings())).unwrap();
    let queue = store.queue().unwrap();
    queue.enqueue(&jobs).unwrap();
    queue.close().unwrap();
    let mut first = worker(&pg.url, "killed", "2")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while queue.counts().unwrap().running == 0 && t0.elapsed().as_secs() < 300 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    first.kill().unwrap(); // SIGKILL, mid-trial
    first.wait().unwrap();
    let o = worker(&pg.url, "killed", "2").output().unwrap();
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{log}");
    let trials = store.trials().unwrap();
    assert_eq!(
        trials.iter().map(|t| t.index).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert!(trials.iter().all(|t| t.epochs == 2), "{trials:?}");
    assert!(
        log.contains("(attempt 2)"),
        "the killed trial was retried: {log}"
    );
    let c = queue.counts().unwrap();
    assert_eq!((c.done, c.failed), (3, 0));
    std::fs::remove_dir_all(&out).unwrap();
}
