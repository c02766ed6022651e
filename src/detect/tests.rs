use super::scale::SCALES;
use super::*;
use crate::cost::plan;
use crate::space::presets::preset;

fn yolo(scale: Yolo11Scale) -> DetectorSpec {
    DetectorSpec::yolo11(scale, 80)
}

fn mnv4_small_075() -> DetectorSpec {
    let arch = preset("conv-small", 0.75).unwrap();
    DetectorSpec::mnv4(arch, Yolo11Scale::N, 80)
}

#[test]
fn yolo11_params_equal_ultralytics_published_counts() {
    // The `summary:` totals in Ultralytics' yolo11.yaml (80 classes), which include DFL's 16
    // fixed weights: they are the difference between its "parameters" and "gradients".
    let published = [2_624_080, 9_458_752, 20_114_688, 25_372_160, 56_966_176];
    for (scale, want) in SCALES.into_iter().zip(published) {
        assert_eq!(yolo(scale).params().unwrap(), want, "yolo11{scale}");
    }
}

#[test]
fn yolo11n_layers_match_ultralytics_per_layer_summary() {
    let want = [
        464, 4672, 6640, 36992, 26080, 147712, 87040, 295424, 346112, 164608, 249728, 0, 0, 111296,
        0, 0, 32096, 36992, 0, 86720, 147712, 0, 378880, 464912,
    ];
    let plans = yolo(Yolo11Scale::N)
        .lower()
        .unwrap()
        .plan(640, 640)
        .unwrap();
    let got: Vec<u64> = plans.iter().map(|p| p.row.params).collect();
    assert_eq!(got, want);
    assert_eq!(plans[23].row.out_shape, [84, 1, 8400]);
}

#[test]
fn yolo11_gflops_at_640_are_close_to_ultralytics() {
    // Ultralytics reports 6.6 GFLOPs for yolo11n at 640×640 (21.7, 68.5, 87.6, 196.0 for s …
    // x): thop's count on the unfused model (convolutions and batch norms, not the attention
    // products), times 2. Here: convolutions, attention products and DFL, times 2, without
    // batch norms (yolo11n: 6.5, as in Ultralytics' fused summary). Equal within 2 %.
    let published = [6.6, 21.7, 68.5, 87.6, 196.0];
    for (scale, want) in SCALES.into_iter().zip(published) {
        let g = gflops(yolo(scale).macs(640, 640).unwrap());
        assert!(
            (g - want).abs() / want < 0.02,
            "yolo11{scale}: {g:.3} GFLOPs"
        );
    }
}

#[test]
fn yolo11_with_a_mnv4_conv_small_075_backbone_builds_and_feeds_its_taps_to_the_neck() {
    let spec = mnv4_small_075();
    let Backbone::Mnv4 { arch } = &spec.backbone else {
        unreachable!()
    };
    let taps: Vec<usize> = [8, 16, 32]
        .iter()
        .map(|&r| {
            arch.feature_taps()
                .into_iter()
                .find(|t| t.reduction == r)
                .unwrap()
                .channels
        })
        .collect();
    assert_eq!(taps, [48, 72, 720]);
    let det = spec.lower().unwrap();
    assert_eq!(det.neck_inputs().unwrap().to_vec(), taps);
    let plans = det.plan(640, 640).unwrap();
    let row = |name: &str| plans.iter().find(|p| p.row.name == name).unwrap();
    assert_eq!(
        row("model.9").row.in_shape,
        [720, 20, 20],
        "SPPF on the stride-32 map"
    );
    let node = |name: &str| det.nodes.iter().find(|n| n.name == name).unwrap();
    assert_eq!(node("model.12").inputs[1], det.taps[1], "P4 skip");
    assert_eq!(node("model.15").inputs[1], det.taps[0], "P3 skip");
    // The backbone is the classifier minus its head: pooling, conv_head, classifier.
    let classifier = plan(arch, 640, 640);
    let body: u64 = classifier[..classifier.len() - 3]
        .iter()
        .map(|l| l.params)
        .sum();
    let backbone: u64 = plans[..det.taps[2] + 1].iter().map(|p| p.row.params).sum();
    assert_eq!(backbone, body);
    assert!(spec.params().unwrap() > 1_000_000);
    assert_eq!(spec.name(), "yolo11n+conv-small-w0.75");
}

#[test]
fn macs_grow_about_four_times_when_the_resolution_doubles() {
    for spec in [yolo(Yolo11Scale::N), mnv4_small_075()] {
        let ratio = spec.macs(1280, 1280).unwrap() as f64 / spec.macs(640, 640).unwrap() as f64;
        // A little over 4: C2PSA's attention is quadratic in the number of positions.
        assert!((4.0..4.2).contains(&ratio), "{}: {ratio:.3}", spec.name());
    }
}

#[test]
fn scales_follow_yolo11_yaml() {
    assert_eq!(Yolo11Scale::N.channels(1024), 256);
    assert_eq!(Yolo11Scale::X.channels(1024), 768);
    assert_eq!(Yolo11Scale::M.repeats(2), 1);
    assert_eq!(Yolo11Scale::L.repeats(2), 2);
    assert!(!Yolo11Scale::S.forces_c3k() && Yolo11Scale::M.forces_c3k());
    assert_eq!("L".parse::<Yolo11Scale>().unwrap(), Yolo11Scale::L);
    let err = "q".parse::<Yolo11Scale>().unwrap_err().to_string();
    assert!(err.contains("n, s, m, l, x"), "{err}");
    assert_eq!(
        Yolo11Scale::from_model_name("YOLO11s").unwrap().unwrap(),
        Yolo11Scale::S
    );
    let err = Yolo11Scale::from_model_name("yolov8n")
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("yolo11n, yolo11s"), "{err}");
    assert!(Yolo11Scale::from_model_name("conv-small").is_none());
}

#[test]
fn bad_detectors_and_resolutions_are_errors() {
    let n = yolo(Yolo11Scale::N);
    for (h, w) in [(0, 640), (100, 640), (640, 650)] {
        let err = n.macs(h, w).unwrap_err().to_string();
        assert!(err.contains("multiples of its stride 32"), "{err}");
    }
    assert!(DetectorSpec::yolo11(Yolo11Scale::N, 0).params().is_err());
    let mut shallow = preset("conv-small", 1.0).unwrap();
    shallow.stages.pop();
    let err = DetectorSpec::mnv4(shallow, Yolo11Scale::N, 80)
        .params()
        .unwrap_err();
    assert!(err.to_string().contains("total stride 32"), "{err}");
}

#[test]
fn detector_specs_round_trip_through_toml() {
    for spec in [yolo(Yolo11Scale::M), mnv4_small_075()] {
        let text = toml::to_string(&spec).unwrap();
        let back: DetectorSpec = toml::from_str(&text).unwrap();
        assert_eq!(back, spec, "{text}");
    }
    assert!(toml::from_str::<DetectorSpec>(
        "scale = \"q\"\nnum_classes = 80\n[backbone]\ntype = \"yolo11\""
    )
    .is_err());
}
