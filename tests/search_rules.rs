//! Search rules without training cost: budgets make candidates infeasible before any training,
//! and identical architectures are never trained twice.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn search(out: &Path, name: &str, space: &Path, extra: &[String]) -> serde_json::Value {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mnv4-lab"));
    c.arg("search")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/experiments/quick.toml"
        ))
        .arg("--quiet");
    let mut sets = vec![
        format!("name=\"{name}\""),
        format!("output.dir=\"{}\"", out.display()),
        format!(
            "search.report_dir=\"{}\"",
            out.join(format!("report-{name}")).display()
        ),
        format!("search.space=\"{}\"", space.display()),
        "data.train_limit=256".into(),
        "data.eval_limit=200".into(),
        "data.val_size=200".into(),
        "distill.kd_weight=0".into(),
        "distill.feature_weight=0".into(),
        "search.fine={ trials = 0, epochs = 1 }".into(),
        "search.reference=[]".into(),
        "search.latency_repeats=1".into(),
    ];
    sets.extend(extra.iter().cloned());
    for s in sets {
        c.arg("--set").arg(s);
    }
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "search failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(out.join(name).join("trials.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    serde_json::Value::Array(lines)
}

fn setup(tag: &str) -> PathBuf {
    let out = std::env::temp_dir().join(format!("mnv4-rules-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    out
}

#[test]
fn over_budget_candidates_are_recorded_infeasible_without_training() {
    if !common::have_training_inputs() {
        return;
    }
    let out = setup("budget");
    let space = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/search_spaces/small.toml"
    ));
    let t = search(
        &out,
        "budget",
        space,
        &[
            "search.max_params=1000".into(),
            "search.coarse={ trials = 4, epochs = 1 }".into(),
        ],
    );
    let trials = t.as_array().unwrap();
    assert_eq!(trials.len(), 4);
    for tr in trials {
        assert_eq!(tr["feasible"], false);
        assert!(tr["violation"].as_f64().unwrap() > 0.0);
        assert!(
            tr["val_top1"].is_null() && tr["epochs"] == 0,
            "an infeasible candidate was trained: {tr}"
        );
        assert!(
            tr.get("runtime_latency_ms").is_none(),
            "no objective asked for the ONNX runtime latency: {tr}"
        );
    }
    assert!(
        !out.join("budget/trials").exists(),
        "no candidate may have a training run"
    );
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn the_onnx_runtime_latency_is_measured_when_an_objective_ranks_on_it() {
    if !common::have_training_inputs() {
        return;
    }
    let out = setup("runtime");
    let space = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/search_spaces/small.toml"
    ));
    let t = search(
        &out,
        "runtime",
        space,
        &[
            "search.max_params=1000".into(),
            "search.coarse={ trials = 3, epochs = 1 }".into(),
            r#"search.objectives=["val_top1", "runtime_latency_ms"]"#.into(),
        ],
    );
    let trials = t.as_array().unwrap();
    assert_eq!(trials.len(), 3);
    for tr in trials {
        let ms = tr["runtime_latency_ms"].as_f64().unwrap();
        assert!(ms.is_finite() && ms > 0.0, "{tr}");
    }
    let csv = std::fs::read_to_string(out.join("report-runtime/trials.csv")).unwrap();
    assert!(csv.lines().next().unwrap().contains("runtime_latency_ms"));
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn identical_architectures_are_trained_once() {
    if !common::have_training_inputs() {
        return;
    }
    let out = setup("dedup");
    // A space with exactly one architecture in its coarse stage.
    let space = out.join("one.toml");
    std::fs::write(
        &space,
        r#"
name = "one"
act = "relu"
stem_widths = [16]
features = 64
head = 128
[[stage]]
kind = "conv"
widths = [16]
depth = [1, 1]
stride = 2
[[stage]]
kind = "uib"
widths = [24]
depth = [1, 1]
stride = 2
"#,
    )
    .unwrap();
    let t = search(
        &out,
        "dedup",
        &space,
        &[
            "search.coarse={ trials = 3, epochs = 1 }".into(),
            "search.strategy=\"random\"".into(),
            "search.repeat_front=0".into(),
        ],
    );
    let trials = t.as_array().unwrap();
    assert_eq!(trials.len(), 3);
    assert!(trials[0]["duplicate_of"].is_null());
    for tr in &trials[1..] {
        assert_eq!(tr["duplicate_of"], 0);
        assert_eq!(tr["val_top1"], trials[0]["val_top1"]);
    }
    let runs = std::fs::read_dir(out.join("dedup/trials")).unwrap().count();
    assert_eq!(runs, 1, "the architecture was trained more than once");
    std::fs::remove_dir_all(&out).unwrap();
}
