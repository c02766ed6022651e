#!/usr/bin/env python3
"""The default Fashion-MNIST teacher and its report (reports/teacher_fashion_mnist.md).

    cargo build --release && python3 scripts/teacher_report.py

Trains experiments/teacher_fashion_mnist.toml into runs/teacher_fashion_mnist/ unless a finished
run is there (an interrupted one resumes), copies its learning curves and per-epoch table to
reports/teacher_fashion_mnist/ and writes the report. Standard library only.
"""
import csv
import hashlib
import json
import tomllib
import os
import shutil
import subprocess
import sys

from study_common import cpu_model, publish

EXP = "experiments/teacher_fashion_mnist.toml"
RUN = "runs/teacher_fashion_mnist"
OUT = "reports/teacher_fashion_mnist"
BIN = os.environ.get("MNV4_BIN", "./target/release/mnv4-lab")
# Other recipes tried for this teacher: (run folder, experiment, what differs from the default).
TRIED = [("runs/teacher_fashion_mnist_erase", "experiments/teacher_fashion_mnist_erase.toml",
          "40 epochs instead of 30, random erasing p = 0.5")]
# Mean test top-1 of the released conv-small, 16 epochs, 3 seeds (reports/train_fashion_mnist.md).
CONV_SMALL_16_EPOCHS = 0.9221




def tried_rows():
    rows = []
    for run, exp, what in TRIED:
        path = os.path.join(run, "summary.json")
        if not os.path.exists(path):
            rows.append(f"| {what} | `{exp}` | not run (`mnv4-lab train {exp}`) | |")
            continue
        t = json.load(open(path))
        rows.append(f"| {what} | `{exp}` | {100 * t['best_val_top1']:.2f} ({t['best_epoch']}) |"
                    f" {100 * t['test_top1']:.2f} |")
    return rows


def main():
    summary = os.path.join(RUN, "summary.json")
    if not os.path.exists(summary):
        cmd = [BIN, "train", EXP, "--quiet"]
        if os.path.exists(os.path.join(RUN, "checkpoints", "last.json")):
            cmd.append("--resume")
        print("+", " ".join(cmd), file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True)
    s = json.load(open(summary))
    epochs = list(csv.DictReader(open(os.path.join(RUN, "metrics.csv"))))
    best = json.load(open(os.path.join(RUN, "checkpoints", "best.json")))
    weights = os.path.join(RUN, "checkpoints", best["weights"])
    sha = hashlib.sha256(open(weights, "rb").read()).hexdigest() if os.path.exists(weights) else "?"
    os.makedirs(OUT, exist_ok=True)
    for name in ["accuracy.png", "accuracy.svg", "loss.png", "loss.svg", "metrics.csv"]:
        shutil.copyfile(os.path.join(RUN, name), os.path.join(OUT, name))
    minutes = sum(float(e["seconds"]) for e in epochs) / 60
    arch = subprocess.run([BIN, "inspect", os.path.join(RUN, "arch.toml"), "--res", "32", "--json"],
                          check=True, capture_output=True, text=True).stdout
    a = json.loads(arch)
    cfg = tomllib.load(open(os.path.join(RUN, "config.toml"), "rb"))
    erase = cfg["data"]["augment"].get("erase", 0.0)
    erasing = (f"; random erasing with probability {erase} (a 2–33 % rectangle of random pixels)" if erase else "")
    lines = [
        "# The default Fashion-MNIST teacher",
        "",
        f"Reproduce: `cargo build --release && mnv4-lab train {EXP}` (or `python3 scripts/teacher_report.py`,",
        "which also writes this page). Students name it with",
        f"`distill.teacher_experiment = \"{EXP}\"` and reuse the finished run in `{RUN}/`.",
        "",
        f"**Test top-1 {100 * s['test_top1']:.2f}%** (top-5 {100 * s['test_top5']:.2f}%), at the best validation epoch"
        f" {s['best_epoch']} of {s['epochs']} (validation top-1 {100 * s['best_val_top1']:.2f}%). One seed (0).",
        "",
        (f"The target was 94.0 %: this teacher is {100 * (0.94 - s['test_top1']):.2f} points short of it. It is still"
         " the strongest teacher the lab has trained on Fashion-MNIST"
         f" ({100 * (s['test_top1'] - CONV_SMALL_16_EPOCHS):+.2f} points against the released conv-small's"
         " 16-epoch runs). A longer schedule with random erasing did not do better on validation (table below);"
         " a wider model, an ensemble or more seeds are the next things to try."
         if s["test_top1"] < 0.94 else "It meets the 94.0 % target."),
        "",
        "| | |",
        "|---|---|",
        f"| model | conv-small ×1.0 with its first stride-2 block at stride 1 (`model.drop_downsamples = 1`), so a 32×32"
        f" input ends on a 2×2 map instead of 1×1; dropout 0.2; {a['params']:,} parameters, {a['macs'] / 1e6:.1f} M MACs per image |",
        "| input | the 28×28 images resized (bilinear) to 32×32, one channel; random crop with 2-pixel zero padding,"
        f" horizontal flip{erasing} |",
        "| data | the full training split: 55,000 images, 5,000 held out for validation (split seed 0, which contains every"
        " student experiment's validation split), the official 10,000 test images |",
        f"| recipe | {s['epochs']} epochs, batch 128, SGD Nesterov momentum 0.9, lr 0.1, 1-epoch warm-up then cosine to 0,"
        " weight decay 5e-4 (not on BN, biases), label smoothing 0.1 |",
        "| selection | the best validation epoch, evaluated once on test |",
        f"| machine | 2 cores, 24 GiB, no GPU, {cpu_model()}; {minutes:.0f} minutes of training and validation"
        f" (sum of the epochs' times; other jobs shared the cores part of the time) |",
        f"| weights | `{weights}` (named by `{RUN}/checkpoints/best.json`), SHA-256 `{sha[:16]}…` |",
        "",
        "Why this architecture: the released conv-small reaches 92.2% in 16 epochs at 32×32"
        " (`reports/train_fashion_mnist.md`), where its last stage sees a 1×1 map. Keeping one more"
        " downsampling out gives every later stage four times the positions for 3.2× the MACs.",
        "",
        "Recipes tried (one seed each; the default is the one with the best validation top-1, and each is"
        " tested once, at its best validation epoch):",
        "",
        "| recipe | experiment | best val top-1 % (epoch) | test top-1 % |",
        "|---|---|---:|---:|",
        f"| the default | `{EXP}` | {100 * s['best_val_top1']:.2f} ({s['best_epoch']}) | {100 * s['test_top1']:.2f} |",
        *tried_rows(),
        "",
        "![accuracy](teacher_fashion_mnist/accuracy.png)",
        "![loss](teacher_fashion_mnist/loss.png)",
        "",
        "| epoch | lr | train loss | train top-1 % | val loss | val top-1 % | img/s | s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in epochs:
        lines.append(f"| {e['epoch']} | {float(e['lr']):.4f} | {float(e['train_loss']):.4f} | {100 * float(e['train_top1']):.2f} |"
                     f" {float(e['val_loss']):.4f} | {100 * float(e['val_top1']):.2f} | {float(e['images_per_sec']):.0f} | {float(e['seconds']):.0f} |")
    lines.append("")
    publish("reports/teacher_fashion_mnist.md", lines)


if __name__ == "__main__":
    main()
