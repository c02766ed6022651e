#!/usr/bin/env python3
"""Distillation study on Fashion-MNIST: four methods x three seeds, then reports/distill_fashion_mnist.md.

    cargo build --release && python3 scripts/distill_study.py

Methods (every other setting from experiments/distill_fashion_mnist.toml, same epochs and seeds):
  no-kd     `mnv4-lab train` with the student recipe (cross-entropy only)
  kd        CE + Hinton KD (T = 4)
  kd+feat   CE + KD + FitNets feature KD at the stride-16 tap (1x1 conv + BN adapter, MSE)
  dkd       CE + Decoupled KD (alpha 1, beta 8, T 4, 1-epoch warm-up)
The teacher (hybrid-medium) is trained once, by the first distill call, on the same data and
split. Runs that already finished (summary.json present) are not rerun. Only the standard library.
"""
import json
import os
import statistics
import subprocess
import sys
import time

EXP = "experiments/distill_fashion_mnist.toml"
BIN = "./target/release/mnv4-lab"
SEEDS = [0, 1, 2]
METHODS = {
    "no-kd": None,
    "kd": [],
    "dkd": ["distill.kd_weight=0", "distill.dkd_weight=1"],
    "kd+feat": ["distill.feature_weight=1"],
}


def run(method, seed, extra_name=""):
    name = f"distill_fm-{method.replace('+', '_')}-s{seed}{extra_name}"
    summary = os.path.join("runs", name, "summary.json")
    if os.path.exists(summary) and not extra_name:
        return name, None
    sets = [f'name="{name}"', f"seed={seed}"]
    if METHODS[method] is None:
        cmd = [BIN, "train", EXP, "--quiet"]
    else:
        cmd = [BIN, "distill", EXP, "--quiet"]
        sets += METHODS[method]
    for s in sets:
        cmd += ["--set", s]
    t0 = time.time()
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)
    return name, time.time() - t0


def load(name):
    with open(os.path.join("runs", name, "summary.json")) as f:
        s = json.load(f)
    d = {}
    p = os.path.join("runs", name, "distill.json")
    if os.path.exists(p):
        with open(p) as f:
            d = json.load(f)
    return s, d


def ms(values):
    if len(values) < 2:
        return f"{100 * values[0]:.2f}"
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def main():
    wall = {}
    for seed in SEEDS:
        for method in METHODS:
            name, secs = run(method, seed)
            if secs is not None:
                wall[name] = secs
    # Cache effect: KD seed 0 once more, now reading the logits its first run cached.
    cached_name, cached_secs = run("kd", 0, extra_name="-cached")
    rows = []
    for method in METHODS:
        vals, tests, walls, cached = [], [], [], 0
        for seed in SEEDS:
            s, d = load(f"distill_fm-{method.replace('+', '_')}-s{seed}")
            vals.append(s["best_val_top1"])
            tests.append(s["test_top1"])
            walls.append(d.get("wall_seconds", s["wall_seconds_this_invocation"]))
            cached += d.get("cached_batches", 0)
        rows.append((method, vals, tests, walls, cached))
    teacher = load("distill_fm-kd-s0")[1]
    first, _ = load("distill_fm-kd-s0")
    first_d = load("distill_fm-kd-s0")[1]
    again_s, again_d = load(cached_name)
    base = statistics.mean(rows[0][2])
    lines = [
        "# Distillation on Fashion-MNIST",
        "",
        "Reproduce: `cargo build --release && python3 scripts/distill_study.py` (settings in",
        "`experiments/distill_fashion_mnist.toml`). Machine: 2 cores, 24 GiB, no GPU; the runs went one",
        "after another, each on both cores, with nothing else on the machine.",
        "",
        f"Teacher: hybrid-medium (9.8 M parameters, 20.3 M MACs at 32×32), trained by mnv4-lab on the same",
        f"8,000-image training subset and split for 8 epochs: **test top-1 {100 * teacher['teacher_test_top1']:.2f}%**.",
        "Student: conv-small at width 0.5 (0.97 M parameters, 1.8 M MACs), 6 epochs, SGD-Nesterov lr 0.05,",
        "batch 64, cosine schedule, the same augmentation, for every method. Seeds 0, 1, 2 (weights, data order,",
        "augmentation); the validation split (5,000 images) is fixed; test = the official 10,000 images.",
        "Selection (best epoch) on validation; test reported once, for that epoch.",
        "",
        "| method | val top-1 (%) | test top-1 (%) | Δ test vs no KD (points) | wall time per run (s) | teacher batches from the cache |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for method, vals, tests, walls, cached in rows:
        delta = 100 * (statistics.mean(tests) - base)
        lines.append(
            f"| {method} | {ms(vals)} | {ms(tests)} | {delta:+.2f} | {statistics.mean(walls):.0f} | "
            + (f"{cached} |" if method != "no-kd" else "– |")
        )
    lines += [
        "",
        "Values are mean ± sample standard deviation over the three seeds. Within a seed the methods run in the",
        "order of the table after no-kd: kd fills the teacher-logit cache and dkd reads it (hence its shorter",
        "wall time); feature KD needs the teacher's intermediate maps and runs the teacher live.",
        "",
        "## Teacher cache",
        "",
        f"KD, seed 0, first run (teacher runs live and fills the cache): {first_d['wall_seconds']:.0f} s,"
        f" of which {first_d['teacher_seconds']:.0f} s in the teacher.",
        f"The same run again, reading the cached logits ({again_d['cached_batches']} batches from the cache):"
        f" {again_d['wall_seconds']:.0f} s — a **{first_d['wall_seconds'] / again_d['wall_seconds']:.2f}×** speed-up."
        f" Its test top-1 ({100 * again_s['test_top1']:.2f}%) "
        + ("equals the first run's, because live teacher logits are rounded to f16 exactly as cached ones are."
           if again_s["test_top1"] == first["test_top1"] else
           f"DIFFERS from the first run's ({100 * first['test_top1']:.2f}%)."),
        "Feature KD needs the teacher's intermediate maps, so it runs the teacher live every batch.",
        "",
    ]
    best = max(rows[1:], key=lambda r: statistics.mean(r[2]))
    verdict = []
    for method, vals, tests, walls, cached in rows[1:]:
        d = 100 * (statistics.mean(tests) - base)
        verdict.append(f"{method} {'helps' if d > 0 else 'does not help'} ({d:+.2f} points on mean test top-1)")
    lines += ["## Verdict", "", "; ".join(verdict) + ".", f"Best: {best[0]}.", ""]
    os.makedirs("reports", exist_ok=True)
    with open("reports/distill_fashion_mnist.md.tmp", "w") as f:
        f.write("\n".join(lines))
    os.replace("reports/distill_fashion_mnist.md.tmp", "reports/distill_fashion_mnist.md")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
