//! The native inference engine ([`mnv4_lab::export::engine`]) against `Network::forward` in eval
//! mode: presets (conv and hybrid, layer scales, MQA) and random search-space architectures
//! (GELU, one input channel, strided key/value down-sampling), at batch 1 and 3.
//!
//! Error measure: max |engine − candle| / max |candle| over the logits, at most 1e-4, with
//! random batch-norm statistics so that folding matters.

mod common;

use candle_core::{Device, Tensor};
use common::deploy::{randomize_stats, rel_err, vary, within_tolerance};
use mnv4_lab::export::engine::Engine;
use mnv4_lab::model::{Mode, Network};
use mnv4_lab::search::space::SearchSpace;
use mnv4_lab::space::{presets::preset, Arch, ModelSpec};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::Path;

/// The largest relative error of the engine's logits over batches 1 and 3.
fn check(arch: &Arch, res: (usize, usize), seed: u64) -> f32 {
    let net = Network::new(arch, &Device::Cpu, seed).unwrap();
    randomize_stats(&net, seed + 1);
    let engine = Engine::compile(&net).unwrap();
    let mut rng = StdRng::seed_from_u64(seed + 2);
    let mut worst = 0f32;
    for batch in [1, 3] {
        let shape = [batch, arch.in_chans, res.0, res.1];
        let x: Vec<f32> = (0..shape.iter().product())
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let input = Tensor::from_vec(x.clone(), &shape, &Device::Cpu).unwrap();
        let want = net.forward(&input, Mode::Eval).unwrap();
        let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let got = engine.run(&x, batch, res).unwrap();
        worst = worst.max(rel_err(&got, &want));
    }
    within_tolerance(worst, arch, res)
}

#[test]
fn presets_match_candle() {
    let cases = [
        ("conv-small", 1.0, (64, 64)),
        ("conv-small", 0.5, (96, 80)),
        ("conv-small", 0.75, (42, 30)),
        ("conv-medium", 1.0, (64, 64)),
        ("conv-large", 1.0, (64, 64)),
        ("hybrid-medium", 1.0, (64, 64)),
        ("hybrid-large", 1.0, (48, 40)),
    ];
    for (i, (name, width, res)) in cases.into_iter().enumerate() {
        let arch = preset(name, width).unwrap().with_io(3, 10);
        let err = check(&arch, res, i as u64);
        println!("{name} ×{width} at {res:?}: max relative error {err:.2e}");
    }
}

#[test]
fn random_search_space_architectures_match_candle() {
    let space = SearchSpace::load(Path::new("search_spaces/small.toml")).unwrap();
    let mut rng = StdRng::seed_from_u64(17);
    let (mut worst, mut with_mqa, n) = (0f32, 0, 40);
    for i in 0..n {
        let coarse = space.sample_coarse(&mut rng);
        let arch = match i % 2 {
            0 => space.sample_fine(&mut rng, &coarse),
            _ => space.mutate(&mut rng, &coarse, true),
        };
        let arch = vary(arch, i);
        with_mqa += arch.walk().iter().any(|b| b.3.is_mqa()) as usize;
        worst = worst.max(check(&arch, (40, 56), 200 + i as u64));
    }
    println!("random architectures: {n} cases ({with_mqa} with MQA), worst {worst:.2e}");
    assert!(with_mqa >= 8, "only {with_mqa} samples had MQA");
}

#[test]
fn feature_taps_match_candle() {
    // Every tap of a conv preset with one input channel (the teacher's case, one downsample
    // dropped) and of a hybrid with MQA, batch 2.
    let teacher = ModelSpec {
        drop_downsamples: 1,
        ..ModelSpec::default()
    }
    .to_arch(1, 10)
    .unwrap();
    let hybrid = preset("hybrid-medium", 0.5).unwrap().with_io(3, 10);
    for (i, (arch, res)) in [(teacher, (32, 32)), (hybrid, (48, 40))].iter().enumerate() {
        let net = Network::new(arch, &Device::Cpu, 40 + i as u64).unwrap();
        randomize_stats(&net, 50 + i as u64);
        let engine = Engine::compile(&net).unwrap();
        let taps: Vec<usize> = (0..arch.feature_taps().len()).rev().collect();
        let shape = [2, arch.in_chans, res.0, res.1];
        let mut rng = StdRng::seed_from_u64(60 + i as u64);
        let x: Vec<f32> = (0..shape.iter().product())
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let input = Tensor::from_vec(x.clone(), &shape, &Device::Cpu).unwrap();
        let want = net.forward_with(&input, Mode::Eval, &taps).unwrap();
        let (logits, maps) = engine.run_with_taps(&x, 2, *res, &taps).unwrap();
        let want_logits = want.logits.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        within_tolerance(rel_err(&logits, &want_logits), arch, *res);
        assert_eq!(maps.len(), taps.len());
        for ((map, t), &tap) in maps.iter().zip(&want.features).zip(&taps) {
            assert_eq!(map.dims.as_slice(), t.dims(), "tap {tap}: dims");
            let t = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let err = rel_err(&map.values, &t);
            assert!(err <= 1e-4, "tap {tap}: max relative error {err:.2e}");
        }
    }
    let arch = preset("conv-small", 0.5).unwrap().with_io(1, 10);
    let engine = Engine::compile(&Network::new(&arch, &Device::Cpu, 0).unwrap()).unwrap();
    let err = engine
        .run_with_taps(&vec![0.0; 32 * 32], 1, (32, 32), &[9])
        .err()
        .expect("a tap past the last is refused");
    assert!(
        err.to_string().contains("feature index 9 out of range"),
        "{err}"
    );
}

#[test]
fn bad_input_is_named() {
    let arch = preset("conv-small", 0.5).unwrap().with_io(1, 10);
    let engine = Engine::compile(&Network::new(&arch, &Device::Cpu, 0).unwrap()).unwrap();
    let e = engine.run(&[0.0; 10], 1, (32, 32)).unwrap_err();
    assert!(
        e.to_string()
            .contains("expected batch 1 × 1 channels × 32 × 32"),
        "{e}"
    );
    let e = engine.run(&[], 0, (32, 32)).unwrap_err();
    assert!(e.to_string().contains("must be positive"), "{e}");
}

#[test]
fn the_profile_lists_every_kernel_of_a_pass() {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_mnv4-lab"))
        .args(["bench", "infer", "--engine", "native", "--batch", "1"])
        .args(["--res", "48", "--steps", "2", "--warmup", "1", "--profile"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Per kind: "  pointwise  1.234 ms  56.1 %  (29 per pass)".
    let per_kind: usize = out
        .lines()
        .filter_map(|l| l.strip_suffix(" per pass)")?.rsplit_once('('))
        .map(|(_, n)| n.parse::<usize>().unwrap())
        .sum();
    assert!(per_kind > 0, "{out}");
    let (_, listed) = out
        .split_once("every kernel, in pass order:\n")
        .expect(&out);
    let kernels: Vec<&str> = listed.lines().filter(|l| l.contains(" ms ")).collect();
    assert_eq!(kernels.len(), per_kind, "{out}");
    assert!(kernels[0].contains("layout"), "{out}");
    let shares: f64 = kernels
        .iter()
        .map(|l| {
            l.split('%')
                .next()
                .unwrap()
                .split_whitespace()
                .last()
                .unwrap()
        })
        .map(|v| v.parse::<f64>().unwrap())
        .sum();
    assert!((shares - 100.0).abs() < 0.1 * kernels.len() as f64, "{out}");
}
