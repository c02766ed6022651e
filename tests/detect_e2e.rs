//! `mnv4-lab detect train` end to end on a tiny default-style detection set: it trains, writes
//! its metrics, checkpoints and summary, and bad settings are refused with the field named.

mod common;

use std::path::Path;
use std::process::Command;

fn mnv4(args: &[&str]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_mnv4-lab"))
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    (o.status.success(), text)
}

/// `detect train` of experiments/detect_quick.toml shrunk to one epoch of a ×0.25 backbone at
/// 64×64 on the set at `set`, its run under `out`.
fn tiny_train(set: &Path, out: &Path) -> Vec<String> {
    let exp = concat!(env!("CARGO_MANIFEST_DIR"), "/experiments/detect_quick.toml");
    let mut args: Vec<String> = ["detect", "train", exp, "--quiet"].map(String::from).into();
    for s in [
        format!("data.dataset=\"{}\"", set.join("dataset.yaml").display()),
        format!("output.dir=\"{}\"", out.display()),
        "train.epochs=1".into(),
        "train.batch_size=8".into(),
        "data.imgsz=64".into(),
        "model.width=0.25".into(),
    ] {
        args.extend(["--set".into(), s]);
    }
    args
}

#[test]
fn detect_train_runs_end_to_end_on_a_tiny_set() {
    if !common::have_fashion_mnist() {
        return;
    }
    let out = std::env::temp_dir().join(format!("mnv4-detect-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let set = out.join("set");
    let set_s = set.display().to_string();
    let (ok, text) = mnv4(&[
        "data",
        "make-detect",
        "--out",
        &set_s,
        "--train",
        "16",
        "--val",
        "8",
    ]);
    assert!(ok, "{text}");
    let tiny = tiny_train(&set, &out);
    let args: Vec<&str> = tiny.iter().map(String::as_str).collect();
    let (ok, text) = mnv4(&args);
    assert!(ok, "{text}");
    assert!(text.contains("val mAP50-95"), "{text}");
    let run = out.join("detect_quick");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    let map = summary["val_map50_95"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&map), "{summary}");
    assert_eq!(summary["detector"], "yolo11n+conv-small-w0.25");
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 2, "{csv}");
    assert!(Path::new(&run.join("checkpoints/best.json")).exists());
    // The checkpoint evaluates to the mAP the run recorded for its best epoch.
    let best = run.join("checkpoints/best.json").display().to_string();
    let (ok, text) = mnv4(&["detect", "eval", &best]);
    assert!(ok && text.contains(&format!("mAP50-95 {map:.4}")), "{text}");
    // Predictions on an image: a PNG with the boxes, enlarged 3×, and a COCO results file.
    let image = set.join("images/val/000000.png").display().to_string();
    let pred = out.join("pred").display().to_string();
    let (ok, text) = mnv4(&[
        "detect", "predict", &best, &image, "--out", &pred, "--conf", "0.001", "--zoom", "3",
    ]);
    assert!(ok, "{text}");
    let (w, h) = image::image_dimensions(&image).unwrap();
    assert_eq!(
        image::image_dimensions(out.join("pred/000000.png")).unwrap(),
        (3 * w, 3 * h)
    );
    let results: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(out.join("pred/predictions.json")).unwrap())
            .unwrap();
    assert!(results
        .iter()
        .all(|r| r["bbox"].as_array().unwrap().len() == 4));
    // The trained detector as the teacher of a smaller one: the student's table holds both
    // distillation terms, and its checkpoint records the teacher.
    let teacher = format!("distill.teacher=\"{best}\"");
    let mut student = args.clone();
    student.extend([
        "--set",
        "name=\"student\"",
        "--set",
        "model.backbone=\"yolo11\"",
        "--set",
        "model.width=1.0",
        "--set",
        &teacher,
    ]);
    let (ok, text) = mnv4(&student);
    assert!(ok, "{text}");
    let csv = std::fs::read_to_string(out.join("student/metrics.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let row: Vec<f64> = csv
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .map(|v| v.parse().unwrap())
        .collect();
    for term in ["kd_cls_loss", "kd_feature_loss"] {
        let i = header.iter().position(|h| *h == term).unwrap();
        assert!(row[i] > 0.0, "{term} = {}: {csv}", row[i]);
    }
    let sidecar = std::fs::read_to_string(out.join("student/checkpoints/last.json")).unwrap();
    assert!(sidecar.contains("teacher_weights_sha256"), "{sidecar}");
    let mut missing = student.clone();
    missing.extend(["--set", "distill.teacher=\"/nonexistent/best.json\""]);
    let (ok, text) = mnv4(&missing);
    assert!(!ok && text.contains("distill.teacher"), "{text}");
    // A bad value names its field.
    let mut bad = args.clone();
    bad.extend(["--set", "data.imgsz=100"]);
    let (ok, text) = mnv4(&bad);
    assert!(!ok && text.contains("data.imgsz"), "{text}");
    std::fs::remove_dir_all(&out).unwrap();
}

/// A detection study on a tiny set: its teacher experiment is trained first; every candidate is
/// trained as a YOLO11n backbone distilled from it, scored by box mAP and costed as the whole
/// detector, and the report says so; settings that do not fit a detection study are refused by
/// name.
#[test]
fn a_detection_search_ranks_backbones_by_map() {
    if !common::have_fashion_mnist() || !common::have_plot_font() {
        return;
    }
    let out = std::env::temp_dir().join(format!("mnv4-detect-search-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let set = out.join("set").display().to_string();
    let (ok, text) = mnv4(&[
        "data",
        "make-detect",
        "--out",
        &set,
        "--train",
        "16",
        "--val",
        "8",
    ]);
    assert!(ok, "{text}");
    // The teacher: one epoch of a ×0.25 backbone on the same set, with the quick job's recipe.
    let teacher = out.join("teacher.toml");
    let teacher_toml = format!(
        "name = \"teacher\"\n[data]\ndataset = \"{set}/dataset.yaml\"\nimgsz = 64\n[model]\nwidth = 0.25\n[train]\nepochs = 1\nbatch_size = 8\nlr = 0.003\ngrad_clip = 10.0\noptimizer = {{ kind = \"adamw\", weight_decay = 0.0005 }}\n[output]\ndir = \"{}\"\n",
        out.display()
    );
    std::fs::write(&teacher, teacher_toml).unwrap();
    let exp = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/experiments/detect_search.toml"
    );
    let sets = [
        format!("search.detect.data.dataset=\"{set}/dataset.yaml\""),
        format!("search.detect.teacher_experiment=\"{}\"", teacher.display()),
        format!("output.dir=\"{}\"", out.display()),
        format!("search.report_dir=\"{}\"", out.join("report").display()),
        "search.detect.data.imgsz=64".into(),
        "search.coarse={ trials = 2, epochs = 1 }".into(),
        "search.fine={ trials = 1, epochs = 1 }".into(),
        "search.population=2".into(),
        "search.latency_repeats=2".into(),
        "search.repeat_front=0".into(),
        "search.reference=[{ arch = \"conv-small\", width = 0.25 }]".into(),
        "train.batch_size=8".into(),
    ];
    let mut args = vec!["search", exp, "--quiet"];
    for s in &sets {
        args.extend(["--set", s.as_str()]);
    }
    let (ok, text) = mnv4(&args);
    assert!(ok, "{text}");
    assert!(out.join("teacher/summary.json").exists(), "{text}");
    let report = std::fs::read_to_string(out.join("report/README.md")).unwrap();
    assert!(report.contains("| val mAP50-95 |"), "{report}");
    assert!(
        report.contains("backbone of a YOLO11n detector"),
        "{report}"
    );
    assert!(
        report.contains("distillation from the detector"),
        "{report}"
    );
    let csv = std::fs::read_to_string(out.join("report/trials.csv")).unwrap();
    assert!(csv.lines().next().unwrap().contains(",val_map,"), "{csv}");
    // Each trial is a distilled detector, validated by box mAP and costed as a whole.
    let log = std::fs::read_to_string(out.join("detect_search/trials.jsonl")).unwrap();
    let trials: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(trials.len(), 4, "{log}");
    for t in &trials {
        let arch = mnv4_lab::space::Arch::from_block_string(t["arch"].as_str().unwrap()).unwrap();
        let spec = mnv4_lab::detect::DetectorSpec::mnv4(arch, mnv4_lab::detect::Yolo11Scale::N, 10);
        assert_eq!(t["params"].as_u64(), Some(spec.params().unwrap()), "{t}");
        let map = t["val_top1"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&map), "{t}");
        let dir = out.join(format!(
            "detect_search/trials/t{:04}",
            t["index"].as_u64().unwrap()
        ));
        let metrics = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
        let header: Vec<&str> = metrics.lines().next().unwrap().split(',').collect();
        let row: Vec<&str> = metrics.lines().nth(1).unwrap().split(',').collect();
        assert!(header.contains(&"val_map50_95"), "{metrics}");
        for term in ["kd_cls_loss", "kd_feature_loss"] {
            let i = header.iter().position(|h| *h == term).expect(term);
            assert!(row[i].parse::<f64>().unwrap() > 0.0, "{term}: {metrics}");
        }
    }
    // Settings a detection study cannot use are refused, naming them.
    let refused = [
        (
            "search.objectives=[\"val_top1\", \"latency_ms\"]",
            "val_map",
        ),
        (
            "search.objectives=[\"val_map\", \"runtime_latency_ms\"]",
            "runtime_latency_ms",
        ),
        ("distill.kd_weight=0.5", "[distill]"),
        ("search.detect.data.imgsz=100", "search.detect.data.imgsz"),
        (
            "search.detect.teacher=\"/nonexistent/best.json\"",
            "not both",
        ),
        (
            "search.detect.teacher_experiment=\"/nonexistent.toml\"",
            "search.detect.teacher_experiment",
        ),
    ];
    for (set, named) in refused {
        let mut bad = args.clone();
        bad.extend(["--set", set]);
        let (ok, text) = mnv4(&bad);
        assert!(!ok && text.contains(named), "{set}: {text}");
    }
    std::fs::remove_dir_all(&out).unwrap();
}
