#!/usr/bin/env python3
"""YOLO11n against YOLO11n on MobileNetV4 conv-small backbones, on the default detection set.

    cargo build --release && python3 scripts/detect_study.py [--seeds 0 1 2] [--jobs 2]

Every detector trains with the recipe of experiments/detect_quick.toml (only `[model]` and the
seed change): YOLO11n with its own backbone, and YOLO11n's neck and head on conv-small at widths
0.5, 0.75 and 1.0. The epoch is selected on validation mAP50-95; the report gives that
checkpoint's test mAP (`mnv4-lab detect eval --split test`), mean ± std over the seeds, and every
MobileNetV4 detector against YOLO11n as a paired difference over seeds with a 95 % t interval.
Parameters and GFLOPs come from `mnv4-lab inspect`; latency from `mnv4-lab bench detect` (batch 1,
96×96, 2 threads, forward only and with decoding + NMS), measured after training with nothing else
running, the detectors interleaved. Example predictions of each seed-0 detector on the first test
images go to reports/detect/examples/.

Runs go seed by seed; finished runs (summary.json present) are reused and a partial run resumes,
so the study can span several sittings. Run names carry a hash of the experiment file, so other
settings start fresh runs. Writes reports/detect/README.md. Standard library only.
"""
import argparse
import csv
import functools
import hashlib
import json
import os
import re
import shutil
import statistics

from study_common import cpu_model, paired, publish, run_parallel, sh, study_binary, thread_env, verdict

EXP = "experiments/detect_quick.toml"
BIN = study_binary()
REPORT = "reports/detect/README.md"
EXAMPLES = "reports/detect/examples"
TEST_IMAGES = "data/fashion-mnist-det/images/test"
# (label, backbone, width); the baseline first.
DETECTORS = [
    ("yolo11n", "yolo11", 1.0),
    ("yolo11n + conv-small x0.5", "conv-small", 0.5),
    ("yolo11n + conv-small x0.75", "conv-small", 0.75),
    ("yolo11n + conv-small x1.0", "conv-small", 1.0),
]


def settings_tag():
    return hashlib.sha256(open(EXP, "rb").read()).hexdigest()[:8]


def run_name(backbone, width, seed):
    return f"detect_cmp-{settings_tag()}-{backbone}-w{width}-s{seed}"


def train(backbone, width, seed, threads):
    """Trains one detector with `threads` math threads (0 = all cores), resuming a partial run."""
    name = run_name(backbone, width, seed)
    if os.path.exists(os.path.join("runs", name, "summary.json")):
        return
    cmd = [BIN, "detect", "train", EXP, "--quiet", "--set", f'name="{name}"', "--set", f"seed={seed}",
           "--set", f'model.backbone="{backbone}"', "--set", f"model.width={width}"]
    resume = ["--resume"] if os.path.exists(os.path.join("runs", name, "checkpoints", "last.json")) else []
    sh(cmd + resume, thread_env(threads))


def test_map(backbone, width, seed):
    """(mAP50-95, mAP50) of the run's best checkpoint on the test split, cached in the run folder."""
    run = os.path.join("runs", run_name(backbone, width, seed))
    cache = os.path.join(run, "test_map.json")
    if not os.path.exists(cache):
        out = sh([BIN, "detect", "eval", os.path.join(run, "checkpoints", "best.json"), "--split", "test"])
        m = re.search(r"mAP50-95 ([0-9.]+), mAP50 ([0-9.]+)", out)
        json.dump({"map": float(m.group(1)), "map50": float(m.group(2))}, open(cache, "w"))
    return json.load(open(cache))


def epoch_seconds(backbone, width, seed):
    """Seconds of the run's epochs, summed from metrics.csv (a resumed run counts each epoch once)."""
    with open(os.path.join("runs", run_name(backbone, width, seed), "metrics.csv")) as f:
        return sum(float(r["seconds"]) for r in csv.DictReader(f))


def cost(backbone, width):
    args = ["inspect", "yolo11n", "--res", "96", "--classes", "10", "--json"]
    if backbone != "yolo11":
        args += ["--backbone", backbone, "--width", str(width)]
    d = json.loads(sh([BIN] + args))
    return d["params"], d["gflops"]


def latencies(repeats=5):
    """Batch-1 ms per detector, forward only and with decoding + NMS: each run's median step,
    for `repeats` interleaved runs."""
    runs = {}
    for _ in range(repeats):
        for label, backbone, width in DETECTORS:
            for post in (False, True):
                args = [BIN, "bench", "detect", "yolo11n", "--res", "96", "--classes", "10", "--steps", "200",
                        "--warmup", "5", "--threads", "2", "--json"]
                if backbone != "yolo11":
                    args += ["--backbone", backbone, "--width", str(width)]
                ms = json.loads(sh(args + (["--postprocess"] if post else [])).strip().splitlines()[-1])["ms_per_step"]
                runs.setdefault((label, post), []).append(ms)
    return runs


def spread(values):
    """'median [min–max]' of a cell's runs."""
    return f"{statistics.median(values):.2f} [{min(values):.2f}–{max(values):.2f}]"


def examples(backbone, width, seed, label, count=6):
    images = sorted(os.listdir(TEST_IMAGES))[:count]
    out = os.path.join(EXAMPLES, re.sub(r"\W+", "_", label).strip("_"))
    shutil.rmtree(out, ignore_errors=True)
    sh([BIN, "detect", "predict", os.path.join("runs", run_name(backbone, width, seed), "checkpoints", "best.json"),
        *[os.path.join(TEST_IMAGES, i) for i in images], "--out", out, "--zoom", "4"])
    return out


def mean_sd(values, scale=1.0):
    if len(values) < 2:
        return f"{scale * values[0]:.3f}"
    return f"{scale * statistics.mean(values):.3f} ± {scale * statistics.stdev(values):.3f}"


def report(seeds, lat):
    rows = []
    for label, backbone, width in DETECTORS:
        maps = [test_map(backbone, width, s) for s in seeds]
        params, g = cost(backbone, width)
        secs = [epoch_seconds(backbone, width, s) for s in seeds]
        rows.append((label, [m["map"] for m in maps], [m["map50"] for m in maps], params, g, secs))
    base = rows[0]
    lines = [
        "# Detection: YOLO11n against YOLO11n on MobileNetV4 backbones",
        "",
        f"Reproduce: `cargo build --release && python3 scripts/detect_study.py --seeds {' '.join(map(str, seeds))}`.",
        f"Recipe: `{EXP}` for every detector (only `[model]` and the seed change), trained from scratch on the default"
        " detection set (Fashion-MNIST items on 96×96 canvases, 10 classes; 4,000 training, 1,000 validation and"
        " 1,000 test images, validation and test items from disjoint halves of Fashion-MNIST's test split).",
        f"Seeds {', '.join(map(str, seeds))}. The epoch is selected on validation mAP50-95; the table gives that"
        " checkpoint's **test** COCO box mAP (`mnv4-lab detect eval --split test`), mean ± sample std over seeds.",
        f"Machine: 2 cores, 24 GiB, no GPU, {cpu_model()}. Latency: `mnv4-lab bench detect` at batch 1, 96×96,"
        " 2 threads, each run's median of 200 steps, 5 interleaved runs given as median [min–max] over the runs,"
        " measured after training with nothing else of ours running (the host's other tenants are outside our"
        " control: the ranges show what they cost). Training time: the run's epochs (training and validation) summed from its metrics.csv; an upper"
        " bound, as runs may have trained several at a time (`--jobs`, the cores split between them) or shared the"
        " machine with other jobs (the quick job's own timing, on an idle machine, is in [quick.md](quick.md)).",
        "",
        "| detector | params | GFLOPs at 96² | latency ms (forward / + decoding and NMS) | test mAP50-95 | test mAP50 |"
        " Δ mAP50-95 vs yolo11n [95 % CI] | verdict | training min/run |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for label, m, m50, params, g, secs in rows:
        if label == base[0]:
            delta, v = "–", "baseline"
        else:
            d, ci = paired(m, base[1])
            delta = f"{d:+.3f}" + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "")
            v = verdict(ci)
        lines.append(f"| {label} | {params:,} | {g:.3f} | {spread(lat[(label, False)])} / {spread(lat[(label, True)])} |"
                     f" {mean_sd(m)} | {mean_sd(m50)} | {delta} | {v} | {statistics.mean(secs) / 60:.1f} |")
    lines += [
        "",
        "\"No significant difference\" where the interval holds 0. Example predictions (seed 0, score ≥ 0.25, first"
        " test images, drawn 4× enlarged, one box colour per class) are in [examples/](examples/):",
        "",
    ]
    for label, backbone, width in DETECTORS:
        out = examples(backbone, width, seeds[0], label)
        first = sorted(f for f in os.listdir(out) if f.endswith(".png"))[:3]
        rel = os.path.relpath(out, "reports/detect")
        lines.append(f"- {label}: " + " ".join(f"![{label}]({rel}/{f})" for f in first))
    lines.append("")
    publish(REPORT, lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--jobs", type=int, default=1,
                    help="detectors trained at once, the cores split between them (training times grow)")
    args = ap.parse_args()
    if not args.report_only:
        run_parallel([functools.partial(train, b, w, s) for s in args.seeds for _, b, w in DETECTORS], args.jobs)
    report(args.seeds, latencies())


if __name__ == "__main__":
    main()
