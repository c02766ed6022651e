//! `mnv4-lab inspect`: the per-layer table and totals of an architecture or a detector, from
//! the spec alone.

use crate::cost::{cost, load_profiles, plan, totals, Cost, Layer};
use crate::detect::{gflops, Backbone, DetectorSpec, Yolo11Scale};
use crate::space::Arch;
use anyhow::{ensure, Result};
use clap::Args;
use std::path::{Path, PathBuf};

/// Arguments of `mnv4-lab inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A preset (conv-small, conv-medium, conv-large, hybrid-medium, hybrid-large; aliases small,
    /// medium, large, mobilenetv4_conv_small, …), an arch TOML file, a quoted block string, or
    /// a detector: yolo11n, yolo11s, yolo11m, yolo11l, yolo11x.
    pub model: String,
    /// Detectors only: a MobileNetV4 backbone (preset, arch file or block string, scaled by
    /// --width) in place of YOLO11's own; the neck reads its stride-8, -16 and -32 maps.
    #[arg(long)]
    pub backbone: Option<String>,
    /// Width multiplier (0.25 … 2.0) of the MobileNetV4 model or backbone, rounded per block
    /// like timm's round_channels.
    #[arg(long, default_value_t = 1.0)]
    pub width: f64,
    /// Input resolution: N for N×N, or H,W (default: 224; 640 for detectors).
    #[arg(long, value_parser = parse_res)]
    pub res: Option<(usize, usize)>,
    /// Number of classes (default: the arch's own, 1000 for presets; 80 for detectors).
    #[arg(long, visible_alias = "classes")]
    pub num_classes: Option<usize>,
    /// Input channels (default: the arch's own, 3 for presets).
    #[arg(long)]
    pub in_chans: Option<usize>,
    /// Hardware profiles TOML for the roofline latency (default: the built-in profiles).
    #[arg(long)]
    pub profiles: Option<PathBuf>,
    /// Print one JSON object (params, macs, layers, roofline_ms, …) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Parses `224` or `192,256` into (H, W).
pub fn parse_res(s: &str) -> Result<(usize, usize), String> {
    let parse = |v: &str| -> Result<usize, String> {
        match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("'{v}' is not a positive whole number")),
        }
    };
    match s.split_once(',') {
        Some((h, w)) => Ok((parse(h)?, parse(w)?)),
        None => {
            let n = parse(s)?;
            Ok((n, n))
        }
    }
}

fn fmt_count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Resolves the model arguments shared by `inspect` and `bench`.
pub fn resolve_arch(
    model: &str,
    width: f64,
    in_chans: Option<usize>,
    num_classes: Option<usize>,
) -> Result<Arch> {
    let mut arch = Arch::resolve(model, width)?;
    if let Some(c) = in_chans {
        arch.in_chans = c;
    }
    if let Some(n) = num_classes {
        arch.num_classes = n;
    }
    crate::space::validate(&arch)?;
    Ok(arch)
}

/// Prints the table and totals of the model or detector `args` names.
pub fn run(args: &InspectArgs) -> Result<()> {
    if !Path::new(&args.model).exists() {
        if let Some(scale) = Yolo11Scale::from_model_name(&args.model) {
            return run_detector(args, scale?);
        }
    }
    ensure!(
        args.backbone.is_none(),
        "--backbone applies to detectors (yolo11n … yolo11x), not to '{}'",
        args.model
    );
    let arch = resolve_arch(&args.model, args.width, args.in_chans, args.num_classes)?;
    let (h, w) = args.res.unwrap_or((224, 224));
    let min = arch.total_stride();
    ensure!(
        h >= min && w >= min,
        "resolution {h}×{w} is smaller than the model's total stride {min}"
    );
    let profiles = load_profiles(args.profiles.as_deref())?;
    let layers = plan(&arch, h, w);
    let c = cost(&arch, h, w, &profiles);
    if args.json {
        let about = serde_json::json!({
            "model": arch.name,
            "block_string": arch.to_block_string(),
            "resolution": [h, w],
        });
        return print_json(about, &c, &layers);
    }
    print_rows(&layers);
    println!();
    println!(
        "model       {}",
        arch.name.as_deref().unwrap_or("(unnamed)")
    );
    println!("input       {}×{}×{}", arch.in_chans, h, w);
    println!("params      {}", fmt_count(c.params));
    println!(
        "MACs        {} ({:.1} M)",
        fmt_count(c.macs),
        c.macs as f64 / 1e6
    );
    print_roofline(&c);
    println!("blocks      {}", arch.to_block_string());
    Ok(())
}

/// The detector `args` describe: YOLO11 at `scale`, on its own or a MobileNetV4 backbone.
fn detector_spec(args: &InspectArgs, scale: Yolo11Scale) -> Result<DetectorSpec> {
    ensure!(
        args.in_chans.is_none(),
        "--in-chans is not supported for detectors (they read 3-channel images)"
    );
    let classes = args.num_classes.unwrap_or(80);
    detector_from(scale, args.backbone.as_deref(), args.width, classes)
}

/// YOLO11 at `scale` for `classes` classes, on its own backbone or on the MobileNetV4 `backbone`
/// (preset, arch file or block string) scaled by `width`.
pub fn detector_from(
    scale: Yolo11Scale,
    backbone: Option<&str>,
    width: f64,
    classes: usize,
) -> Result<DetectorSpec> {
    match backbone {
        None => {
            ensure!(
                width == 1.0,
                "--width scales a MobileNetV4 backbone (with --backbone); YOLO11's own backbone \
                 is scaled by the model's letter (yolo11n … yolo11x)"
            );
            Ok(DetectorSpec::yolo11(scale, classes))
        }
        Some(b) => Ok(DetectorSpec::mnv4(Arch::resolve(b, width)?, scale, classes)),
    }
}

fn run_detector(args: &InspectArgs, scale: Yolo11Scale) -> Result<()> {
    let spec = detector_spec(args, scale)?;
    let (h, w) = args.res.unwrap_or((640, 640));
    let det = spec.lower()?;
    let plans = det.plan(h, w)?;
    let neck = det.neck_inputs()?;
    let profiles = load_profiles(args.profiles.as_deref())?;
    let units: Vec<Layer> = plans.iter().flat_map(|p| p.units.iter().cloned()).collect();
    let c = totals(&units, &profiles);
    let rows: Vec<Layer> = plans.into_iter().map(|p| p.row).collect();
    if args.json {
        let about = serde_json::json!({
            "model": spec.name(),
            "spec": spec,
            "resolution": [h, w],
            "gflops": gflops(c.macs),
            "neck_inputs": neck,
        });
        return print_json(about, &c, &rows);
    }
    print_rows(&rows);
    println!();
    let backbone = match &spec.backbone {
        Backbone::Yolo11 => "YOLO11's own".to_string(),
        Backbone::Mnv4 { arch } => arch.name.clone().unwrap_or_else(|| "MobileNetV4".into()),
    };
    let (depth, width, cap) = spec.scale.multipliers();
    println!("model       {}", spec.name());
    println!(
        "backbone    {backbone}: {}, {}, {} channels at strides 8, 16, 32",
        neck[0], neck[1], neck[2]
    );
    println!(
        "scale       {} (depth {depth}, width {width}, max channels {cap})",
        spec.scale
    );
    println!("classes     {}", spec.num_classes);
    println!("input       {}×{h}×{w}", det.in_chans);
    println!("params      {}", fmt_count(c.params));
    println!(
        "MACs        {} ({:.2} G)",
        fmt_count(c.macs),
        c.macs as f64 / 1e9
    );
    println!("GFLOPs      {:.1} (2 × MACs)", gflops(c.macs));
    print_roofline(&c);
    Ok(())
}

/// Prints `about` (an object) with the totals of `c` and the `layers` as one JSON object.
fn print_json(mut about: serde_json::Value, c: &Cost, layers: &[Layer]) -> Result<()> {
    let roofline: serde_json::Map<String, serde_json::Value> = c
        .roofline_ms
        .iter()
        .map(|(n, ms)| (n.clone(), serde_json::json!(ms)))
        .collect();
    if let Some(obj) = about.as_object_mut() {
        obj.insert("params".into(), c.params.into());
        obj.insert("macs".into(), c.macs.into());
        obj.insert("weight_elems".into(), c.weight_elems.into());
        obj.insert("act_elems".into(), c.act_elems.into());
        obj.insert("roofline_ms".into(), roofline.into());
        obj.insert("layers".into(), serde_json::to_value(layers)?);
    }
    println!("{}", serde_json::to_string_pretty(&about)?);
    Ok(())
}

fn print_roofline(c: &Cost) {
    for (name, ms) in &c.roofline_ms {
        println!("roofline    {name:<16} {ms:.3} ms");
    }
}

fn print_rows(layers: &[Layer]) {
    println!(
        "{:<30} {:<22} {:>16} {:>12} {:>14}",
        "layer", "kind", "output (C,H,W)", "params", "MACs"
    );
    for l in layers {
        println!(
            "{:<30} {:<22} {:>16} {:>12} {:>14}",
            l.name,
            l.kind,
            format!("{}×{}×{}", l.out_shape[0], l.out_shape[1], l.out_shape[2]),
            fmt_count(l.params),
            fmt_count(l.macs)
        );
    }
}
