//! Two `mnv4-lab worker` processes on one study in a throw-away PostgreSQL server: every queued
//! trial is trained and recorded exactly once, and both exit when the study is done.

mod common;

use mnv4_lab::search::space::SearchSpace;
use mnv4_lab::search::store::{open, Job, OpenStudy};
use mnv4_lab::search::trials::Stage;
use rand::SeedableRng;
use std::process::{Command, Stdio};

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
    let sets: Vec<String> = [
        "name=\"pool\"".to_string(),
        format!("output.dir=\"{}\"", out.display()),
        "data.train_limit=256".into(),
        "data.eval_limit=200".into(),
        "data.val_size=200".into(),
        "distill.kd_weight=0".into(),
        "search.latency_repeats=2".into(),
    ]
    .into();
    let exp = concat!(env!("CARGO_MANIFEST_DIR"), "/experiments/quick.toml");
    let spec = mnv4_lab::experiment::Experiment::load(exp.as_ref(), &sets)
        .unwrap()
        .study();
    let store = open(&pg.url, &spec.name, OpenStudy::Create(&spec.settings())).unwrap();
    let space = SearchSpace::load(&spec.search.space).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let jobs: Vec<Job> = (0..6)
        .map(|index| Job {
            index,
            stage: Stage::Coarse,
            label: String::new(),
            arch: space.sample_coarse(&mut rng).to_block_string(),
            epochs: 1,
        })
        .collect();
    let queue = store.queue().unwrap();
    queue.enqueue(&jobs).unwrap();
    queue.close().unwrap();

    let workers: Vec<_> = (0..2)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_mnv4-lab"))
                .args(["worker", "--storage", &pg.url, "--study", "pool"])
                .args(["--threads", "1", "--quiet"])
                .stdout(Stdio::null())
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
