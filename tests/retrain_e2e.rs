//! `mnv4-lab retrain` end to end on a tiny budget: a small search, then its front and the presets
//! retrained distilled and not by two shards, with the table, the plot and reuse of finished runs.

mod common;

use std::path::Path;
use std::process::Command;

fn mnv4(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_mnv4-lab"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{args:?} failed:\n{text}");
    text
}

#[test]
fn retrain_trains_front_and_presets_in_both_arms() {
    if !common::have_training_inputs() {
        return;
    }
    let out = std::env::temp_dir().join(format!("mnv4-retrain-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let report = out.join("report");
    let sets = [
        format!("output.dir=\"{}\"", out.display()),
        format!("search.report_dir=\"{}\"", report.display()),
        format!("distill.cache_dir=\"{}\"", out.join("cache").display()),
        "name=\"tiny\"".into(),
        "data.train_limit=256".into(),
        "data.eval_limit=200".into(),
        "data.val_size=200".into(),
        common::tiny_teacher(&out),
        "search.coarse={ trials = 3, epochs = 1 }".into(),
        "search.fine={ trials = 0 }".into(),
        "search.reference=[{ arch = \"conv-small\", width = 0.25 }]".into(),
        "search.latency_repeats=1".into(),
        "search.objectives=[\"val_top1\", \"macs\"]".into(),
    ];
    let mut args = vec!["search", "experiments/quick.toml", "--quiet"];
    for s in &sets {
        args.extend(["--set", s]);
    }
    mnv4(&args);
    let retrain = |extra: &[&str]| {
        let mut a = vec!["retrain", report.to_str().unwrap(), "--quiet"];
        a.extend(["--epochs", "1", "--seeds", "1", "--widths", "0.25,0.5"]);
        a.extend([
            "--set",
            "data.train_limit=256",
            "--set",
            "data.eval_limit=200",
        ]);
        a.extend(extra);
        mnv4(&a)
    };
    // Two shards share the runs: the first leaves the tables to the second.
    let dir = report.join("retrain");
    let first = retrain(&["--shard", "0/2"]);
    assert!(first.contains("left to the other shards"), "{first}");
    assert!(
        !dir.join("README.md").exists(),
        "a shard wrote tables early"
    );
    retrain(&["--shard", "1/2"]);
    for f in [
        "retrain.csv",
        "retrain.parquet",
        "README.md",
        "retrain.png",
        "retrain.svg",
    ] {
        assert!(dir.join(f).exists(), "missing {f}");
    }
    let members = std::fs::read_dir(report.join("pareto")).unwrap().count();
    let rows = std::fs::read_to_string(dir.join("retrain.csv"))
        .unwrap()
        .lines()
        .count()
        - 1;
    // Presets: conv-small at 0.25 (also the study's reference) and 0.5; two arms, one seed.
    assert_eq!(rows, (members + 2) * 2, "one run per model, arm and seed");
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    assert!(
        readme.contains("| kd |") && readme.contains("| ce |"),
        "{readme}"
    );
    assert!(
        readme.contains("## Against the preset curve") && readme.contains("Arm `kd`: "),
        "{readme}"
    );
    // Latency is measured in pairs with the reference network and reported as a ratio too.
    let csv = std::fs::read_to_string(dir.join("retrain.csv")).unwrap();
    assert!(
        csv.lines()
            .next()
            .unwrap()
            .ends_with("macs,latency_ms,latency_ratio,latency_ratio_lo,latency_ratio_hi"),
        "{csv}"
    );
    assert!(
        readme.contains("latency / conv-small ×0.5 [95 % CI]"),
        "{readme}"
    );
    // A second call reuses every finished run (latency is measured again, so it is left out).
    let results = || -> Vec<String> {
        let text = std::fs::read_to_string(dir.join("retrain.csv")).unwrap();
        text.lines()
            .map(|l| l.split(',').take(7).collect::<Vec<_>>().join(","))
            .collect()
    };
    let before = results();
    let started = std::time::Instant::now();
    retrain(&[]);
    assert_eq!(results(), before);
    println!("rerun took {:.1}s", started.elapsed().as_secs_f64());

    // `distill` and `train` runs of a preset with the retraining's settings are the same
    // computation as the retraining's own runs of it, so another plan takes them as its own.
    let top1 = |csv: &Path, arm: &str| -> String {
        let text = std::fs::read_to_string(csv).unwrap();
        let row = text
            .lines()
            .find(|l| l.starts_with(&format!("conv-small-0.5,preset curve,{arm},0,")))
            .unwrap_or_else(|| panic!("no conv-small-0.5 {arm} seed 0 row in\n{text}"));
        row.split(',').nth(4).unwrap().to_string()
    };
    for (command, name) in [("distill", "same-kd"), ("train", "same-ce")] {
        let mut a = vec![command, "experiments/quick.toml", "--quiet"];
        let mine = [
            format!("name=\"{name}\""),
            "train.epochs=1".into(),
            "model.arch=\"conv-small\"".into(),
            "model.width=0.5".into(),
        ];
        for s in sets.iter().chain(&mine) {
            a.extend(["--set", s]);
        }
        mnv4(&a);
    }
    let summary_top1 = |name: &str| -> String {
        let text = std::fs::read_to_string(out.join(name).join("summary.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["test_top1"].as_f64().unwrap().to_string()
    };
    let csv = dir.join("retrain.csv");
    assert_eq!(summary_top1("same-kd"), top1(&csv, "kd"));
    assert_eq!(summary_top1("same-ce"), top1(&csv, "ce"));
    let elsewhere = format!("output.dir=\"{}\"", out.join("second").display());
    retrain(&["--set", &elsewhere, "--reuse", out.to_str().unwrap()]);
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    assert!(
        readme.contains("2 of the runs had been trained before"),
        "{readme}"
    );
    assert_eq!(top1(&csv, "kd"), summary_top1("same-kd"));
    std::fs::remove_dir_all(&out).unwrap();
}
