#!/usr/bin/env python3
"""NSGA-II against random search on Fashion-MNIST, same budget, same seed, same reference point.

    cargo build --release && python3 scripts/search_study.py

Runs `mnv4-lab search experiments/search_fashion_mnist.toml` once per strategy (reports in
reports/search_fashion_mnist/<strategy>/), then writes reports/search_fashion_mnist/README.md with
the hypervolume of each after the same numbers of evaluations. Standard library only.
"""
import csv
import json
import os
import subprocess
import sys

EXP = "experiments/search_fashion_mnist.toml"
OUT = "reports/search_fashion_mnist"
STRATEGIES = ["nsga2", "random"]


def hv_curve(strategy):
    with open(os.path.join(OUT, strategy, "hypervolume.csv")) as f:
        return [(int(r["trial"]), float(r["hypervolume"])) for r in csv.DictReader(f)]


def main():
    for s in STRATEGIES:
        run_dir = os.path.join("runs", f"search_fm-{s}")
        cmd = ["./target/release/mnv4-lab", "search", EXP, "--quiet",
               "--set", f'name="search_fm-{s}"', "--set", f'search.strategy="{s}"',
               "--set", f'search.report_dir="{OUT}/{s}"']
        if os.path.exists(os.path.join(run_dir, "trials.jsonl")):
            cmd.append("--resume")
        print("+", " ".join(cmd), file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True)
    curves = {s: hv_curve(s) for s in STRATEGIES}
    with open(os.path.join("runs", "search_fm-nsga2", "search.json")) as f:
        state = json.load(f)
    with open(os.path.join("runs", "search_fm-random", "search.json")) as f:
        same_ref = json.load(f)["hv_reference"] == state["hv_reference"]
    cfg = state["experiment"]["search"]
    n = min(len(c) for c in curves.values())
    marks = sorted({i for i in (4, 9, 14, n - 1) if i < n})
    lines = [
        "# Search on Fashion-MNIST: NSGA-II against random search",
        "",
        "Reproduce: `cargo build --release && python3 scripts/search_study.py` (settings in",
        "`experiments/search_fashion_mnist.toml`). Machine: 2 cores, 24 GiB, no GPU.",
        "",
        f"Budget, identical for both: coarse stage {cfg['coarse']['trials']} candidates × {cfg['coarse']['epochs']} epochs "
        f"(widths and depths, every UIB an IB), fine stage {cfg['fine']['trials']} × {cfg['fine']['epochs']} epochs "
        "(start / middle depthwise kernels, expansion, MQA placement) seeded by the coarse front; each candidate "
        "distilled (CE + KD, T = 4) from a conv-small-0.5 teacher on 4,000 training images, ranked on 2,000 "
        "validation images. Seed 0 for both. Objectives: validation top-1 (max) and MACs (min).",
        "",
        f"Hypervolume reference point (1 − top-1, MACs): {state['hv_reference']}, fixed from the space's largest "
        f"corner before the first trial; {'identical in both runs' if same_ref else 'DIFFERENT between runs (do not compare)'}.",
        "",
        "| evaluations | " + " | ".join(f"{s} hypervolume" for s in STRATEGIES) + " |",
        "|---:|" + "---:|" * len(STRATEGIES),
    ]
    for i in marks:
        lines.append(f"| {i + 1} | " + " | ".join(f"{curves[s][i][1]:.6g}" for s in STRATEGIES) + " |")
    final = {s: curves[s][n - 1][1] for s in STRATEGIES}
    winner = max(final, key=final.get)
    lines += [
        "",
        f"After {n} evaluations **{winner}** has the larger hypervolume "
        f"({final[winner]:.6g} against {min(final.values()):.6g}). One seed only: with this budget the difference "
        "is indicative, not a significance result.",
        "",
        "Per-strategy reports (front tables, Pareto and hypervolume plots, all trials):",
        "",
    ] + [f"- [{s}]({s}/README.md): ![{s} Pareto]({s}/pareto.png)" for s in STRATEGIES] + [""]
    with open(os.path.join(OUT, "README.md.tmp"), "w") as f:
        f.write("\n".join(lines))
    os.replace(os.path.join(OUT, "README.md.tmp"), os.path.join(OUT, "README.md"))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
