//! Numerical parity with timm: every fixture is built, loaded and compared in eval mode, logits
//! and all five feature maps, to max |ours − timm| ≤ 1e-4 × max |timm|.
//!
//! Fixtures come from `tests/fixtures/timm/` (conv-small is kept in the repository and required)
//! and, for models not there, from `MNV4_TIMM_FIXTURES` (which must exist when set) or else
//! `../shared/fixtures/timm` (used when present). `scripts/make_timm_fixtures.py` regenerates them.

mod common;

use candle_core::{DType, Device, Tensor};
use mnv4_lab::model::{Mode, Network};
use mnv4_lab::space::presets::preset_from_timm_name;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The fixture folder inside the repository.
fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/timm")
}

/// A folder with further fixtures: `MNV4_TIMM_FIXTURES` when set (a missing folder there is a
/// mistake and fails the test), else the shared folder when it exists.
fn extra_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("MNV4_TIMM_FIXTURES").map(PathBuf::from) {
        assert!(
            dir.is_dir(),
            "MNV4_TIMM_FIXTURES={} is not a folder",
            dir.display()
        );
        return Some(dir);
    }
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/timm");
    if shared.is_dir() {
        return Some(shared);
    }
    println!(
        "timm_parity: {} absent; only the fixtures in {} are checked",
        shared.display(),
        repo_dir().display()
    );
    None
}

/// Fixture stems (`NAME` of `NAME.json`) in `dir`, each with its folder.
fn discover(dir: &Path, found: &mut BTreeMap<String, PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|e| e == "json") {
            let stem = p.file_stem().unwrap().to_string_lossy().to_string();
            found.entry(stem).or_insert_with(|| dir.to_path_buf());
        }
    }
}

struct Fixture {
    model: String,
    weights: PathBuf,
    io: HashMap<String, Tensor>,
}

fn load_fixture(dir: &Path, stem: &str) -> Fixture {
    let json = dir.join(format!("{stem}.json"));
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let model = meta["model"]
        .as_str()
        .expect("fixture json names its model")
        .to_string();
    let io =
        candle_core::safetensors::load(dir.join(format!("{stem}.io.safetensors")), &Device::Cpu)
            .unwrap_or_else(|e| panic!("fixture {stem}: io file unreadable: {e}"));
    let weights = dir.join(format!("{stem}.weights.safetensors"));
    Fixture { model, weights, io }
}

/// Every fixture: the repository's first, then the extra folder's models the repository lacks.
/// None (skipped) or a failure under `CI` when the repository's conv-small fixture is missing.
fn fixtures() -> Option<Vec<Fixture>> {
    let repo = repo_dir();
    let required = repo.join("mobilenetv4_conv_small.json");
    if !common::require_input(
        &required,
        "the timm conv-small fixture kept in the repository",
    ) {
        return None;
    }
    let mut found = BTreeMap::new();
    discover(&repo, &mut found);
    if let Some(dir) = extra_dir() {
        discover(&dir, &mut found);
    }
    Some(
        found
            .iter()
            .map(|(stem, dir)| load_fixture(dir, stem))
            .collect(),
    )
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn rel_err(ours: &Tensor, want: &Tensor, what: &str) -> f32 {
    assert_eq!(ours.dims(), want.dims(), "{what}: shape");
    let diff = max_abs(&(ours - want).unwrap());
    diff / max_abs(want)
}

fn build(f: &Fixture) -> Network {
    let input = &f.io["input"];
    let logits = &f.io["logits"];
    let arch = preset_from_timm_name(&f.model)
        .unwrap_or_else(|| panic!("fixture model {} is not a known MobileNetV4", f.model))
        .with_io(input.dims()[1], logits.dims()[1]);
    let net = Network::new(&arch, &Device::Cpu, 0).unwrap();
    net.params.load_safetensors(&f.weights, &[]).unwrap();
    net
}

#[test]
fn timm_parity_logits_and_features() {
    let Some(fixtures) = fixtures() else { return };
    for f in &fixtures {
        let net = build(f);
        let input = f.io["input"].to_dtype(DType::F32).unwrap();
        let out = net
            .forward_with(&input, Mode::Eval, &[0, 1, 2, 3, 4])
            .unwrap();
        let mut worst = rel_err(&out.logits, &f.io["logits"], "logits");
        for (i, feat) in out.features.iter().enumerate() {
            let e = rel_err(
                feat,
                &f.io[&format!("feature.{i}")],
                &format!("feature.{i}"),
            );
            assert!(e <= 1e-4, "{}: feature.{i} relative error {e:e}", f.model);
            worst = worst.max(e);
        }
        println!(
            "timm_parity {:<28} input {:?}: max relative error {worst:.2e}",
            f.model,
            input.dims()
        );
        assert!(
            worst <= 1e-4,
            "{}: logits relative error {worst:e}",
            f.model
        );
    }
}

#[test]
fn timm_parity_saved_names_and_shapes_equal_the_fixture_weights() {
    let Some(fixtures) = fixtures() else { return };
    for f in &fixtures {
        let theirs = candle_core::safetensors::load(&f.weights, &Device::Cpu).unwrap();
        let arch = preset_from_timm_name(&f.model).unwrap();
        let net = Network::new(&arch, &Device::Cpu, 1).unwrap();
        let path = std::env::temp_dir().join(format!(
            "mnv4-save-{}-{}.safetensors",
            f.model,
            std::process::id()
        ));
        net.params.save_safetensors(&path).unwrap();
        let ours = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
        std::fs::remove_file(&path).unwrap();
        let shape = |m: &HashMap<String, Tensor>| -> Vec<(String, Vec<usize>)> {
            let mut v: Vec<_> = m
                .iter()
                .filter(|(k, _)| !k.ends_with("num_batches_tracked"))
                .map(|(k, t)| (k.clone(), t.dims().to_vec()))
                .collect();
            v.sort();
            v
        };
        assert_eq!(shape(&ours), shape(&theirs), "{}", f.model);
    }
}

#[test]
fn timm_parity_loader_names_missing_unexpected_and_misshaped_tensors() {
    let Some(fixtures) = fixtures() else { return };
    let f = &fixtures[0];
    let mut tensors = candle_core::safetensors::load(&f.weights, &Device::Cpu).unwrap();
    let arch = preset_from_timm_name(&f.model).unwrap();
    let net = Network::new(&arch, &Device::Cpu, 0).unwrap();
    tensors.remove("bn1.running_var");
    tensors.insert(
        "blocks.9.9.extra.weight".into(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    );
    tensors.insert(
        "classifier.bias".into(),
        Tensor::zeros(7, DType::F32, &Device::Cpu).unwrap(),
    );
    let e = net
        .params
        .load_map(&tensors, &[], "test")
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing: bn1.running_var"), "{e}");
    assert!(e.contains("unexpected: blocks.9.9.extra.weight"), "{e}");
    assert!(e.contains("wrong shape: classifier.bias"), "{e}");
}
