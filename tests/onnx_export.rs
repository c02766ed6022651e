//! The ONNX exporter checked in a real runtime: every exported graph runs in tract and its logits
//! (and, where asked, feature maps) match `Network::forward` in eval mode.
//!
//! Error measure: max |onnx − ours| / max |ours| over each output, at most 1e-4. Weights are
//! seeded random; batch-norm statistics and affine parameters and layer-scale gammas are set to
//! random values first, so that folding and layer scale really matter.

mod common;

use candle_core::{Device, Tensor};
use common::deploy::{randomize_stats, rel_err, vary, within_tolerance};
use mnv4_lab::export::{export_onnx, ExportOptions};
use mnv4_lab::model::{Mode, Network};
use mnv4_lab::search::space::SearchSpace;
use mnv4_lab::space::{presets::preset, Arch};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::time::Instant;
use tract_onnx::prelude::Tensor as TractTensor;
use tract_onnx::prelude::*;

/// Exports `arch` (random weights and statistics), runs it in tract at batch 1 and 3 and returns
/// the largest relative error over every output.
fn check(arch: &Arch, res: (usize, usize), seed: u64, opts: &ExportOptions) -> f32 {
    let net = Network::new(arch, &Device::Cpu, seed).unwrap();
    randomize_stats(&net, seed + 1);
    let bytes = export_onnx(&net, res, opts).unwrap();
    let model = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let taps: Vec<usize> = if opts.feature_outputs {
        (0..arch.feature_taps().len()).collect()
    } else {
        vec![]
    };
    let mut worst = 0f32;
    let mut rng = StdRng::seed_from_u64(seed + 2);
    for batch in [1, 3] {
        let shape = [batch, arch.in_chans, res.0, res.1];
        let x: Vec<f32> = (0..shape.iter().product())
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let ours = net
            .forward_with(
                &Tensor::from_vec(x.clone(), &shape, &Device::Cpu).unwrap(),
                Mode::Eval,
                &taps,
            )
            .unwrap();
        let input = TractTensor::from_shape(&shape, &x).unwrap();
        let outs = model.run(tvec!(input.into_tvalue())).unwrap();
        assert_eq!(outs.len(), 1 + taps.len(), "{}", arch.to_block_string());
        let expected = std::iter::once(&ours.logits).chain(&ours.features);
        for (got, want) in outs.iter().zip(expected) {
            let got_view = got.to_plain_array_view::<f32>().unwrap();
            assert_eq!(got_view.shape(), want.dims(), "{}", arch.to_block_string());
            let got: Vec<f32> = got_view.iter().copied().collect();
            let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            worst = worst.max(rel_err(&got, &want));
        }
    }
    within_tolerance(worst, arch, res)
}

fn opts(keep_bn: bool, feature_outputs: bool) -> ExportOptions {
    ExportOptions {
        keep_bn,
        feature_outputs,
        ..Default::default()
    }
}

#[test]
fn presets_match_in_tract() {
    let start = Instant::now();
    let mut worst = 0f32;
    let cases = [
        ("conv-small", 1.0, (64, 64), opts(false, true)),
        ("conv-small", 0.5, (96, 80), opts(false, false)),
        ("conv-medium", 1.0, (64, 64), opts(false, false)),
        ("conv-large", 1.0, (64, 64), opts(true, false)),
        ("hybrid-medium", 1.0, (64, 64), opts(false, true)),
        ("hybrid-large", 1.0, (64, 64), opts(true, false)),
    ];
    for (i, (name, width, res, o)) in cases.iter().enumerate() {
        let arch = preset(name, *width).unwrap().with_io(3, 10);
        let err = check(&arch, *res, i as u64, o);
        println!("{name} ×{width} at {res:?}: max relative error {err:.2e}");
        worst = worst.max(err);
    }
    println!(
        "presets: {} cases, worst {worst:.2e}, {:.1} s",
        cases.len(),
        start.elapsed().as_secs_f64()
    );
}

#[test]
fn layer_scales_are_folded_into_the_convs_unless_bn_is_kept() {
    // hybrid-medium has layer scales after its UIB and attention blocks; `check` runs both
    // forms against candle with random gammas.
    let arch = preset("hybrid-medium", 1.0).unwrap().with_io(3, 10);
    let net = Network::new(&arch, &Device::Cpu, 0).unwrap();
    let has_gamma = |keep_bn: bool| {
        let bytes = export_onnx(&net, (64, 64), &opts(keep_bn, false)).unwrap();
        bytes.windows(6).any(|w| w == b".gamma")
    };
    assert!(!has_gamma(false), "a layer scale was left as its own Mul");
    assert!(
        has_gamma(true),
        "keep_bn keeps the layer scales as they are"
    );
}

#[test]
fn random_search_space_architectures_match_in_tract() {
    let start = Instant::now();
    let space = SearchSpace::load(Path::new("search_spaces/small.toml")).unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    let (mut worst, mut with_mqa, n) = (0f32, 0, 56);
    for i in 0..n {
        let coarse = space.sample_coarse(&mut rng);
        let fine = space.sample_fine(&mut rng, &coarse);
        let arch = match i % 3 {
            0 => coarse,
            1 => fine,
            _ => space.mutate(&mut rng, &fine, true),
        };
        let arch = vary(arch, i);
        with_mqa += arch.walk().iter().any(|b| b.3.is_mqa()) as usize;
        worst = worst.max(check(
            &arch,
            (40, 56),
            100 + i as u64,
            &opts(i.is_multiple_of(5), i.is_multiple_of(7)),
        ));
    }
    println!(
        "random architectures: {n} cases ({with_mqa} with MQA) at 40×56, worst {worst:.2e}, {:.1} s",
        start.elapsed().as_secs_f64()
    );
    assert!(with_mqa >= 10, "only {with_mqa} samples had MQA");
}

/// A fresh empty folder under the system's temporary folder.
fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mnv4-onnx-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run_cli(args: &[&str]) -> anyhow::Result<()> {
    use clap::Parser;
    let argv = std::iter::once("mnv4-lab").chain(args.iter().copied());
    mnv4_lab::cli::run(mnv4_lab::cli::Cli::try_parse_from(argv)?)
}

#[test]
fn the_export_command_writes_the_declared_graph_and_names_bad_input() {
    use mnv4_lab::export::proto::{DimValue, ModelProto};
    use prost::Message;
    let dir = temp_dir("cli");
    let out = dir.join("m.onnx");
    let arch = "in1 nc7 gelu stem16 feat64 head96 ls1e-5 | cn_k3_s2_c16 | uir_a3_k3_s2_e2_c24 mqa_k3_h2_s1_v2_d16_c24";
    let o = out.to_str().unwrap();
    run_cli(&["export", arch, "--res", "40,56", "-o", o, "--features-out"]).unwrap();
    let model = ModelProto::decode(&std::fs::read(&out).unwrap()[..]).unwrap();
    assert_eq!((model.ir_version, model.opset_import[0].version), (8, 17));
    let graph = model.graph.unwrap();
    let dims = |v: &mnv4_lab::export::proto::ValueInfoProto| -> Vec<String> {
        let shape = v.r#type.as_ref().unwrap().tensor_type.as_ref().unwrap();
        let dims = &shape.shape.as_ref().unwrap().dim;
        dims.iter()
            .map(|d| match d.value.as_ref().unwrap() {
                DimValue::DimValue(n) => n.to_string(),
                DimValue::DimParam(s) => s.clone(),
            })
            .collect()
    };
    assert_eq!(graph.input[0].name, "input0");
    assert_eq!(dims(&graph.input[0]), ["batch", "1", "40", "56"]);
    assert_eq!(graph.output[0].name, "output0");
    assert_eq!(dims(&graph.output[0]), ["batch", "7"]);
    assert_eq!(graph.output.len(), 4, "logits and three feature taps");
    let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_str()).collect();
    assert!(!ops.contains(&"BatchNormalization"), "folded by default");
    for op in ["Erf", "Softmax", "MatMul", "GlobalAveragePool", "Gemm"] {
        assert!(ops.contains(&op), "no {op} node");
    }
    for (args, says) in [
        (vec!["export", "conv-smal", "-o", o], "conv-smal"),
        (vec!["export", "w.safetensors", "-o", o], "--model"),
        (
            vec!["export", "small", "--model", "small", "-o", o],
            "--model",
        ),
        (vec!["export", "nothere.json", "-o", o], "nothere.json"),
        (vec!["export", "small", "--width", "9", "-o", o], "width"),
    ] {
        let err = format!("{:#}", run_cli(&args).unwrap_err());
        assert!(err.contains(says), "{args:?}: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
