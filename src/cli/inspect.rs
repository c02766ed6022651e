//! `mnv4-lab inspect`: the per-layer table and totals of an architecture, from the spec alone.

use crate::cost::{cost, load_profiles, plan};
use crate::space::Arch;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

/// Arguments of `mnv4-lab inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A preset (conv-small, conv-medium, conv-large, hybrid-medium, hybrid-large; aliases small,
    /// medium, large, mobilenetv4_conv_small, …), an arch TOML file, or a quoted block string.
    pub model: String,
    /// Width multiplier (0.25 … 2.0), rounded per block like timm's round_channels.
    #[arg(long, default_value_t = 1.0)]
    pub width: f64,
    /// Input resolution: N for N×N, or H,W.
    #[arg(long, default_value = "224", value_parser = parse_res)]
    pub res: (usize, usize),
    /// Number of classes (default: the arch's own, 1000 for presets).
    #[arg(long)]
    pub num_classes: Option<usize>,
    /// Input channels (default: the arch's own, 3 for presets).
    #[arg(long)]
    pub in_chans: Option<usize>,
    /// Hardware profiles TOML for the roofline latency (default: the built-in profiles).
    #[arg(long)]
    pub profiles: Option<PathBuf>,
    /// Print one JSON object (params, macs, layers, roofline_ms, block_string) instead of a table.
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

pub fn run(args: &InspectArgs) -> Result<()> {
    let arch = resolve_arch(&args.model, args.width, args.in_chans, args.num_classes)?;
    let (h, w) = args.res;
    let min = arch.total_stride();
    anyhow::ensure!(
        h >= min && w >= min,
        "resolution {h}×{w} is smaller than the model's total stride {min}"
    );
    let profiles = load_profiles(args.profiles.as_deref())?;
    let layers = plan(&arch, h, w);
    let c = cost(&arch, h, w, &profiles);
    if args.json {
        let roof: serde_json::Map<String, serde_json::Value> = c
            .roofline_ms
            .iter()
            .map(|(n, ms)| (n.clone(), serde_json::json!(ms)))
            .collect();
        let out = serde_json::json!({
            "model": arch.name,
            "block_string": arch.to_block_string(),
            "resolution": [h, w],
            "params": c.params,
            "macs": c.macs,
            "weight_elems": c.weight_elems,
            "act_elems": c.act_elems,
            "roofline_ms": roof,
            "layers": layers,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{:<30} {:<22} {:>16} {:>12} {:>14}",
        "layer", "kind", "output (C,H,W)", "params", "MACs"
    );
    for l in &layers {
        println!(
            "{:<30} {:<22} {:>16} {:>12} {:>14}",
            l.name,
            l.kind,
            format!("{}×{}×{}", l.out_shape[0], l.out_shape[1], l.out_shape[2]),
            fmt_count(l.params),
            fmt_count(l.macs)
        );
    }
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
    for (name, ms) in &c.roofline_ms {
        println!("roofline    {name:<16} {ms:.3} ms");
    }
    println!("blocks      {}", arch.to_block_string());
    Ok(())
}
