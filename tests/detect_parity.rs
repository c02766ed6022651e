//! Numerical parity with Ultralytics: yolo11n with 10 classes, Ultralytics' state dict loaded
//! by name into [`DetectNet`], every raw head map and the decoded boxes and scores compared in
//! eval mode to max |ours − theirs| ≤ 1e-4 × max |theirs|.
//!
//! The fixture `tests/fixtures/yolo11n_nc10.safetensors` is kept in the repository (missing:
//! skipped, or a failure under `CI`); `scripts/detect_fixture.py` regenerates it.

mod common;

use candle_core::{DType, Device, Tensor};
use mnv4_lab::detect::{DetectNet, DetectorSpec, Yolo11Scale};
use mnv4_lab::model::Mode;
use std::collections::HashMap;
use std::path::Path;

/// The fixture's weights (Ultralytics' names) and its `io.*` tensors.
fn fixture() -> Option<(HashMap<String, Tensor>, HashMap<String, Tensor>)> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/yolo11n_nc10.safetensors");
    if !common::require_input(
        &path,
        "the Ultralytics yolo11n fixture kept in the repository",
    ) {
        return None;
    }
    let all = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    Some(all.into_iter().partition(|(k, _)| !k.starts_with("io.")))
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn rel_err(ours: &Tensor, want: &Tensor, what: &str) -> f32 {
    assert_eq!(ours.dims(), want.dims(), "{what}: shape");
    let e = max_abs(&(ours - want).unwrap()) / max_abs(want);
    println!(
        "detect_parity {what:<8} {:?}: relative error {e:.2e}",
        want.dims()
    );
    e
}

#[test]
fn yolo11n_head_maps_and_decoded_boxes_equal_ultralytics() {
    let Some((weights, io)) = fixture() else {
        return;
    };
    let det = DetectorSpec::yolo11(Yolo11Scale::N, 10).lower().unwrap();
    let net = DetectNet::new(&det, &Device::Cpu, 0).unwrap();
    net.params
        .load_map(&weights, &[], "the Ultralytics fixture")
        .unwrap();
    let input = io["io.input"].to_dtype(DType::F32).unwrap();
    let maps = net.forward(&input, Mode::Eval).unwrap();
    assert_eq!(maps.len(), 3);
    for (i, map) in maps.iter().enumerate() {
        let e = rel_err(map, &io[&format!("io.level.{i}")], &format!("level.{i}"));
        assert!(e <= 1e-4, "level {i}: relative error {e:e}");
    }
    // Ultralytics decodes to [B, 4 + nc, anchors] with boxes as centre x, centre y, w, h.
    let d = net.decode(&maps).unwrap();
    let (x1y1, x2y2) = (
        d.boxes.narrow(2, 0, 2).unwrap(),
        d.boxes.narrow(2, 2, 2).unwrap(),
    );
    let centre = ((&x1y1 + &x2y2).unwrap() * 0.5).unwrap();
    let size = (&x2y2 - &x1y1).unwrap();
    let theirs = io["io.decoded"].transpose(1, 2).unwrap();
    let boxes = Tensor::cat(&[centre, size], 2).unwrap();
    let e = rel_err(&boxes, &theirs.narrow(2, 0, 4).unwrap(), "boxes");
    assert!(e <= 1e-4, "boxes: relative error {e:e}");
    let classes = theirs.dim(2).unwrap() - 4;
    let e = rel_err(&d.scores, &theirs.narrow(2, 4, classes).unwrap(), "scores");
    assert!(e <= 1e-4, "scores: relative error {e:e}");
}
