#!/usr/bin/env python3
"""Stages in git what a training run needs to be resumed or reused on another checkout.

    python3 scripts/keep_run.py runs/teacher_fashion_mnist runs/teacher_fashion_mnist_erase
    git commit -m "..."

`runs/` is ignored, so a run lives on one machine only. For a run that took hours (the default
teacher), this stages with `git add -f`: the run's config.toml, arch.toml and metrics, the best
and last checkpoint sidecars, the weights both name and the last checkpoint's optimizer state.
Files of the run staged by an earlier call and no longer needed (an older epoch's) are removed
from the index first. On the other checkout, `mnv4-lab train EXP.toml --resume` continues an
unfinished run and a finished one is reused as it is. Standard library only.
"""
import json
import os
import subprocess
import sys

RUN_FILES = ["config.toml", "arch.toml", "metrics.csv", "metrics.parquet", "summary.json"]


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
    runs = sys.argv[1:]
    if not runs:
        sys.exit(__doc__)
    for run in runs:
        files = needed(run)
        subprocess.run(["git", "rm", "-r", "-q", "--cached", "--ignore-unmatch", run], check=True)
        subprocess.run(["git", "add", "-f", *files], check=True)
        size = sum(os.path.getsize(f) for f in files) / 2**20
        print(f"{run}: {len(files)} files, {size:.1f} MiB staged")


if __name__ == "__main__":
    main()
