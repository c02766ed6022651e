//! The candle detector against its spec: parameter counts, map shapes, decoding, gradients.

use super::blocks::REG_MAX;
use super::*;
use crate::model::Mode;
use crate::space::presets::preset;
use candle_core::{DType, Device, Tensor};

fn yolo11n(classes: usize) -> DetectorSpec {
    DetectorSpec::yolo11(Yolo11Scale::N, classes)
}

fn mnv4_small_075() -> DetectorSpec {
    DetectorSpec::mnv4(preset("conv-small", 0.75).unwrap(), Yolo11Scale::N, 80)
}

fn build(spec: &DetectorSpec) -> DetectNet {
    DetectNet::new(&spec.lower().unwrap(), &Device::Cpu, 0).unwrap()
}

/// Trainable scalars whose names start with `prefix`.
fn trainable_under(net: &DetectNet, prefix: &str) -> u64 {
    let vars = net.params.trainable();
    let under = vars.iter().filter(|(name, _, _)| name.starts_with(prefix));
    under.map(|(_, v, _)| v.elem_count() as u64).sum()
}

#[test]
fn parameter_counts_equal_the_spec_node_by_node() {
    for spec in [yolo11n(80), yolo11n(10), mnv4_small_075()] {
        let net = build(&spec);
        // The spec counts DFL's 16 fixed bins, as PyTorch and Ultralytics' published totals do;
        // they are a buffer here, never trained.
        let want = spec.params().unwrap();
        assert_eq!(
            net.params.num_params() as u64 + REG_MAX as u64,
            want,
            "{}",
            spec.name()
        );
        let det = spec.lower().unwrap();
        let plans = det.plan(64, 64).unwrap();
        let mut backbone = 0;
        for (node, plan) in det.nodes.iter().zip(&plans) {
            if node.name.starts_with("backbone.") {
                backbone += plan.row.params;
                continue;
            }
            let mut got = trainable_under(&net, &format!("{}.", node.name));
            if matches!(node.op, NodeOp::Yolo(Block::Detect { .. })) {
                got += REG_MAX as u64;
            }
            assert_eq!(got, plan.row.params, "{}: {}", spec.name(), node.name);
        }
        assert_eq!(
            trainable_under(&net, "backbone."),
            backbone,
            "{}",
            spec.name()
        );
    }
}

#[test]
fn tensors_carry_ultralytics_and_timm_names() {
    let names = build(&yolo11n(80)).params.tensors();
    for name in [
        "model.0.conv.weight",
        "model.0.bn.running_var",
        "model.2.m.0.cv1.conv.weight",
        "model.6.m.0.m.1.cv2.bn.weight",
        "model.10.m.0.attn.qkv.conv.weight",
        "model.10.m.0.ffn.1.bn.bias",
        "model.23.cv2.0.0.conv.weight",
        "model.23.cv2.2.2.bias",
        "model.23.cv3.1.0.0.conv.weight",
        "model.23.dfl.conv.weight",
    ] {
        assert!(names.contains_key(name), "{name} missing");
    }
    let dfl = names["model.23.dfl.conv.weight"].flatten_all().unwrap();
    let want: Vec<f32> = (0..REG_MAX).map(|i| i as f32).collect();
    assert_eq!(dfl.to_vec1::<f32>().unwrap(), want);
    let names = build(&mnv4_small_075()).params.tensors();
    assert!(names.contains_key("backbone.conv_stem.weight"));
    assert!(names.contains_key("backbone.bn1.running_mean"));
    assert!(names.contains_key("model.9.cv1.conv.weight"));
}

#[test]
fn forward_gives_one_map_per_level_in_both_modes() {
    for (spec, classes) in [(yolo11n(10), 10), (mnv4_small_075(), 80)] {
        let net = build(&spec);
        for (h, w) in [(64, 64), (96, 96), (64, 96)] {
            let x = Tensor::randn(0f32, 1.0, (2, 3, h, w), &Device::Cpu).unwrap();
            for mode in [Mode::Eval, Mode::Train] {
                let maps = net.forward(&x, mode).unwrap();
                let dims: Vec<Vec<usize>> = maps.iter().map(|m| m.dims().to_vec()).collect();
                let want: Vec<Vec<usize>> = LEVEL_STRIDES
                    .iter()
                    .map(|s| vec![2, 4 * REG_MAX + classes, h / s, w / s])
                    .collect();
                assert_eq!(dims, want, "{} at {h}×{w}, {mode:?}", spec.name());
            }
        }
        let bad = Tensor::zeros((1, 3, 48, 64), DType::F32, &Device::Cpu).unwrap();
        assert!(net.forward(&bad, Mode::Eval).is_err());
    }
}

/// A head map `[1, 4·REG_MAX + classes, h, w]` of zeros (uniform bins, scores 0.5).
fn zero_map(classes: usize, h: usize, w: usize) -> Vec<f32> {
    vec![0.0; (4 * REG_MAX + classes) * h * w]
}

#[test]
fn decode_of_one_hot_bins_gives_the_exact_box() {
    let (classes, (h, w)) = (2, (2, 3));
    let mut p3 = zero_map(classes, h, w);
    // Cell x = 2, y = 1: sides l = 3, t = 1, r = 4, b = 0 bins, as near one-hot logits.
    let cell = w + 2;
    for (side, bin) in [3, 1, 4, 0].into_iter().enumerate() {
        p3[((side * REG_MAX + bin) * h * w) + cell] = 1e4;
    }
    p3[(4 * REG_MAX + 1) * h * w + cell] = 2.0; // class 1's logit
    let to_map = |data: Vec<f32>, h: usize, w: usize| {
        Tensor::from_vec(data, (1, 4 * REG_MAX + classes, h, w), &Device::Cpu).unwrap()
    };
    let maps = [
        to_map(p3, h, w),
        to_map(zero_map(classes, 1, 2), 1, 2),
        to_map(zero_map(classes, 1, 1), 1, 1),
    ];
    let bins = Tensor::arange(0f32, REG_MAX as f32, &Device::Cpu).unwrap();
    let d = decode(&maps, &bins, &LEVEL_STRIDES).unwrap();
    assert_eq!(d.boxes.dims(), [1, 6 + 2 + 1, 4]);
    assert_eq!(d.scores.dims(), [1, 9, classes]);
    let boxes = d.boxes.squeeze(0).unwrap().to_vec2::<f32>().unwrap();
    // Centre (2.5, 1.5) cells at stride 8: x1 = (2.5 − 3)·8, y1 = (1.5 − 1)·8, …
    assert_eq!(boxes[cell], [-4.0, 4.0, 52.0, 12.0]);
    // Uniform bins: every side 7.5 cells. P4's second cell: centre (1.5, 0.5) at stride 16.
    assert_eq!(boxes[7], [-96.0, -112.0, 144.0, 128.0]);
    // P5's only cell: centre (0.5, 0.5) at stride 32.
    assert_eq!(boxes[8], [-224.0, -224.0, 256.0, 256.0]);
    let scores = d.scores.squeeze(0).unwrap().to_vec2::<f32>().unwrap();
    let sigmoid_2 = 1.0 / (1.0 + (-2f32).exp());
    assert!((scores[cell][1] - sigmoid_2).abs() < 1e-6);
    assert_eq!(scores[0], [0.5, 0.5]);
}

#[test]
fn gradients_reach_every_trainable_tensor_from_the_head_maps() {
    for (spec, first) in [
        (yolo11n(10), "model.0.conv.weight"),
        (mnv4_small_075(), "backbone.conv_stem.weight"),
    ] {
        let net = build(&spec);
        let x = Tensor::randn(0f32, 1.0, (2, 3, 64, 64), &Device::Cpu).unwrap();
        let maps = net.forward(&x, Mode::Train).unwrap();
        let mut loss = Tensor::new(0f32, &Device::Cpu).unwrap();
        for m in &maps {
            loss = (loss + m.sqr().unwrap().mean_all().unwrap()).unwrap();
        }
        let grads = loss.backward().unwrap();
        for (name, var, _) in net.params.trainable() {
            let g = grads.get(var.as_tensor());
            assert!(g.is_some(), "{}: no gradient for {name}", spec.name());
        }
        let norm = squared_norm(grads.get(&net.params.tensors()[first]).unwrap());
        assert!(norm > 0.0, "{}: {first} gets a zero gradient", spec.name());
    }
}

#[test]
fn yolo_batch_norms_update_their_statistics_with_momentum_003() {
    let net = build(&yolo11n(10));
    let x = Tensor::randn(0f32, 1.0, (2, 3, 64, 64), &Device::Cpu).unwrap();
    net.forward(&x, Mode::Train).unwrap();
    let t = net.params.tensors();
    let y = x.conv2d(&t["model.0.conv.weight"], 1, 2, 1, 1).unwrap();
    let batch_mean = y
        .transpose(0, 1)
        .unwrap()
        .flatten_from(1)
        .unwrap()
        .mean(1)
        .unwrap();
    let want = (batch_mean * 0.03).unwrap();
    let diff = (&t["model.0.bn.running_mean"] - want)
        .unwrap()
        .abs()
        .unwrap();
    let diff = diff.max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(diff < 1e-6, "running mean off by {diff}");
}

#[test]
fn sppf_max_pool_matches_a_direct_window_maximum() {
    let (h, w) = (4usize, 5usize);
    let x = Tensor::randn(0f32, 1.0, (1, 2, h, w), &Device::Cpu).unwrap();
    let got = modules::max_pool_same(&x, 5).unwrap().squeeze(0).unwrap();
    let got = got.to_vec3::<f32>().unwrap();
    let planes = x.squeeze(0).unwrap().to_vec3::<f32>().unwrap();
    // The maximum over the 5×5 window centred on (i, j), clipped to the plane.
    let window_max = |plane: &[Vec<f32>], i: usize, j: usize| {
        let rows = plane.iter().take(i + 3).skip(i.saturating_sub(2));
        rows.flat_map(|r| r.iter().take(j + 3).skip(j.saturating_sub(2)))
            .fold(f32::NEG_INFINITY, |m, &v| m.max(v))
    };
    for (c, (plane, out)) in planes.iter().zip(&got).enumerate() {
        for (i, row) in out.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                assert_eq!(v, window_max(plane, i, j), "({c}, {i}, {j})");
            }
        }
    }
}

#[test]
fn the_detection_loss_trains_the_whole_detector() {
    use super::assign::{AssignerConfig, Object};
    use super::loss::{detection_loss, flatten_head, LossGains};
    let spec = DetectorSpec::mnv4(preset("conv-small", 0.25).unwrap(), Yolo11Scale::N, 3);
    let net = build(&spec);
    let x = Tensor::randn(0f32, 1.0, (2, 3, 64, 64), &Device::Cpu).unwrap();
    let maps = net.forward(&x, Mode::Train).unwrap();
    let head = flatten_head(&maps, &LEVEL_STRIDES, &net.head_bins().unwrap()).unwrap();
    let objects = vec![
        vec![Object {
            class: 2,
            xyxy: [4.0, 6.0, 40.0, 50.0],
        }],
        vec![],
    ];
    let loss = detection_loss(
        &head,
        &objects,
        &LossGains::default(),
        &AssignerConfig::default(),
    )
    .unwrap();
    assert!(loss.boxes > 0.0 && loss.dfl > 0.0 && loss.cls > 0.0);
    let grads = loss.total.backward().unwrap();
    for name in ["backbone.conv_stem.weight", "model.23.cv2.0.2.weight"] {
        let (_, var, _) = net
            .params
            .trainable()
            .into_iter()
            .find(|(n, _, _)| n == name)
            .unwrap_or_else(|| panic!("no tensor {name}"));
        assert!(
            squared_norm(grads.get(&var).expect(name)) > 0.0,
            "{name} got no gradient"
        );
    }
}

fn squared_norm(g: &Tensor) -> f32 {
    g.sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}
