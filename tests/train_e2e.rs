//! End-to-end training on real Fashion-MNIST subsets: the smoke experiment learns, a run is
//! reproducible, and a run stopped after one epoch and resumed ends with exactly the weights of
//! an uninterrupted run.

mod common;

use mnv4_lab::data::build_splits;
use mnv4_lab::experiment::Experiment;
use mnv4_lab::model::Network;
use mnv4_lab::train::objective::CrossEntropy;
use mnv4_lab::train::trainer::{train_network, RunOptions, Summary};
use std::path::{Path, PathBuf};

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mnv4-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn run(exp: &Experiment, opts: &RunOptions) -> Summary {
    let t = &exp.train;
    let splits = build_splits(&exp.data, t.batch_size, t.eval_batch_size, exp.seed).unwrap();
    let arch = exp
        .model
        .to_arch(splits.channels, splits.num_classes)
        .unwrap();
    let net = Network::new(&arch, &candle_core::Device::Cpu, exp.seed).unwrap();
    let mut ce = CrossEntropy {
        smoothing: exp.train.label_smoothing,
    };
    train_network(&exp.train_job(), &net, &splits, &mut ce, opts).unwrap()
}

fn weights(dir: &Path) -> Vec<u8> {
    let s = mnv4_lab::train::checkpoint::read_sidecar(&dir.join("checkpoints/last.json")).unwrap();
    std::fs::read(dir.join("checkpoints").join(s.weights)).unwrap()
}

#[test]
fn smoke_experiment_learns_well_above_chance() {
    if !common::have_training_inputs() {
        return;
    }
    let out = temp_dir("smoke");
    let sets = [format!("output.dir=\"{}\"", out.display())];
    let exp = Experiment::load(
        Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/experiments/smoke.toml"
        )),
        &sets,
    )
    .unwrap();
    let s = run(
        &exp,
        &RunOptions {
            quiet: true,
            ..Default::default()
        },
    );
    let (first, last) = (&s.rows[0], s.rows.last().unwrap());
    println!(
        "smoke: train loss {:.3} → {:.3}, test top-1 {:.1}%",
        first.train_loss,
        last.train_loss,
        100.0 * s.test.top1
    );
    assert!(
        last.train_loss < 0.8 * first.train_loss,
        "loss did not fall: {} → {}",
        first.train_loss,
        last.train_loss
    );
    assert!(
        s.test.top1 > 0.5,
        "test top-1 {} is not far above chance (0.1)",
        s.test.top1
    );
    for f in [
        "metrics.csv",
        "metrics.parquet",
        "accuracy.png",
        "accuracy.svg",
        "loss.png",
        "arch.toml",
        "summary.json",
    ] {
        assert!(s.run_dir.join(f).exists(), "missing {f}");
    }
    let df = mnv4_lab::report::table::read_parquet(&s.run_dir.join("metrics.parquet")).unwrap();
    assert_eq!(df.height(), exp.train.epochs);
    std::fs::remove_dir_all(&out).unwrap();
}

fn tiny(out: &Path, name: &str) -> Experiment {
    let text = format!(
        r#"
name = "{name}"
seed = 7
[data]
val_size = 500
train_limit = 256
eval_limit = 200
augment = {{ input_size = 32, channels = 1, pad = 2 }}
[model]
arch = "conv-small"
width = 0.25
dropout = 0.2
[train]
epochs = 2
batch_size = 64
lr = 0.01
ema_decay = 0.9
[output]
dir = "{}"
"#,
        out.display()
    );
    Experiment::from_toml(&text, &[], name, "test").unwrap()
}

#[test]
fn same_seed_same_metrics_and_resume_equals_uninterrupted() {
    if !common::have_training_inputs() {
        return;
    }
    let out = temp_dir("resume");
    let quiet = RunOptions {
        quiet: true,
        ..Default::default()
    };
    let a = run(&tiny(&out, "a"), &quiet);
    let a2 = run(&tiny(&out, "a2"), &quiet);
    for (x, y) in a.rows.iter().zip(&a2.rows) {
        assert_eq!(
            x.train_loss, y.train_loss,
            "same seed must give the same training loss"
        );
        assert_eq!(x.val.top1, y.val.top1);
    }
    assert_eq!(weights(&out.join("a")), weights(&out.join("a2")));

    let b = tiny(&out, "b");
    run(
        &b,
        &RunOptions {
            quiet: true,
            stop_after: Some(1),
            ..Default::default()
        },
    );
    let resumed = run(
        &b,
        &RunOptions {
            quiet: true,
            resume: true,
            ..Default::default()
        },
    );
    assert_eq!(resumed.rows.len(), 2);
    assert_eq!(resumed.rows[1].train_loss, a.rows[1].train_loss);
    assert_eq!(
        weights(&out.join("b")),
        weights(&out.join("a")),
        "resumed weights differ from an uninterrupted run"
    );
    std::fs::remove_dir_all(&out).unwrap();
}
