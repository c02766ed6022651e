#!/usr/bin/env python3
"""Stages in git what a training run needs to be resumed or reused on another checkout.

    python3 scripts/keep_run.py runs/teacher_fashion_mnist runs/teacher_fashion_mnist_erase
    python3 scripts/keep_run.py --results runs/fidelity-*-high-conv_small_*
    git commit -m "..."

`runs/` is ignored, so a run lives on one machine only. For a run that took hours (the default
teacher), this stages with `git add -f`: the run's config.toml, arch.toml and metrics, the best
and last checkpoint sidecars, the weights both name and the last checkpoint's optimizer state.
Files of the run staged by an earlier call and no longer needed (an older epoch's) are removed
from the index first. On the other checkout, `mnv4-lab train EXP.toml --resume` continues an
unfinished run and a finished one is reused as it is. With --results, only a finished run's
result is staged (config.toml, arch.toml, summary.json, distill.json, metrics): enough for
`mnv4-lab retrain --reuse runs` to take it as its own, a few KiB per run. Standard library only.
"""
import json
import os
import subprocess
import sys

RUN_FILES = ["config.toml", "arch.toml", "metrics.csv", "metrics.parquet", "summary.json"]
RESULT_FILES = RUN_FILES + ["distill.json"]


def result_files(run):
    """The paths under a finished `run` that say what it trained and what it scored."""
    if not os.path.exists(os.path.join(run, "summary.json")):
        sys.exit(f"{run}: no summary.json; --results keeps finished runs only")
    return [os.path.join(run, f) for f in RESULT_FILES if os.path.exists(os.path.join(run, f))]


def needed(run):
    """The paths under `run` that resuming or reusing it reads."""
    ckpt = os.path.join(run, "checkpoints")
    files = [os.path.join(run, f) for f in RUN_FILES if os.path.exists(os.path.join(run, f))]
    for sidecar, with_state in (("best.json", False), ("last.json", True)):
        path = os.path.join(ckpt, sidecar)
        if not os.path.exists(path):
            sys.exit(f"{path}: no such sidecar; is {run} a training run with a finished epoch?")
        s = json.load(open(path))
        files += [path, os.path.join(ckpt, s["weights"])]
        if with_state:
            files.append(os.path.join(ckpt, s["state"]))
    missing = [f for f in files if not os.path.exists(f)]
    if missing:
        sys.exit(f"{run}: the sidecars name files that are missing: {', '.join(missing)}")
    return sorted(set(files))


def main():
    results = "--results" in sys.argv[1:]
    runs = [a for a in sys.argv[1:] if a != "--results"]
    if not runs:
        sys.exit(__doc__)
    for run in runs:
        files = result_files(run) if results else needed(run)
        subprocess.run(["git", "rm", "-r", "-q", "--cached", "--ignore-unmatch", run], check=True)
        subprocess.run(["git", "add", "-f", *files], check=True)
        size = sum(os.path.getsize(f) for f in files) / 2**20
        print(f"{run}: {len(files)} files, {size:.1f} MiB staged")


if __name__ == "__main__":
    main()
