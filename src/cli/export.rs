//! `mnv4-lab export`: any architecture or checkpoint as an ONNX file.

use super::eval::open_checkpoint;
use super::inspect::{parse_res, resolve_arch};
use crate::export::{export_onnx, ExportOptions, INPUT, OUTPUT};
use crate::model::{Mode, Network};
use anyhow::{bail, ensure, Context, Result};
use candle_core::{Device, Tensor};
use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};

/// Arguments of `mnv4-lab export`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  mnv4-lab export conv-small --width 0.5 -o small050.onnx
  mnv4-lab export reports/quick/pareto/t0008.toml --res 32 -o t0008.onnx
  mnv4-lab export runs/my-run/checkpoints/best.json -o model.onnx
  mnv4-lab export timm.safetensors --model hybrid-medium -o hybrid.onnx --keep-bn

Without a checkpoint the weights are the seeded random initialization (--seed).")]
pub struct ExportArgs {
    /// What to export: a preset (conv-small, conv-medium, conv-large, hybrid-medium,
    /// hybrid-large, …), an arch TOML file (e.g. a search's reports/<name>/pareto/*.toml), a
    /// quoted block string, a checkpoint sidecar (runs/<name>/checkpoints/best.json), or a bare
    /// .safetensors file together with --model.
    #[arg(value_name = "MODEL_OR_CHECKPOINT")]
    pub source: String,
    /// The ONNX file to write (replaced atomically).
    #[arg(short, long, value_name = "FILE.onnx")]
    pub output: PathBuf,
    /// For a bare .safetensors: its architecture (preset, arch file or block string); input
    /// channels and classes are read from the file's tensors.
    #[arg(long)]
    pub model: Option<String>,
    /// Width multiplier (0.25 … 2.0) for a preset, arch or --model.
    #[arg(long)]
    pub width: Option<f64>,
    /// Fixed input resolution: N for N×N, or H,W (default: a checkpoint's training input size,
    /// else 224). The batch axis stays dynamic.
    #[arg(long, value_parser = parse_res)]
    pub res: Option<(usize, usize)>,
    /// Number of classes of a preset, arch or block string (default: its own).
    #[arg(long)]
    pub num_classes: Option<usize>,
    /// Input channels of a preset, arch or block string (default: its own).
    #[arg(long)]
    pub in_chans: Option<usize>,
    /// Seed of the random initial weights, when no checkpoint is given.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Keep BatchNormalization nodes and layer-scale Muls (default: folded into the
    /// convolution before each).
    #[arg(long)]
    pub keep_bn: bool,
    /// Also output the feature maps (feature0, feature1, …: the stem, every stage that ends
    /// before a downsampling, and the final features conv) after output0.
    #[arg(long)]
    pub features_out: bool,
    /// Also write a JSON file with a seeded random batch of two inputs and the logits mnv4-lab
    /// computes for it, for checking the file in another runtime (benches/onnx_check.py).
    #[arg(long, value_name = "FILE.json")]
    pub save_reference: Option<PathBuf>,
}

/// What is exported: the network, its default resolution and where its weights came from.
struct Source {
    net: Network,
    res: Option<(usize, usize)>,
    weights: String,
}

fn is_checkpoint(source: &str) -> bool {
    let p = Path::new(source);
    p.extension()
        .is_some_and(|e| e == "json" || e == "safetensors")
}

/// Builds the network the arguments name, with a checkpoint's weights when given.
fn open_source(args: &ExportArgs) -> Result<Source> {
    if is_checkpoint(&args.source) {
        ensure!(
            args.num_classes.is_none() && args.in_chans.is_none(),
            "{}: a checkpoint fixes its classes and input channels; --num-classes and --in-chans apply to presets, arch files and block strings",
            args.source
        );
        let path = Path::new(&args.source);
        let (arch, weights, data) = open_checkpoint(path, args.model.as_deref(), args.width)?;
        let net = Network::new(&arch, &Device::Cpu, 0)?;
        net.params.load_safetensors(&weights, &[])?;
        let sidecar = path.extension().is_some_and(|e| e == "json");
        let side = sidecar.then_some(data.augment.input_size);
        return Ok(Source {
            net,
            res: side.map(|s| (s, s)),
            weights: format!("weights from {}", weights.display()),
        });
    }
    if args.model.is_some() {
        bail!(
            "--model names the architecture of a bare .safetensors file; '{}' is not one",
            args.source
        );
    }
    let width = args.width.unwrap_or(1.0);
    let arch = resolve_arch(&args.source, width, args.in_chans, args.num_classes)?;
    Ok(Source {
        net: Network::new(&arch, &Device::Cpu, args.seed)?,
        res: None,
        weights: format!("random initial weights (seed {})", args.seed),
    })
}

/// Writes `{shape, input, logits}` for a seeded batch of two images at `res`.
fn save_reference(net: &Network, res: (usize, usize), seed: u64, path: &Path) -> Result<()> {
    let shape = [2, net.arch.in_chans, res.0, res.1];
    let mut rng = StdRng::seed_from_u64(seed);
    let input: Vec<f32> = (0..shape.iter().product())
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let x = Tensor::from_vec(input.clone(), &shape, &Device::Cpu)?;
    let logits = net
        .forward(&x, Mode::Eval)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let json = serde_json::json!({
        "input_name": INPUT, "output_name": OUTPUT, "shape": shape,
        "input": input, "logits": logits,
    });
    crate::fsutil::atomic_write(path, serde_json::to_string(&json)?.as_bytes())
        .with_context(|| format!("--save-reference {}", path.display()))
}

pub fn run(args: &ExportArgs) -> Result<()> {
    let src = open_source(args)?;
    let res = args.res.or(src.res).unwrap_or((224, 224));
    if !is_checkpoint(&args.source) {
        tracing::warn!(
            "no checkpoint given: exporting {} (pass runs/<name>/checkpoints/best.json for trained ones)",
            src.weights
        );
    }
    let opts = ExportOptions {
        keep_bn: args.keep_bn,
        feature_outputs: args.features_out,
        doc: src.weights.clone(),
    };
    let bytes = export_onnx(&src.net, res, &opts)?;
    crate::fsutil::atomic_write(&args.output, &bytes)
        .with_context(|| format!("writing -o {}", args.output.display()))?;
    let arch = &src.net.arch;
    println!(
        "wrote {} ({:.1} MB): {} [batch, {}, {}, {}] → {} [batch, {}]{}; {}",
        args.output.display(),
        bytes.len() as f64 / 1e6,
        INPUT,
        arch.in_chans,
        res.0,
        res.1,
        OUTPUT,
        arch.num_classes,
        if args.features_out {
            " + feature maps"
        } else {
            ""
        },
        src.weights
    );
    if let Some(path) = &args.save_reference {
        save_reference(&src.net, res, args.seed, path)?;
        println!("wrote {} (input and logits for checking)", path.display());
    }
    Ok(())
}
