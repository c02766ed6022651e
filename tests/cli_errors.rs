//! Bad command lines get a clear error naming the flag or folder, before any work.

mod common;

use std::path::PathBuf;
use std::process::Command;

/// Runs the binary; returns (success, stderr).
fn run(args: &[&str]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_mnv4-lab"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn fails_with(args: &[&str], want: &str) {
    let (ok, err) = run(args);
    assert!(!ok, "{args:?} succeeded");
    assert!(err.contains(want), "{args:?}: wanted '{want}' in:\n{err}");
    assert!(!err.contains("panicked"), "{args:?} panicked:\n{err}");
}

#[test]
fn inapplicable_and_out_of_range_flags_are_errors() {
    fails_with(
        &[
            "eval",
            "runs/x/checkpoints/best.json",
            "--model",
            "conv-small",
        ],
        "--model",
    );
    fails_with(&["eval", "weights.safetensors"], "--model");
    fails_with(
        &[
            "eval",
            "w.safetensors",
            "--model",
            "small",
            "--set",
            "train.lr=1",
        ],
        "only [data]",
    );
    fails_with(&["bench", "infer", "--threads", "10000"], "--threads 10000");
    fails_with(
        &[
            "distill",
            "--teacher",
            "large",
            "--teacher-weights",
            "t/best.json",
        ],
        "sidecar",
    );
    fails_with(
        &[
            "train",
            "experiments/smoke.toml",
            "--set",
            "train.threads=10000",
        ],
        "train.threads",
    );
    fails_with(
        &[
            "train",
            "experiments/smoke.toml",
            "--set",
            "data.augment.input_size=4096",
        ],
        "GiB",
    );
}

#[test]
fn bad_detector_inspections_are_errors() {
    fails_with(&["inspect", "yolo11q"], "yolo11n, yolo11s");
    fails_with(
        &["inspect", "yolo11n", "--res", "100"],
        "multiples of its stride 32",
    );
    fails_with(&["inspect", "yolo11n", "--width", "0.5"], "--backbone");
    fails_with(
        &["inspect", "conv-small", "--backbone", "small"],
        "--backbone",
    );
    fails_with(
        &["inspect", "yolo11n", "--classes", "0"],
        "at least one class",
    );
    fails_with(&["inspect", "yolo11n", "--in-chans", "1"], "--in-chans");
    fails_with(
        &["inspect", "yolo11n", "--backbone", "small", "--width", "3"],
        "0.25 … 2.0",
    );
}

fn temp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mnv4-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn a_run_folder_in_use_or_already_there_is_refused() {
    if !common::have_training_inputs() {
        return;
    }
    let out = temp("runs");
    let dir = format!("output.dir=\"{}\"", out.display());
    let tiny = [
        "train",
        "experiments/smoke.toml",
        "--quiet",
        "--set",
        &dir,
        "--set",
        "data.train_limit=128",
        "--set",
        "data.eval_limit=100",
        "--set",
        "train.epochs=1",
    ];
    let (ok, err) = run(&tiny);
    assert!(ok, "{err}");
    fails_with(&tiny, "already holds a run");
    let held = mnv4_lab::fsutil::DirLock::acquire(&out.join("smoke")).unwrap();
    let mut resume = tiny.to_vec();
    resume.push("--resume");
    fails_with(&resume, "in use by another mnv4-lab process");
    drop(held);
    let mut search = vec!["search", "experiments/quick.toml", "--set", &dir];
    search.extend(["--set", "name=\"busy\""]);
    let _held = mnv4_lab::fsutil::DirLock::acquire(&out.join("busy")).unwrap();
    fails_with(&search, "in use by another mnv4-lab process");
    std::fs::remove_dir_all(&out).unwrap();
}
