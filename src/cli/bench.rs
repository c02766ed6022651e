//! `mnv4-lab bench`: images per second of a full training step (forward, loss, backward, SGD
//! update) or of inference, after warm-up, on synthetic data of the requested shape; or how the
//! latency measures rank a search space ([`super::latency_rank`]).

use super::inspect::{parse_res, resolve_arch};
use super::latency_rank::{self, LatencyRankArgs};
use crate::model::{Mode, Network};
use crate::train::loss::cross_entropy;
use crate::train::optim::{Optimizer, OptimizerConfig};
use anyhow::Result;
use candle_core::{Device, Tensor};
use clap::{Args, Subcommand};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Instant;

/// What `mnv4-lab bench` measures.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Forward in train mode, cross-entropy, backward, SGD-momentum update.
    Train(BenchArgs),
    /// Forward in eval mode.
    Infer(BenchArgs),
    /// Spearman's ρ between candle latency, ONNX runtime latency, MACs and every roofline
    /// profile over architectures sampled from a search space.
    LatencyRank(LatencyRankArgs),
}

/// What a step times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BenchKind {
    /// Forward in train mode, cross-entropy, backward, SGD-momentum update.
    Train,
    /// Forward in eval mode.
    Infer,
}

/// Arguments of `mnv4-lab bench train|infer`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Preset, arch file or block string.
    #[arg(long, default_value = "conv-small")]
    pub model: String,
    /// Width multiplier.
    #[arg(long, default_value_t = 1.0)]
    pub width: f64,
    /// Input resolution: N or H,W.
    #[arg(long, default_value = "224", value_parser = parse_res)]
    pub res: (usize, usize),
    /// Batch size.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Input channels.
    #[arg(long, default_value_t = 3)]
    pub in_chans: usize,
    /// Number of classes.
    #[arg(long, default_value_t = 1000)]
    pub num_classes: usize,
    /// Timed steps (the median step time is reported).
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Untimed warm-up steps.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Worker threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Print one JSON object (images_per_sec, ms_per_step, peak_rss_bytes, …).
    #[arg(long)]
    pub json: bool,
}

/// Peak resident set size of this process (Linux `VmHWM`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Runs one `bench` sub-command.
pub fn run(cmd: &BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Train(a) => run_steps(BenchKind::Train, a),
        BenchCommand::Infer(a) => run_steps(BenchKind::Infer, a),
        BenchCommand::LatencyRank(a) => latency_rank::run(a),
    }
}

/// Times `kind` steps as `args` asks and prints the result.
fn run_steps(kind: BenchKind, args: &BenchArgs) -> Result<()> {
    anyhow::ensure!(
        args.threads <= crate::train::recipe::MAX_THREADS,
        "--threads {} is more than {} (0 = all cores)",
        args.threads,
        crate::train::recipe::MAX_THREADS
    );
    super::set_threads(args.threads);
    anyhow::ensure!(
        args.batch > 0 && args.steps > 0,
        "--batch and --steps must be positive"
    );
    let arch = resolve_arch(
        &args.model,
        args.width,
        Some(args.in_chans),
        Some(args.num_classes),
    )?;
    let (h, w) = args.res;
    let dev = Device::Cpu;
    let net = Network::new(&arch, &dev, 0)?;
    let mut rng = StdRng::seed_from_u64(0);
    let n = args.batch * args.in_chans * h * w;
    let x = Tensor::from_vec(
        (0..n)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect::<Vec<_>>(),
        (args.batch, args.in_chans, h, w),
        &dev,
    )?;
    let y = Tensor::from_vec(
        (0..args.batch)
            .map(|_| rng.random_range(0..args.num_classes as u32))
            .collect::<Vec<_>>(),
        args.batch,
        &dev,
    )?;
    let mut opt = Optimizer::new(
        OptimizerConfig::Sgd {
            momentum: 0.9,
            nesterov: true,
            weight_decay: 5e-5,
        },
        net.params.trainable(),
    );
    let mut step = |timed: bool| -> Result<f64> {
        let t0 = Instant::now();
        match kind {
            BenchKind::Train => crate::ops::on_workers(|| -> Result<()> {
                // As the trainer does: the whole step on the worker pool.
                let logits = net.forward(&x, Mode::Train)?;
                let loss = cross_entropy(&logits, &y, 0.1)?;
                let grads = loss.backward()?;
                opt.step(&grads, 1e-3, 1.0)
            })?,
            BenchKind::Infer => {
                let logits = net.forward(&x, Mode::Eval)?;
                // Materialize the result so lazy work cannot escape the timer.
                logits.sum_all()?.to_scalar::<f32>()?;
            }
        }
        let s = t0.elapsed().as_secs_f64();
        if timed {
            tracing::debug!("step {:.2} ms", s * 1e3);
        }
        Ok(s)
    };
    for _ in 0..args.warmup {
        step(false)?;
    }
    let mut times: Vec<f64> = (0..args.steps).map(|_| step(true)).collect::<Result<_>>()?;
    times.sort_by(|a, b| a.total_cmp(b));
    let median = times[times.len() / 2];
    let ips = args.batch as f64 / median;
    let kind = match kind {
        BenchKind::Train => "train",
        BenchKind::Infer => "infer",
    };
    let rss = peak_rss_bytes();
    if args.json {
        let out = serde_json::json!({
            "impl": "mnv4-lab",
            "kind": kind,
            "model": arch.name,
            "width": args.width,
            "res": [h, w],
            "batch": args.batch,
            "in_chans": args.in_chans,
            "num_classes": args.num_classes,
            "steps": args.steps,
            "images_per_sec": ips,
            "ms_per_step": median * 1e3,
            "ms_min": times[0] * 1e3,
            "ms_max": times[times.len() - 1] * 1e3,
            "peak_rss_bytes": rss,
            "threads": rayon::current_num_threads(),
        });
        println!("{out}");
    } else {
        println!(
            "{kind} {} {}×{} batch {}: {:.1} img/s, {:.2} ms/step (median of {}; min {:.2}, max {:.2}), peak RSS {}",
            arch.name.as_deref().unwrap_or("arch"),
            h,
            w,
            args.batch,
            ips,
            median * 1e3,
            args.steps,
            times[0] * 1e3,
            times[times.len() - 1] * 1e3,
            rss.map(|b| format!("{:.0} MiB", b as f64 / 1048576.0)).unwrap_or_else(|| "n/a".into())
        );
    }
    Ok(())
}
