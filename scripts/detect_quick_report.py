#!/usr/bin/env python3
"""The quick detection job and its report (reports/detect/quick.md).

    cargo build --release && python3 scripts/detect_quick_report.py

Runs `mnv4-lab detect train experiments/detect_quick.toml` under `/usr/bin/time -v` unless
runs/detect_quick/ holds a finished run, then writes the per-epoch table with the wall time and
peak memory of the run that produced it, and the best checkpoint's mAP on the test split
(`mnv4-lab detect eval --split test`): the epoch is selected on validation, the figure reported on
test. Standard library only.
"""
import csv
import json
import os
import re
import subprocess
import sys

from study_common import cpu_model, publish

EXP = "experiments/detect_quick.toml"
RUN = "runs/detect_quick"
BIN = os.environ.get("MNV4_BIN", "./target/release/mnv4-lab")
TIMING = os.path.join(RUN, "time.txt")


def main():
    if not os.path.exists(os.path.join(RUN, "summary.json")):
        cmd = ["/usr/bin/time", "-v", BIN, "detect", "train", EXP, "--quiet"]
        print("+", " ".join(cmd), file=sys.stderr, flush=True)
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        os.makedirs(RUN, exist_ok=True)
        open(TIMING, "w").write(done.stderr)
    s = json.load(open(os.path.join(RUN, "summary.json")))
    evaluated = subprocess.run([BIN, "detect", "eval", os.path.join(RUN, "checkpoints", "best.json"), "--split", "test"],
                               check=True, capture_output=True, text=True).stdout
    test = re.search(r"mAP50-95 ([0-9.]+), mAP50 ([0-9.]+)", evaluated)
    rows = list(csv.DictReader(open(os.path.join(RUN, "metrics.csv"))))
    timing = open(TIMING).read() if os.path.exists(TIMING) else ""
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", timing)
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", timing)
    lines = [
        "# The quick detection job",
        "",
        f"Reproduce: `cargo build --release && python3 scripts/detect_quick_report.py` (it runs"
        f" `mnv4-lab detect train {EXP}`).",
        "",
        f"**Test mAP50-95 {float(test.group(1)):.4f}, mAP50 {float(test.group(2)):.4f}** for the checkpoint of epoch"
        f" {s['best_epoch']} of {len(rows)}, selected on validation (mAP50-95 {s['val_map50_95']:.4f}, mAP50"
        f" {s['val_map50']:.4f}): {s['detector']} ({s['params']:,} parameters), trained from scratch on the default"
        " detection set (Fashion-MNIST items on 96×96 canvases, 10 classes: 4,000 training images from"
        " Fashion-MNIST's training items, 1,000 validation and 1,000 test images from the two halves of its test"
        " items). COCO box mAP (`mnv4-lab detect map` equals pycocotools, `reports/detect/coco_check.md`). One"
        " seed (0), so no interval.",
        "",
        f"Machine: {s['machine']}."
        + (f" Wall time {wall.group(1)} for the whole command, peak memory {int(peak.group(1)) / 1e6:.1f} GB"
           " (`/usr/bin/time -v`)." if wall and peak else
           f" {s['wall_seconds_this_invocation']:.0f} s of training and validation."),
        "",
        "| epoch | lr | box loss | cls loss | dfl loss | val mAP50-95 | val mAP50 | s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['epoch']} | {float(r['lr']):.5f} | {float(r['box_loss']):.4f} | {float(r['cls_loss']):.4f} |"
                     f" {float(r['dfl_loss']):.4f} | {float(r['val_map50_95']):.4f} | {float(r['val_map50']):.4f} |"
                     f" {float(r['seconds']):.0f} |")
    lines.append("")
    os.makedirs("reports/detect", exist_ok=True)
    publish("reports/detect/quick.md", lines)


if __name__ == "__main__":
    main()
