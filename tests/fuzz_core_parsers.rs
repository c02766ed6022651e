//! Random and mutated input to the parsers of the core's own files — the experiment (with
//! `--set`), checkpoint sidecars and the trial log — gets a clear error or a value, never a panic.

use mnv4_lab::experiment::Experiment;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

/// A copy of `seed` with a few random byte flips, deletions, insertions or a truncation.
fn mutate(seed: &[u8], rng: &mut StdRng) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..rng.random_range(1..6) {
        let at = rng.random_range(0..=b.len());
        match rng.random_range(0..4) {
            0 if at < b.len() => b[at] = rng.random(),
            1 if at < b.len() => {
                b.remove(at);
            }
            2 => b.insert(
                at,
                *b"=[]{}\"'.,:0123456789e-\n#"
                    .get(rng.random_range(0..26))
                    .unwrap_or(&b'x'),
            ),
            _ => b.truncate(at),
        }
    }
    b
}

/// Runs `f` on `cases` inputs derived from `seeds`, failing with the input on a panic.
fn never_panics(seeds: &[&[u8]], cases: usize, f: impl Fn(&[u8])) {
    let mut rng = StdRng::seed_from_u64(5);
    for i in 0..cases {
        let input = match i % 5 {
            0 => (0..rng.random_range(0..200))
                .map(|_| rng.random())
                .collect(),
            _ => mutate(seeds[i % seeds.len()], &mut rng),
        };
        let r = catch_unwind(AssertUnwindSafe(|| f(&input)));
        assert!(
            r.is_ok(),
            "panic on input {:?}",
            String::from_utf8_lossy(&input)
        );
    }
}

const EXPERIMENTS: [&str; 4] = ["quick", "smoke", "distill_smoke", "fashion_mnist_small"];

#[test]
fn experiment_files_and_overrides() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments");
    let texts: Vec<Vec<u8>> = EXPERIMENTS
        .iter()
        .map(|n| std::fs::read(dir.join(format!("{n}.toml"))).unwrap())
        .collect();
    let seeds: Vec<&[u8]> = texts.iter().map(Vec::as_slice).collect();
    never_panics(&seeds, 3000, |b| {
        let _ = Experiment::from_toml(&String::from_utf8_lossy(b), &[], "x", "fuzz");
    });
    let sets: [&[u8]; 3] = [
        b"train.lr=0.05",
        b"search.fine={ trials = 4, epochs = 1 }",
        b"search.objectives=[\"val_top1\", \"roofline:host\"]",
    ];
    never_panics(&sets, 2000, |b| {
        let set = String::from_utf8_lossy(b).into_owned();
        let _ = Experiment::from_toml("", &[set], "x", "fuzz");
    });
}

#[test]
fn checkpoint_sidecars_and_trial_logs() {
    let dir = std::env::temp_dir().join(format!("mnv4-fuzz-core-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sidecar = serde_json::json!({
        "format": "mnv4-lab checkpoint v1",
        "arch": mnv4_lab::space::presets::preset("conv-small", 0.25).unwrap(),
        "arch_string": "x",
        "experiment": { "seed": 1, "data": {}, "train": {} },
        "epoch": 1, "optimizer_step": 3, "weights": "e0001.safetensors",
        "state": "e0001.state.safetensors", "metrics": {}, "best_val_top1": 0.5, "best_epoch": 1,
        "rng": "r"
    })
    .to_string();
    let path = dir.join("last.json");
    std::fs::write(&path, &sidecar).unwrap();
    let s = mnv4_lab::train::checkpoint::read_sidecar(&path).expect("a v1 sidecar still reads");
    assert_eq!((s.seed, s.epoch), (1, 1));
    never_panics(&[sidecar.as_bytes()], 2000, |b| {
        std::fs::write(&path, b).unwrap();
        let _ = mnv4_lab::train::checkpoint::read_sidecar(&path);
    });
    let log = dir.join("trials.jsonl");
    let line = r#"{"index":0,"stage":"coarse","strategy":"nsga2","label":"","arch":"a","hash":"h","feasible":true,"violation":0.0,"duplicate_of":null,"val_top1":0.5,"stage_val_top1":0.5,"params":1,"macs":2,"latency_ms":0.1,"roofline_ms":{},"epochs":1,"seed":3,"wall_seconds":1.0}"#;
    let two = format!("{line}\n{line}\n");
    never_panics(&[two.as_bytes()], 2000, |b| {
        std::fs::write(&log, b).unwrap();
        let how = mnv4_lab::search::store::OpenStudy::Create(&serde_json::Value::Null);
        let _ = mnv4_lab::search::store::jsonl::JsonlStore::open(&log, how)
            .and_then(|s| mnv4_lab::search::store::TrialStore::trials(&s));
    });
    std::fs::remove_dir_all(&dir).unwrap();
}
