#!/usr/bin/env python3
"""Search throughput of two builds: candidates per CPU-hour, and the paired time of the trials
both runs trained alike (same architecture hash, same epochs).

    B=target/release/mnv4-lab
    $B train experiments/teacher_quick.toml --quiet
    $B search experiments/quick.toml --quiet --set search.report_dir='"/tmp/quick-b"'
    # the same with the other build (from its own checkout) into /tmp/quick-a, then:
    python3 benches/search_throughput.py /tmp/quick-a /tmp/quick-b --cores 2

Each argument is a search's report folder (its trials.csv: hash, epochs, wall_seconds). Two
runs propose different candidates once their accuracies differ, so the totals are not paired;
the ratio over shared trials is (B's seconds over A's, geometric mean with a 95 % t interval).
Standard library only.
"""
import argparse
import csv
import math
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))
from study_common import T975, cpu_model  # noqa: E402


def trials(report):
    """(hash, epochs) → wall seconds of each trained trial; the run's total seconds and count."""
    path = os.path.join(report, "trials.csv")
    try:
        with open(path) as f:
            rows = [r for r in csv.DictReader(f) if r.get("wall_seconds") not in (None, "", "NaN")]
    except OSError as e:
        sys.exit(f"{path}: {e.strerror}; pass a search's report folder")
    seconds = [float(r["wall_seconds"]) for r in rows]
    by_key = {}
    for r, s in zip(rows, seconds):
        by_key.setdefault((r["hash"], r["epochs"]), s)
    return by_key, sum(seconds), len(rows)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("a", help="report folder of build A")
    p.add_argument("b", help="report folder of build B")
    p.add_argument("--cores", type=int, default=2, help="cores the searches ran on")
    args = p.parse_args()
    runs = {name: trials(path) for name, path in (("A", args.a), ("B", args.b))}
    print(f"| build | trials | minutes of trial work | candidates per CPU-hour ({args.cores} cores) |")
    print("|---|---:|---:|---:|")
    for name, (_, total, n) in runs.items():
        rate = n / (total * args.cores / 3600) if total > 0 else float("nan")
        print(f"| {name} | {n} | {total / 60:.1f} | {rate:.0f} |")
    shared = sorted(set(runs["A"][0]) & set(runs["B"][0]))
    logs = [math.log(runs["B"][0][k] / runs["A"][0][k]) for k in shared]
    if len(logs) < 2:
        print(f"\n{len(logs)} shared trials: too few for an interval")
        return
    m, sd = statistics.mean(logs), statistics.stdev(logs)
    # Beyond the table's 19 degrees of freedom, t at 20 (2.086) errs on the wide side.
    half = T975.get(len(logs) - 1, 2.086) * sd / math.sqrt(len(logs))
    print(f"\nshared trials (same architecture and epochs): {len(logs)}; B/A time "
          f"{math.exp(m):.3f} [95 % CI {math.exp(m - half):.3f}, {math.exp(m + half):.3f}] ({cpu_model()})")


if __name__ == "__main__":
    main()
