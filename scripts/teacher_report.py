#!/usr/bin/env python3
"""The default Fashion-MNIST teacher and its report (reports/teacher_fashion_mnist.md).

    cargo build --release && python3 scripts/teacher_report.py

The default teacher is the ensemble of two runs of one model (mean logits): it trains each member's
experiment unless a finished run is there (an interrupted one resumes), evaluates each member and
the ensemble with `mnv4-lab eval` on validation and test, copies each member's learning curves and
per-epoch table to reports/teacher_fashion_mnist/<member>/ and writes the report. Standard library
only.
"""
import csv
import hashlib
import json
import math
import os
import re
import shutil

from study_common import cpu_model, publish, sh

# The members, in the order students list them in distill.teacher_experiment:
# (experiment, run folder, recipe in words).
MEMBERS = [
    ("experiments/teacher_fashion_mnist.toml", "runs/teacher_fashion_mnist",
     "30 epochs"),
    ("experiments/teacher_fashion_mnist_erase.toml", "runs/teacher_fashion_mnist_erase",
     "40 epochs, random erasing p = 0.5 (a 2–33 % rectangle of random pixels)"),
]
OUT = "reports/teacher_fashion_mnist"
VAL_IMAGES = 5000
BIN = os.environ.get("MNV4_BIN", "./target/release/mnv4-lab")
# Mean test top-1 of the released conv-small, 16 epochs, 3 seeds (reports/train_fashion_mnist.md).
CONV_SMALL_16_EPOCHS = 0.9221


def train(exp, run):
    if not os.path.exists(os.path.join(run, "summary.json")):
        resume = os.path.exists(os.path.join(run, "checkpoints", "last.json"))
        sh([BIN, "train", exp, "--quiet"] + (["--resume"] if resume else []))


def top1(sidecars, split):
    out = sh([BIN, "eval", *sidecars, "--split", split])
    return float(re.search(r"top-1 ([0-9.]+)%", out).group(1))


def member_section(exp, run, what):
    s = json.load(open(os.path.join(run, "summary.json")))
    best = json.load(open(os.path.join(run, "checkpoints", "best.json")))
    weights = os.path.join(run, "checkpoints", best["weights"])
    sha = hashlib.sha256(open(weights, "rb").read()).hexdigest() if os.path.exists(weights) else "?"
    name = os.path.basename(run)
    dest = os.path.join(OUT, name)
    os.makedirs(dest, exist_ok=True)
    for f in ["accuracy.png", "accuracy.svg", "loss.png", "loss.svg", "metrics.csv"]:
        shutil.copyfile(os.path.join(run, f), os.path.join(dest, f))
    epochs = list(csv.DictReader(open(os.path.join(run, "metrics.csv"))))
    minutes = sum(float(e["seconds"]) for e in epochs) / 60
    lines = [
        f"### `{exp}`: {what}",
        "",
        f"Best validation epoch {s['best_epoch']} of {s['epochs']}; {minutes:.0f} minutes of training and validation"
        f" (sum of the epochs' times). Weights `{weights}`, SHA-256 `{sha[:16]}…`.",
        "",
        f"![accuracy]({os.path.basename(OUT)}/{name}/accuracy.png)",
        f"![loss]({os.path.basename(OUT)}/{name}/loss.png)",
        "",
        "| epoch | lr | train loss | train top-1 % | val loss | val top-1 % | img/s | s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in epochs:
        lines.append(f"| {e['epoch']} | {float(e['lr']):.4f} | {float(e['train_loss']):.4f} | {100 * float(e['train_top1']):.2f} |"
                     f" {float(e['val_loss']):.4f} | {100 * float(e['val_top1']):.2f} | {float(e['images_per_sec']):.0f} | {float(e['seconds']):.0f} |")
    return s, lines + [""]


def main():
    for exp, run, _ in MEMBERS:
        train(exp, run)
    sidecars = [os.path.join(run, "checkpoints", "best.json") for _, run, _ in MEMBERS]
    rows = [(f"`{exp}` alone", [sc]) for (exp, _, _), sc in zip(MEMBERS, sidecars)]
    rows.append(("**the ensemble of both** (the default)", sidecars))
    measured = [(label, top1(sc, "val"), top1(sc, "test")) for label, sc in rows]
    _, val, test = measured[-1]
    best_member = max(measured[:-1], key=lambda r: r[1])
    margin = best_member[1] - val
    # The ensemble is the declared default; a member replaces it only when it is better on
    # validation by more than two (unpaired, so conservative) standard errors of the difference.
    se = lambda p: math.sqrt(p / 100 * (1 - p / 100) / VAL_IMAGES) * 100
    threshold = 2 * math.hypot(se(best_member[1]), se(val))
    assert margin <= threshold, "a member is clearly better on validation: revisit the default"
    if margin > 0:
        rule = (f"the ensemble stays the default: {best_member[0]} is {margin:.2f} points above it on"
                f" validation ({margin / 100 * VAL_IMAGES:.0f} of {VAL_IMAGES:,} images), within two standard errors"
                f" of the difference ({threshold:.2f} points), so the two are not told apart, and the ensemble is the"
                " default the students were designed with")
    else:
        rule = "the ensemble is the default and the best on validation"
    sections, summaries = [], []
    for exp, run, what in MEMBERS:
        s, lines = member_section(exp, run, what)
        summaries.append(s)
        sections += lines
    a = json.loads(sh([BIN, "inspect", os.path.join(MEMBERS[0][1], "arch.toml"), "--res", "32", "--json"]))
    cmds = " && ".join(f"mnv4-lab train {exp}" for exp, _, _ in MEMBERS)
    lines = [
        "# The default Fashion-MNIST teacher",
        "",
        f"**Test top-1 {test:.2f}%** (validation {val:.2f}%): the ensemble of two runs of one model, answering with the"
        f" mean of their logits. One seed (0) per member. The target was 94.0 %: "
        + ("met." if test >= 94.0 else f"{94.0 - test:.2f} points short."),
        "",
        f"Reproduce: `cargo build --release && {cmds}`, then"
        f" `mnv4-lab eval {' '.join(sidecars)} --split test` (or `python3 scripts/teacher_report.py`, which does all of it"
        " and writes this page). Students name the teacher by listing both files:",
        "",
        "```toml",
        "[distill]",
        "teacher_experiment = [",
        *(f'    "{exp}",' for exp, _, _ in MEMBERS),
        "]",
        "```",
        "",
        "They reuse the finished runs; the ensemble's feature map at a tap is the two members' maps side by side.",
        "",
        "Candidates, compared on validation (5,000 images) and each tested once. One seed per candidate, so"
        f" these differences carry no confidence interval and are not claimed as significant; {rule}:",
        "",
        "| teacher | val top-1 % | test top-1 % |",
        "|---|---:|---:|",
        *(f"| {label} | {v:.2f} | {t:.2f} |" for label, v, t in measured),
        "",
        f"Against the released conv-small's 16-epoch runs (mean {100 * CONV_SMALL_16_EPOCHS:.2f}%, `reports/train_fashion_mnist.md`)"
        f" the ensemble is {test - 100 * CONV_SMALL_16_EPOCHS:+.2f} points.",
        "",
        "| | |",
        "|---|---|",
        f"| model (each member) | conv-small ×1.0 with its first stride-2 block at stride 1 (`model.drop_downsamples = 1`), so a"
        f" 32×32 input ends on a 2×2 map instead of 1×1; dropout 0.2; {a['params']:,} parameters, {a['macs'] / 1e6:.1f} M MACs"
        f" per image (the ensemble: {2 * a['params']:,} parameters, {2 * a['macs'] / 1e6:.1f} M MACs) |",
        "| input | the 28×28 images resized (bilinear) to 32×32, one channel; random crop with 2-pixel zero padding,"
        " horizontal flip (the second member also random erasing) |",
        "| data | the full training split: 55,000 images, 5,000 held out for validation (split seed 0, which contains every"
        " student experiment's validation split), the official 10,000 test images |",
        "| recipe | batch 128, SGD Nesterov momentum 0.9, lr 0.1, 1-epoch warm-up then cosine to 0, weight decay 5e-4"
        " (not on BN, biases), label smoothing 0.1; "
        + "; ".join(f"member {i + 1}: {what}" for i, (_, _, what) in enumerate(MEMBERS)) + " |",
        "| selection | each member at its best validation epoch; the ensemble over either member by validation top-1 |",
        f"| machine | 2 cores, 24 GiB, no GPU, {cpu_model()} (other jobs shared the cores part of the time) |",
        "",
        "Why this architecture: the released conv-small reaches 92.2% in 16 epochs at 32×32"
        " (`reports/train_fashion_mnist.md`), where its last stage sees a 1×1 map. Keeping one more"
        " downsampling out gives every later stage four times the positions for 3.2× the MACs. The ensemble doubles"
        " the teacher's cost, which the students pay once: the offline distillation dataset holds its outputs.",
        "",
        "## The members",
        "",
        *sections,
    ]
    publish("reports/teacher_fashion_mnist.md", lines)


if __name__ == "__main__":
    main()
