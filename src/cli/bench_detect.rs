//! `mnv4-lab bench detect`: batch latency of a whole YOLO11 detector (its own or a MobileNetV4
//! backbone, neck and head) in eval mode, optionally with box decoding and NMS.

use super::bench_timing::{idle_and_peak_rss, time_steps};
use super::inspect::{detector_from, parse_res};
use crate::detect::{gflops, DetectNet, Yolo11Scale};
use crate::model::Mode;
use crate::train::detector::evaluate::{predict, PredictConfig};
use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Arguments of `mnv4-lab bench detect`.
#[derive(Debug, Args)]
pub struct BenchDetectArgs {
    /// The detector: yolo11n, yolo11s, yolo11m, yolo11l or yolo11x.
    #[arg(default_value = "yolo11n")]
    pub model: String,
    /// A MobileNetV4 backbone (preset, arch file or block string, scaled by --width) in place of
    /// YOLO11's own.
    #[arg(long)]
    pub backbone: Option<String>,
    /// Width multiplier of the MobileNetV4 backbone.
    #[arg(long, default_value_t = 1.0)]
    pub width: f64,
    /// Input resolution: N or H,W (sides multiples of 32).
    #[arg(long, default_value = "640", value_parser = parse_res)]
    pub res: (usize, usize),
    /// Batch size.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Number of classes.
    #[arg(long, visible_alias = "num-classes", default_value_t = 80)]
    pub classes: usize,
    /// Timed steps (the median step time is reported).
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Untimed warm-up steps.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Worker threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Also decode the boxes and run NMS (score ≥ 0.25, IoU 0.7, 300 per image), as a deployed
    /// detector does.
    #[arg(long)]
    pub postprocess: bool,
    /// Print one JSON object instead of a line.
    #[arg(long)]
    pub json: bool,
}

/// Times the detector `args` describe and prints the result.
pub fn run(args: &BenchDetectArgs) -> Result<()> {
    anyhow::ensure!(
        args.batch > 0 && args.steps > 0,
        "--batch and --steps must be positive"
    );
    super::set_threads(args.threads);
    let (idle, _) = idle_and_peak_rss();
    let scale = Yolo11Scale::from_model_name(&args.model)
        .with_context(|| format!("'{}' is not a detector (yolo11n … yolo11x)", args.model))??;
    let spec = detector_from(scale, args.backbone.as_deref(), args.width, args.classes)?;
    let (h, w) = args.res;
    let net = DetectNet::new(&spec.lower()?, &Device::Cpu, 0)?;
    let mut rng = StdRng::seed_from_u64(0);
    let pixels: Vec<f32> = (0..args.batch * 3 * h * w)
        .map(|_| rng.random_range(0.0f32..1.0))
        .collect();
    let x = Tensor::from_vec(pixels, (args.batch, 3, h, w), &Device::Cpu)?;
    let cfg = PredictConfig {
        conf: 0.25,
        iou: 0.7,
        max_det: 300,
    };
    let times = time_steps(args.warmup, args.steps, || {
        if args.postprocess {
            predict(&net, &x, &cfg)?;
        } else {
            for m in net.forward(&x, Mode::Eval)? {
                m.sum_all()?.to_scalar::<f32>()?;
            }
        }
        Ok(())
    })?;
    let median = times[times.len() / 2];
    let (_, peak) = idle_and_peak_rss();
    let (params, g) = (spec.params()?, gflops(spec.macs(h, w)?));
    let out = serde_json::json!({
        "impl": "mnv4-lab",
        "kind": if args.postprocess { "detect+nms" } else { "detect" },
        "model": spec.name(),
        "res": [h, w],
        "batch": args.batch,
        "classes": args.classes,
        "params": params,
        "gflops": g,
        "steps": args.steps,
        "images_per_sec": args.batch as f64 / median,
        "ms_per_step": median * 1e3,
        "ms_min": times[0] * 1e3,
        "ms_max": times[times.len() - 1] * 1e3,
        "peak_rss_bytes": peak,
        "idle_rss_bytes": idle,
        "threads": rayon::current_num_threads(),
    });
    if args.json {
        println!("{out}");
    } else {
        println!(
            "{} {h}×{w} batch {}{}: {:.2} ms/step (median of {}; min {:.2}, max {:.2}), {params} params, {g:.3} GFLOPs",
            spec.name(),
            args.batch,
            if args.postprocess { " with decoding and NMS" } else { "" },
            median * 1e3,
            args.steps,
            times[0] * 1e3,
            times[times.len() - 1] * 1e3,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchDetectArgs,
    }

    fn args(line: &str) -> BenchDetectArgs {
        Cli::try_parse_from(std::iter::once("bench-detect").chain(line.split_whitespace()))
            .unwrap()
            .args
    }

    #[test]
    fn a_small_mobilenetv4_detector_runs_and_bad_input_is_named() {
        run(&args(
            "yolo11n --backbone conv-small --width 0.25 --res 64 --classes 3 --steps 2 --warmup 0 --postprocess --json",
        ))
        .unwrap();
        let e = run(&args("conv-small --res 64")).unwrap_err().to_string();
        assert!(e.contains("'conv-small' is not a detector"), "{e}");
        let e = run(&args("yolo11n --res 70 --steps 1"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("multiples of 32"), "{e}");
        let e = run(&args("yolo11n --width 0.5")).unwrap_err().to_string();
        assert!(e.contains("--backbone"), "{e}");
    }

    #[test]
    fn step_times_are_counted_and_sorted() {
        let mut n = 0;
        let times = time_steps(2, 5, || {
            n += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!((n, times.len()), (7, 5));
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
    }
}
