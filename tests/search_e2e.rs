//! The search end to end on a small Fashion-MNIST subset: every output is written, and a run
//! killed with SIGKILL mid-search and resumed keeps every finished trial, retrains none, and
//! makes the same decisions as an uninterrupted run.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn cmd(out: &Path, name: &str, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mnv4-lab"));
    let sets = [
        format!("name=\"{name}\""),
        format!("output.dir=\"{}\"", out.display()),
        format!(
            "search.report_dir=\"{}\"",
            out.join(format!("report-{name}")).display()
        ),
        format!("distill.cache_dir=\"{}\"", out.join("cache").display()),
        "data.train_limit=512".into(),
        "data.eval_limit=300".into(),
        "data.val_size=300".into(),
        common::tiny_teacher(out),
        "search.coarse={ trials = 4, epochs = 1 }".into(),
        "search.fine={ trials = 4, epochs = 1, halving_keep = 0.5, halving_epochs = 2 }".into(),
        "search.reference=[{ arch = \"conv-small\", width = 0.25 }]".into(),
        "search.latency_repeats=3".into(),
        // Decisions must be comparable across runs: rank on MACs (from the spec), not on a
        // wall-clock latency that changes with the machine's load.
        "search.objectives=[\"val_top1\", \"macs\"]".into(),
    ];
    c.arg("search")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/experiments/quick.toml"
        ))
        .arg("--quiet");
    for s in sets {
        c.arg("--set").arg(s);
    }
    c.args(extra);
    c
}

fn log_lines(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("trials.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn decisions(run: &Path) -> Vec<(u64, String, String)> {
    let mut by_index = std::collections::BTreeMap::new();
    for t in log_lines(run) {
        by_index.insert(
            t["index"].as_u64().unwrap(),
            (
                t["hash"].as_str().unwrap().to_string(),
                format!("{:.6}", t["val_top1"].as_f64().unwrap_or(-1.0)),
            ),
        );
    }
    by_index.into_iter().map(|(i, (h, v))| (i, h, v)).collect()
}

#[test]
fn search_writes_every_output_and_survives_kill_9() {
    if !common::have_training_inputs() {
        return;
    }
    let out: PathBuf = std::env::temp_dir().join(format!("mnv4-search-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();

    // Uninterrupted run.
    let o = cmd(&out, "full", &[]).output().unwrap();
    assert!(
        o.status.success(),
        "search failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let report = out.join("report-full");
    for f in [
        "trials.csv",
        "trials.parquet",
        "pareto.csv",
        "pareto.png",
        "pareto.svg",
        "hypervolume.png",
        "hypervolume.svg",
        "README.md",
    ] {
        assert!(report.join(f).exists(), "missing {f}");
    }
    assert!(std::fs::read_dir(report.join("pareto")).unwrap().count() >= 1);
    let readme = std::fs::read_to_string(report.join("README.md")).unwrap();
    assert!(readme.contains("teacher validation top-1"), "{readme}");
    let full = decisions(&out.join("full"));
    let repeats: std::collections::BTreeSet<u64> = log_lines(&out.join("full"))
        .iter()
        .filter(|t| t["stage"] == "repeat")
        .map(|t| t["index"].as_u64().unwrap())
        .collect();
    assert!((1..=2).contains(&repeats.len()), "{repeats:?}");
    assert_eq!(
        full.len(),
        9 + repeats.len(),
        "4 coarse + 4 fine + 1 reference + the front's repeats"
    );
    assert!(readme.contains("## Noise floor"), "{readme}");

    // Same search, killed with SIGKILL after a few trials, then resumed.
    let mut child = cmd(&out, "killed", &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let run = out.join("killed");
    let t0 = Instant::now();
    while log_lines(&run).len() < 3 && t0.elapsed() < Duration::from_secs(600) {
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before: Vec<serde_json::Value> = log_lines(&run);
    assert!(
        before.len() >= 3 && before.len() < 9,
        "kill landed after {} trials",
        before.len()
    );
    let o = cmd(&out, "killed", &["--resume"]).output().unwrap();
    assert!(
        o.status.success(),
        "resume failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let after = log_lines(&run);
    // Nothing finished was lost or retrained: the first records are untouched and come first.
    assert_eq!(&after[..before.len()], &before[..]);
    for t in &before {
        let i = t["index"].as_u64().unwrap();
        let again = after[before.len()..]
            .iter()
            .filter(|u| u["index"].as_u64() == Some(i) && u["epochs"] == t["epochs"])
            .count();
        assert_eq!(again, 0, "trial {i} was trained again after the resume");
    }
    assert_eq!(
        decisions(&run),
        full,
        "the resumed search made different decisions"
    );
    std::fs::remove_dir_all(&out).unwrap();
}

/// Epochs of each record in the log, by trial index, in log order.
fn epochs_by_index(lines: &[serde_json::Value]) -> std::collections::BTreeMap<u64, Vec<u64>> {
    let mut m = std::collections::BTreeMap::<u64, Vec<u64>>::new();
    for t in lines {
        let i = t["index"].as_u64().unwrap();
        m.entry(i).or_default().push(t["epochs"].as_u64().unwrap());
    }
    m
}

#[test]
fn search_survives_twenty_kills_at_random_moments() {
    use rand::{Rng, SeedableRng};
    if !common::have_training_inputs() {
        return;
    }
    let out: PathBuf = std::env::temp_dir().join(format!("mnv4-soak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    // No teacher, so that a restart is quick and most kills land inside trials.
    let fast = [
        "--set",
        "distill.kd_weight=0",
        "--set",
        "distill.feature_weight=0",
    ];
    let started = std::time::Instant::now();
    let o = cmd(&out, "calm", &fast).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let calm = decisions(&out.join("calm"));
    // Kill moments scale with this machine's speed: twenty of them, averaging a thirty-second
    // of an uninterrupted search each (two thirds of it in all), land before the search can
    // finish even without the work each kill throws away.
    let whole = started.elapsed().as_millis() as u64;
    let moments = (whole / 80).max(20)..(whole / 20).max(40);

    let run = out.join("soak");
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut args = fast.to_vec();
    args.push("--resume");
    let (mut kills, mut seen) = (0, Vec::new());
    while kills < 20 {
        let mut child = cmd(&out, "soak", &args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(moments.clone())));
        if child.try_wait().unwrap().is_some() {
            break; // finished before this kill
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        let now = log_lines(&run);
        assert_eq!(
            &now[..seen.len()],
            &seen[..],
            "kill {kills}: a finished trial was lost or changed"
        );
        seen = now;
    }
    let o = cmd(&out, "soak", &args).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(kills >= 20, "the search finished after only {kills} kills");
    for (i, epochs) in epochs_by_index(&log_lines(&run)) {
        assert!(
            epochs.windows(2).all(|w| w[0] < w[1]),
            "trial {i} was trained again: epochs {epochs:?}"
        );
    }
    assert_eq!(
        decisions(&run),
        calm,
        "the soaked search decided differently"
    );
    let report =
        |name: &str| std::fs::read_to_string(out.join(format!("report-{name}/pareto.csv")));
    let members = |text: String| -> Vec<String> {
        text.lines()
            .map(|l| l.split(',').take(3).collect::<Vec<_>>().join(","))
            .collect()
    };
    assert_eq!(
        members(report("soak").unwrap()),
        members(report("calm").unwrap()),
        "the final Pareto set differs"
    );
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn a_diverging_candidate_is_a_failed_trial_and_is_not_retried() {
    if !common::have_training_inputs() {
        return;
    }
    let out: PathBuf = std::env::temp_dir().join(format!("mnv4-diverge-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let args = [
        "--set",
        "distill.kd_weight=0",
        "--set",
        "distill.feature_weight=0",
        "--set",
        "train.lr=1e30",
        "--set",
        "search.coarse={ trials = 2, epochs = 1 }",
        "--set",
        "search.fine={ trials = 0 }",
        "--set",
        "search.reference=[]",
    ];
    let o = cmd(&out, "nan", &args).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines = log_lines(&out.join("nan"));
    assert_eq!(lines.len(), 2);
    for t in &lines {
        let why = t["failed"].as_str().unwrap_or_default();
        assert!(why.contains("loss became"), "{t}");
    }
    let readme = std::fs::read_to_string(out.join("report-nan/README.md")).unwrap();
    assert!(readme.contains("Failed trials"), "{readme}");
    let mut again = args.to_vec();
    again.push("--resume");
    let o = cmd(&out, "nan", &again).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        log_lines(&out.join("nan")),
        lines,
        "a failed trial was retried"
    );
    std::fs::remove_dir_all(&out).unwrap();
}

/// The finished trials of study `name` in the SQLite store at `url` (none before it exists).
fn stored(url: &str, name: &str) -> Vec<mnv4_lab::search::trials::Trial> {
    use mnv4_lab::search::store::{open, OpenStudy};
    open(url, name, OpenStudy::Existing)
        .and_then(|s| s.trials())
        .unwrap_or_default()
}

#[test]
fn a_search_in_sqlite_survives_kill_9_and_reports() {
    if !common::have_training_inputs() {
        return;
    }
    let out: PathBuf = std::env::temp_dir().join(format!("mnv4-lite-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let url = format!("sqlite:{}", out.join("trials.sqlite").display());
    let fast = [
        "--set",
        "distill.kd_weight=0",
        "--set",
        "distill.feature_weight=0",
    ];
    let mut child = cmd(&out, "lite", &fast)
        .args(["--storage", &url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while stored(&url, "lite").len() < 3 && t0.elapsed() < Duration::from_secs(600) {
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = stored(&url, "lite");
    assert!(
        before.len() >= 3 && before.len() < 9,
        "{} trials",
        before.len()
    );
    // The resumed run finds the store in search.json.
    let mut again = fast.to_vec();
    again.push("--resume");
    let o = cmd(&out, "lite", &again).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!out.join("lite/trials.jsonl").exists(), "the store moved");
    let after = stored(&url, "lite");
    let repeats = after.iter().filter(|t| t.repeat_of().is_some()).count();
    assert!((1..=2).contains(&repeats), "{repeats} repeats");
    assert_eq!(
        after.len(),
        9 + repeats,
        "4 coarse + 4 fine + 1 reference + the front's repeats"
    );
    for t in &before {
        let now = &after[t.index];
        assert!(
            now == t || now.epochs > t.epochs,
            "trial {} was trained again",
            t.index
        );
    }
    let report = out.join("report-again");
    let o = Command::new(env!("CARGO_BIN_EXE_mnv4-lab"))
        .arg("report")
        .arg(out.join("lite"))
        .arg("--out")
        .arg(&report)
        .args(["--storage", &url])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(report.join("pareto.csv").exists());
    std::fs::remove_dir_all(&out).unwrap();
}
