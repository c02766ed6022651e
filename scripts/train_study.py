#!/usr/bin/env python3
"""conv-small from scratch on Fashion-MNIST over several seeds (reports/train_fashion_mnist.md).

    cargo build --release && python3 scripts/train_study.py [--seeds 0 1 2]

Trains `experiments/fashion_mnist_small.toml` once per seed into runs/fm_seed<k>/ (a finished run is
reused, an interrupted one resumes), copies the curves and per-epoch table of the first seed to
reports/train_fashion_mnist/, writes reports/train_fashion_mnist/seeds.csv and prints the table
for the report, with mean ± standard deviation. Standard library only.
"""
import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys

EXP = "experiments/fashion_mnist_small.toml"
OUT = "reports/train_fashion_mnist"


def run_dir(seed):
    return os.path.join("runs", f"fm_seed{seed}", "fashion_mnist_small")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    a = p.parse_args()
    rows = []
    for seed in a.seeds:
        summary = os.path.join(run_dir(seed), "summary.json")
        if not os.path.exists(summary):
            cmd = ["./target/release/mnv4-lab", "train", EXP, "--quiet", "--set", f"seed={seed}",
                   "--set", f'output.dir="runs/fm_seed{seed}"']
            if os.path.exists(os.path.join(run_dir(seed), "checkpoints", "last.json")):
                cmd.append("--resume")
            print("+", " ".join(cmd), file=sys.stderr, flush=True)
            subprocess.run(cmd, check=True)
        with open(summary) as f:
            s = json.load(f)
        with open(os.path.join(run_dir(seed), "metrics.csv")) as f:
            epochs = list(csv.DictReader(f))
        rows.append({
            "seed": seed,
            "test_top1": s["test_top1"],
            "test_top5": s["test_top5"],
            "best_val_top1": s["best_val_top1"],
            "best_epoch": s["best_epoch"],
            "minutes": sum(float(e["seconds"]) for e in epochs) / 60,
            "train_images_per_sec": statistics.median(float(e["images_per_sec"]) for e in epochs),
        })
    os.makedirs(OUT, exist_ok=True)
    first = run_dir(a.seeds[0])
    for name in ["accuracy.png", "accuracy.svg", "loss.png", "loss.svg", "metrics.csv"]:
        shutil.copyfile(os.path.join(first, name), os.path.join(OUT, name))
    with open(os.path.join(OUT, "seeds.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)

    def pct(key):
        v = [100 * r[key] for r in rows]
        sd = statistics.stdev(v) if len(v) > 1 else 0.0
        return f"{statistics.mean(v):.2f} ± {sd:.2f}"

    print("| seed | test top-1 % | test top-5 % | best val top-1 % (epoch) | minutes | train img/s (median epoch) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['seed']} | {100 * r['test_top1']:.2f} | {100 * r['test_top5']:.2f} | "
              f"{100 * r['best_val_top1']:.2f} ({r['best_epoch']}) | {r['minutes']:.1f} | "
              f"{r['train_images_per_sec']:.0f} |")
    print(f"| mean ± sd | {pct('test_top1')} | {pct('test_top5')} | {pct('best_val_top1')} | | |")


if __name__ == "__main__":
    main()
