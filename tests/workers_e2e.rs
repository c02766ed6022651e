//! Two and three `mnv4-lab worker` processes on one study in a throw-away PostgreSQL server:
//! every queued trial is trained and recorded exactly once, and all exit when the study is done;
//! a worker killed with SIGKILL mid-trial loses nothing: its trial goes stale and another
//! retries it. `search --workers N` decides the same with 1, 2 and 8 workers, and after its
//! driver is killed and resumed; a run's trials import into other stores.

mod common;

use mnv4_lab::search::space::SearchSpace;
use mnv4_lab::search::store::{open, Job, OpenStudy};
use mnv4_lab::search::study::StudySpec;
use mnv4_lab::search::trials::Stage;
use rand::SeedableRng;
use std::path::Path;
use std::process::{Command, Stdio};

/// Settings of a small study named `name` writing under `out`: 256 training images, no teacher.
fn small_study(out: &Path, name: &str) -> Vec<String> {
    vec![
        format!("name=\"{name}\""),
        format!("output.dir=\"{}\"", out.display()),
        "data.train_limit=256".into(),
        "data.eval_limit=200".into(),
        "data.val_size=200".into(),
        "distill.kd_weight=0".into(),
        "distill.feature_weight=0".into(),
        "search.latency_repeats=2".into(),
    ]
}

/// A small study named `name` writing under `out`, and `n` sampled candidates to train for
/// `epochs`.
fn study(out: &Path, name: &str, n: usize, epochs: usize) -> (StudySpec, Vec<Job>) {
    let sets = small_study(out, name);
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
            promote: None,
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
fn two_and_three_workers_finish_every_trial_exactly_once() {
    if !common::have_training_inputs() {
        return;
    }
    let Some(pg) = common::require(common::pg::start("workers"), "a PostgreSQL server") else {
        return;
    };
    for n in [2, 3] {
        drain_with_workers(&pg.url, n);
    }
}

/// `n` workers drain a study of 6 queued trials in the server at `url`.
fn drain_with_workers(url: &str, n: usize) {
    let out = std::env::temp_dir().join(format!("mnv4-workers-{n}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let name = format!("pool{n}");
    let (spec, jobs) = study(&out, &name, 6, 1);
    let store = open(url, &spec.name, OpenStudy::Create(&spec.settings())).unwrap();
    let queue = store.queue().unwrap();
    queue.enqueue(&jobs).unwrap();
    queue.close().unwrap();

    let workers: Vec<_> = (0..n)
        .map(|_| {
            worker(url, &name, "60")
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
        assert_eq!(
            times, 1,
            "{n} workers: trial {i} recorded {times} times:\n{log}"
        );
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

/// `mnv4-lab search --workers N` on a small study in `out`, one math thread per worker,
/// ranking on MACs (from the spec) so that decisions depend on the trials' accuracies alone.
fn search_with_workers(out: &Path, name: &str, workers: Option<&str>, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mnv4-lab"));
    c.arg("search")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/experiments/quick.toml"
        ))
        .arg("--quiet")
        .args(extra);
    if let Some(n) = workers {
        c.args(["--workers", n, "--worker-threads", "1"]);
    }
    let report = out.join(format!("report-{name}"));
    let sets = small_study(out, name).into_iter().chain([
        format!("search.report_dir=\"{}\"", report.display()),
        "search.objectives=[\"val_top1\", \"macs\"]".into(),
        "search.population=3".into(),
        "search.coarse={ trials = 4, epochs = 1 }".into(),
        "search.fine={ trials = 3, epochs = 1, halving_keep = 0.5, halving_epochs = 2 }".into(),
        "search.reference=[{ arch = \"conv-small\", width = 0.25 }]".into(),
    ]);
    for s in sets {
        c.arg("--set").arg(s);
    }
    c.stdout(Stdio::null());
    c
}

/// What a study decided and measured, per trial: index, stage, architecture hash, accuracies,
/// epochs.
type Outcome = (usize, Stage, String, Option<f64>, Option<f64>, usize);

fn outcomes(url: &str, study: &str) -> Vec<Outcome> {
    let store = open(url, study, OpenStudy::Existing).unwrap();
    let trials = store.trials().unwrap().into_iter();
    trials
        .map(|t| {
            (
                t.index,
                t.stage,
                t.hash,
                t.val_top1,
                t.stage_val_top1,
                t.epochs,
            )
        })
        .collect()
}

/// The command failed and its error says `why`.
fn assert_refused(o: &std::process::Output, why: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains(why), "{err}");
}

/// `mnv4-lab import RUN --storage URL`.
fn import_into(run: &Path, url: &str) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mnv4-lab"));
    c.arg("import").arg(run).args(["--storage", url]);
    c.output().unwrap()
}

#[test]
fn search_decisions_do_not_depend_on_the_number_of_workers() {
    if !common::have_training_inputs() {
        return;
    }
    let out = std::env::temp_dir().join(format!("mnv4-generations-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let trials = |name: &str, workers: &str| {
        let o = search_with_workers(&out, name, Some(workers), &[])
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{workers} workers: {log}");
        let url = format!("sqlite:{}", out.join(name).join("trials.sqlite").display());
        let store = open(&url, name, OpenStudy::Existing).unwrap();
        let c = store.queue().unwrap().counts().unwrap();
        assert_eq!((c.waiting, c.running, c.failed), (0, 0, 0));
        outcomes(&url, name)
    };
    let one = trials("gen1", "1");
    let repeats = one.iter().filter(|t| t.1 == Stage::Repeat).count();
    assert!((1..=2).contains(&repeats), "{one:?}");
    assert_eq!(one.len(), 4 + 3 + 1 + repeats, "{one:?}");
    for n in ["2", "8"] {
        let other = trials(&format!("gen{n}"), n);
        assert_eq!(one, other, "1 and {n} workers decided differently");
    }
    assert!(
        one.iter().any(|t| t.5 == 2),
        "nothing was promoted: {one:?}"
    );
    assert!(one.iter().all(|t| t.3.is_some()), "{one:?}");

    // The driver killed with SIGKILL while its workers train, then resumed: the same outcome.
    let url = format!(
        "sqlite:{}",
        out.join("gen3").join("trials.sqlite").display()
    );
    let mut driver = search_with_workers(&out, "gen3", Some("2"), &[])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while t0.elapsed().as_secs() < 300 {
        let done = std::fs::metadata(out.join("gen3").join("trials.sqlite")).is_ok()
            && open(&url, "gen3", OpenStudy::Existing)
                .and_then(|s| s.trials())
                .is_ok_and(|t| t.len() >= 2);
        if done {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    driver.kill().unwrap();
    driver.wait().unwrap();
    let o = search_with_workers(&out, "gen3", Some("2"), &["--resume"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        outcomes(&url, "gen3"),
        one,
        "a killed and resumed driver decided differently"
    );

    // Imported into a trial log, then from the log into another database: the same trials, and
    // the run reads them from there.
    let import = |url: &str| {
        let o = import_into(&out.join("gen1"), url);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let state = mnv4_lab::search::study::SearchState::read(&out.join("gen1")).unwrap();
        assert_eq!(state.storage.as_deref(), Some(url));
        assert_eq!(outcomes(url, "gen1"), one, "{url}");
    };
    import(&out.join("gen1.jsonl").display().to_string());
    import(&format!("sqlite:{}", out.join("copy.sqlite").display()));
    let again = import_into(
        &out.join("gen1"),
        &format!("sqlite:{}", out.join("copy.sqlite").display()),
    );
    assert_refused(&again, "already uses this store");

    // A search started with workers is resumed with them: its decisions depend on it.
    let o = search_with_workers(&out, "gen1", None, &["--resume"])
        .output()
        .unwrap();
    assert_refused(&o, "resume it the same way");
    std::fs::remove_dir_all(&out).unwrap();
}
