//! `mnv4-lab bench`: images per second of a full training step (forward, loss, backward, SGD
//! update) or of inference, after warm-up, on synthetic data of the requested shape; or how the
//! latency measures rank a search space ([`super::latency_rank`]).

use super::bench_detect::{self, BenchDetectArgs};
use super::bench_timing::{peak_rss_bytes, rss_bytes, time_steps};
use super::inspect::{parse_res, resolve_arch};
use super::latency_rank::{self, LatencyRankArgs};
use crate::export::engine::{Engine as NativeEngine, Profile};
use crate::export::runtime::RuntimeModel;
use crate::model::{Mode, Network};
use crate::space::Arch;
use crate::train::loss::cross_entropy;
use crate::train::optim::{Optimizer, OptimizerConfig};
use anyhow::Result;
use candle_core::{Device, Tensor};
use clap::{Args, Subcommand};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What `mnv4-lab bench` measures.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Forward in train mode, cross-entropy, backward, SGD-momentum update.
    Train(BenchArgs),
    /// Forward in eval mode.
    Infer(BenchArgs),
    /// A whole YOLO11 detector (its own or a MobileNetV4 backbone) in eval mode.
    Detect(BenchDetectArgs),
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
    /// What runs the network: candle (this lab's training and search path), the native
    /// inference engine (folded, channels-last, fused) or the exported ONNX model in the tract
    /// runtime (one thread); the last two time inference only.
    #[arg(long, value_enum, default_value_t = Engine::Candle)]
    pub engine: Engine,
    /// Print one JSON object (images_per_sec, ms_per_step, peak_rss_bytes, idle_rss_bytes, …).
    #[arg(long)]
    pub json: bool,
    /// With `--engine native`: after the timed steps, run as many again with each kernel timed
    /// and print where the time goes, by kind and by kernel in pass order.
    #[arg(long)]
    pub profile: bool,
}

/// What runs the network in `bench`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    /// candle tensors, as training and the search run them.
    Candle,
    /// The native inference engine: batch norm folded, channels-last kernels with fused
    /// epilogues.
    Native,
    /// The model exported to ONNX and run in tract.
    Tract,
}

/// Runs one `bench` sub-command.
pub fn run(cmd: &BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Train(a) => run_steps(BenchKind::Train, a),
        BenchCommand::Infer(a) => run_steps(BenchKind::Infer, a),
        BenchCommand::Detect(a) => bench_detect::run(a),
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
    anyhow::ensure!(
        args.batch > 0 && args.steps > 0,
        "--batch and --steps must be positive"
    );
    anyhow::ensure!(
        kind == BenchKind::Infer || args.engine == Engine::Candle,
        "--engine {:?} times inference only; use `bench infer`",
        args.engine
    );
    super::set_threads(args.threads);
    let idle_rss = rss_bytes();
    let arch = resolve_arch(
        &args.model,
        args.width,
        Some(args.in_chans),
        Some(args.num_classes),
    )?;
    let net = Network::new(&arch, &Device::Cpu, 0)?;
    anyhow::ensure!(
        !args.profile || args.engine == Engine::Native,
        "--profile needs --engine native"
    );
    let times = time_steps(args.warmup, args.steps, step_fn(kind, args, &net)?)?;
    report(kind, args, &arch, &times, idle_rss);
    if args.profile {
        print_profile(&net, args)?;
    }
    Ok(())
}

/// Runs `args.steps` profiled passes of the native engine and prints the time per kernel kind
/// and per kernel in pass order (mean ms per pass).
fn print_profile(net: &Network, args: &BenchArgs) -> Result<()> {
    let engine = NativeEngine::compile(net)?;
    let (x, _) = synthetic_batch(args)?;
    let pixels = x.flatten_all()?.to_vec1::<f32>()?;
    let mut prof = Profile::recording();
    for _ in 0..args.steps {
        engine.run_profiled(&pixels, args.batch, args.res, &mut prof)?;
    }
    let per_pass = |s: f64| s * 1e3 / args.steps as f64;
    let total: f64 = prof.entries.iter().map(|e| e.seconds).sum();
    println!(
        "profile over {} passes: {:.2} ms per pass in kernels",
        args.steps,
        per_pass(total)
    );
    for (kind, seconds, n) in prof.by_kind() {
        let share = 100.0 * seconds / total;
        let count = n / args.steps;
        println!(
            "  {kind:<11} {:>7.3} ms  {share:>5.1} %  ({count} per pass)",
            per_pass(seconds)
        );
    }
    let kernels = prof.entries.len() / args.steps;
    println!("every kernel, in pass order:");
    for (i, e) in prof.entries[..kernels].iter().enumerate() {
        let s: f64 = prof.entries[i..]
            .iter()
            .step_by(kernels)
            .map(|e| e.seconds)
            .sum();
        let share = 100.0 * s / total;
        println!(
            "  {:>7.3} ms {share:>5.1} %  {:<10} {}",
            per_pass(s),
            e.kind,
            e.shape
        );
    }
    Ok(())
}

/// One untimed-setup, timed-call step of `kind` on `net` with synthetic inputs of `args`' shape.
fn step_fn<'a>(
    kind: BenchKind,
    args: &BenchArgs,
    net: &'a Network,
) -> Result<Box<dyn FnMut() -> Result<()> + 'a>> {
    let (x, y) = synthetic_batch(args)?;
    match args.engine {
        Engine::Tract => {
            let mut model = RuntimeModel::new(net, args.batch, args.res)?;
            return Ok(Box::new(move || model.run()));
        }
        Engine::Native => {
            let engine = NativeEngine::compile(net)?;
            let pixels = x.flatten_all()?.to_vec1::<f32>()?;
            let (batch, res) = (args.batch, args.res);
            return Ok(Box::new(move || engine.run(&pixels, batch, res).map(drop)));
        }
        Engine::Candle => {}
    }
    if kind == BenchKind::Infer {
        return Ok(Box::new(move || {
            let logits = net.forward(&x, Mode::Eval)?;
            // Materialize the result so lazy work cannot escape the timer.
            logits.sum_all()?.to_scalar::<f32>()?;
            Ok(())
        }));
    }
    let mut opt = Optimizer::new(
        OptimizerConfig::Sgd {
            momentum: 0.9,
            nesterov: true,
            weight_decay: 5e-5,
        },
        net.params.trainable(),
    );
    Ok(Box::new(move || {
        // As the trainer does: the whole step on the worker pool.
        crate::ops::on_workers(|| -> Result<()> {
            let logits = net.forward(&x, Mode::Train)?;
            let loss = cross_entropy(&logits, &y, 0.1)?;
            let grads = loss.backward()?;
            opt.step(&grads, 1e-3, 1.0)
        })
    }))
}

/// Seeded uniform images in [-1, 1) and random labels of `args`' shape.
fn synthetic_batch(args: &BenchArgs) -> Result<(Tensor, Tensor)> {
    let (h, w) = args.res;
    let mut rng = StdRng::seed_from_u64(0);
    let n = args.batch * args.in_chans * h * w;
    let pixels: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let x = Tensor::from_vec(pixels, (args.batch, args.in_chans, h, w), &Device::Cpu)?;
    let labels: Vec<u32> = (0..args.batch)
        .map(|_| rng.random_range(0..args.num_classes as u32))
        .collect();
    let y = Tensor::from_vec(labels, args.batch, &Device::Cpu)?;
    Ok((x, y))
}

/// Prints the step times (`times` sorted, in seconds) as JSON or as one line.
fn report(kind: BenchKind, args: &BenchArgs, arch: &Arch, times: &[f64], idle_rss: Option<u64>) {
    let (h, w) = args.res;
    let median = times[times.len() / 2];
    let ips = args.batch as f64 / median;
    let kind = match kind {
        BenchKind::Train => "train",
        BenchKind::Infer => "infer",
    };
    let (engine, threads) = match args.engine {
        Engine::Candle => ("mnv4-lab", rayon::current_num_threads()),
        Engine::Native => ("mnv4-lab-native", rayon::current_num_threads()),
        Engine::Tract => ("mnv4-lab-tract", 1),
    };
    let rss = peak_rss_bytes();
    if args.json {
        let out = serde_json::json!({
            "impl": engine,
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
            "idle_rss_bytes": idle_rss,
            "threads": threads,
        });
        println!("{out}");
        return;
    }
    let mib = |b: Option<u64>| {
        b.map(|b| format!("{:.0} MiB", b as f64 / 1048576.0))
            .unwrap_or_else(|| "n/a".into())
    };
    println!(
        "{kind} ({engine}) {} {}×{} batch {}: {:.1} img/s, {:.2} ms/step (median of {}; min {:.2}, max {:.2}), peak RSS {} ({} before the model)",
        arch.name.as_deref().unwrap_or("arch"),
        h,
        w,
        args.batch,
        ips,
        median * 1e3,
        args.steps,
        times[0] * 1e3,
        times[times.len() - 1] * 1e3,
        mib(rss),
        mib(idle_rss),
    );
}
