//! Distillation: the `distill` command end to end on a small subset with a tiny teacher (cached
//! and live teacher outputs training alike), the teacher without gradients and untouched by a
//! distillation step, and feature adapters for every preset pair.

mod common;

use candle_core::{DType, Device};
use mnv4_lab::data::{AugmentConfig, Augmenter, DataLoader, Dataset, LoaderConfig};
use mnv4_lab::distill::config::DistillConfig;
use mnv4_lab::distill::objective::{adapter_shapes, DistillObjective};
use mnv4_lab::model::{Ensemble, Network};
use mnv4_lab::space::presets::{preset, PRESETS};
use mnv4_lab::train::objective::{BatchLoss, Step};
use mnv4_lab::train::optim::{Optimizer, OptimizerConfig};
use std::process::Command;

#[test]
fn distill_command_runs_end_to_end_with_a_tiny_teacher() {
    if !common::have_training_inputs() {
        return;
    }
    let out = std::env::temp_dir().join(format!("mnv4-distill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let exp = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/experiments/distill_smoke.toml"
    );
    let run = |extra: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_mnv4-lab"))
            .args(["distill", exp, "--quiet", "--set"])
            .arg(format!("output.dir=\"{}\"", out.display()))
            .arg("--set")
            .arg(format!(
                "distill.cache_dir=\"{}\"",
                out.join("cache").display()
            ))
            .args(extra)
            .output()
            .unwrap();
        let text =
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "distill failed:\n{text}");
        text
    };
    let first = run(&[]);
    assert!(first.contains("training it first"), "{first}");
    assert!(out.join("distill-smoke/distill.json").exists());
    assert!(std::fs::read_dir(&out).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("teacher-")));
    // The same student again reuses the trained teacher and reads its logits and features from
    // the offline distillation dataset; a third run with the cache off runs the teacher live.
    let second = run(&["--set", "name=\"distill-smoke-2\""]);
    assert!(!second.contains("training it first"), "{second}");
    assert!(second.contains("from the teacher cache"), "{second}");
    run(&[
        "--set",
        "name=\"distill-smoke-3\"",
        "--set",
        "distill.cache=false",
    ]);
    let summary = |name: &str| -> serde_json::Value {
        let text = std::fs::read_to_string(out.join(name).join("distill.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    };
    let (a, b, c) = (
        summary("distill-smoke"),
        summary("distill-smoke-2"),
        summary("distill-smoke-3"),
    );
    assert_eq!(a["cached_batches"], 0);
    assert_eq!(b["live_batches"], 0);
    assert!(b["cached_batches"].as_u64().unwrap() > 0);
    assert_eq!(c["cached_batches"], 0);
    // A presence byte, 10 logits and the teacher's stride-8 map (4×4 per channel), in f16.
    assert!(b["cache_bytes_per_sample"].as_u64().unwrap() > 1 + 2 * 10 + 2 * 16);
    assert!(
        b["loss"].as_str().unwrap().contains("feature-MSE[2]"),
        "{}",
        b["loss"]
    );
    // Cached and live teachers train the student bit for bit alike, features included.
    let curves = |name: &str| -> Vec<String> {
        let text = std::fs::read_to_string(out.join(name).join("metrics.csv")).unwrap();
        text.lines()
            .map(|l| l.split(',').take(8).collect::<Vec<_>>().join(","))
            .collect()
    };
    assert_eq!(curves("distill-smoke"), curves("distill-smoke-2"));
    assert_eq!(curves("distill-smoke"), curves("distill-smoke-3"));
    std::fs::remove_dir_all(&out).unwrap();
}

fn tiny_loader(n: usize) -> DataLoader {
    let images: Vec<u8> = (0..n * 28 * 28).map(|i| (i * 37 % 251) as u8).collect();
    let labels: Vec<u32> = (0..n as u32).map(|i| i % 10).collect();
    let ds = Dataset::new("fashion-mnist/train", images, labels, 1, 28, 28, 10, vec![]).unwrap();
    let cfg = AugmentConfig {
        input_size: 32,
        channels: 1,
        ..Default::default()
    };
    let aug = Augmenter::for_dataset(&cfg, &ds).unwrap();
    DataLoader::new(ds, aug, LoaderConfig::train(8, 0)).unwrap()
}

#[test]
fn a_distillation_step_leaves_the_teacher_bit_identical() {
    let dev = Device::Cpu;
    let arch = |w: f64| preset("conv-small", w).unwrap().with_io(1, 10);
    // An ensemble teacher of two networks: neither member gets a gradient or changes.
    let members = vec![
        Network::new(&arch(0.5), &dev, 1).unwrap(),
        Network::new(&arch(0.35), &dev, 3).unwrap(),
    ];
    let teacher = Ensemble::new(members).unwrap();
    let student = Network::new(&arch(0.25), &dev, 2).unwrap();
    let snapshot =
        |t: &Ensemble| -> Vec<_> { t.members().iter().map(|m| m.params.tensors()).collect() };
    let before = snapshot(&teacher);
    let cfg = DistillConfig {
        kd_weight: 1.0,
        feature_weight: 1.0,
        at_weight: 1.0,
        dkd_weight: 1.0,
        feature_taps: vec![2, 3],
        ..Default::default()
    };
    let loader = tiny_loader(16);
    let mut obj = DistillObjective::new(
        &cfg,
        0.1,
        &student,
        std::sync::Arc::new(teacher),
        loader.dataset().n,
        None,
        0,
    )
    .unwrap();
    let mut params = student.params.trainable();
    params.extend(obj.extra_params());
    let mut opt = Optimizer::new(
        OptimizerConfig::Sgd {
            momentum: 0.9,
            nesterov: true,
            weight_decay: 1e-4,
        },
        params,
    );
    for (i, batch) in loader.epoch(0).enumerate() {
        let step = Step {
            epoch: 0,
            batch: i,
            batches: loader.len(),
        };
        let (loss, _) = obj.loss(&student, &batch.unwrap(), step).unwrap();
        let grads = loss.backward().unwrap();
        for m in obj.teacher().members() {
            for (name, var, _) in m.params.trainable() {
                assert!(grads.get(&var).is_none(), "teacher {name} got a gradient");
            }
        }
        opt.step(&grads, 0.1, 1.0).unwrap();
    }
    for (i, after) in snapshot(obj.teacher()).into_iter().enumerate() {
        for (name, t) in after {
            let a = before[i][&name]
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let b = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(
                a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "teacher tensor {name} changed"
            );
        }
    }
    // The student did move.
    let moved = student.params.tensors()["conv_stem.weight"].clone();
    let fresh =
        Network::new(&arch(0.25), &dev, 2).unwrap().params.tensors()["conv_stem.weight"].clone();
    let diff = (moved - fresh)
        .unwrap()
        .abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    assert!(diff.to_scalar::<f32>().unwrap() > 0.0);
}

#[test]
fn adapters_exist_for_every_preset_pair() {
    for s in PRESETS {
        for t in PRESETS {
            let (sa, ta) = (preset(s, 1.0).unwrap(), preset(t, 1.0).unwrap());
            let shapes = adapter_shapes(&sa, &ta.feature_taps(), &[0, 1, 2, 3, 4]).unwrap();
            let (st, tt) = (sa.feature_taps(), ta.feature_taps());
            for (i, (cs, ct)) in shapes.into_iter().enumerate() {
                assert_eq!(
                    (cs, ct),
                    (st[i].channels, tt[i].channels),
                    "{s} ← {t} tap {i}"
                );
            }
        }
    }
    assert!(adapter_shapes(
        &preset("small", 1.0).unwrap(),
        &preset("large", 1.0).unwrap().feature_taps(),
        &[5]
    )
    .is_err());
}
