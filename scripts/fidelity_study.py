#!/usr/bin/env python3
"""Fidelity study: does the search's cheap candidate budget rank architectures as a full budget does?

    cargo build --release && python3 scripts/fidelity_study.py [--seeds 0 1] [--draws 8]

Architectures: `--draws` samples of search_spaces/small.toml as the fine stage proposes them (a
random skeleton with random per-block choices; drawn by `mnv4-lab bench latency-rank`, seed 0)
plus conv-small at widths 0.25, 0.5, 0.75 and 1.0. Each is distilled from the default teacher at
two budgets, with every other setting the same per budget:
  low   experiments/fidelity_low.toml: a search candidate's budget (4,000 images, 2 epochs)
  high  experiments/fidelity_high.toml: the full training split, 10 epochs
for each seed. The report gives Kendall's tau and Spearman's rho between the low-budget ranking
(validation top-1, mean over seeds) and the high-budget one (test top-1, mean over seeds), the same
for #params and MACs as rankers, and the seed-to-seed standard deviation of one architecture at
each budget. Runs go budget by budget, seed by seed; finished runs (summary.json present) are
reused and a partial one resumes, so the study can span several sittings. Run names carry a hash
of the two experiment files. Writes reports/fidelity/README.md. Standard library only.
"""
import argparse
import csv
import hashlib
import json
import math
import os
import statistics
import subprocess
import sys

from study_common import cpu_model, publish

BIN = os.environ.get("MNV4_BIN", "./target/release/mnv4-lab")
BUDGETS = {"low": "experiments/fidelity_low.toml", "high": "experiments/fidelity_high.toml"}
SPACE = "search_spaces/small.toml"
REPORT = "reports/fidelity/README.md"
PRESET_WIDTHS = [0.25, 0.5, 0.75, 1.0]


def sh(cmd):
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def tag():
    h = hashlib.sha256()
    for path in BUDGETS.values():
        h.update(open(path, "rb").read())
    return h.hexdigest()[:8]


def architectures(draws):
    """(label, arch, width): the sampled block strings (cached in runs/) and the presets."""
    cache = os.path.join("runs", f"fidelity-{tag()}-archs-{draws}.json")
    if not os.path.exists(cache):
        out = os.path.join("runs", f"fidelity-{tag()}-draws")
        sh([BIN, "bench", "latency-rank", "--space", SPACE, "--samples", str(draws), "--seed", "0",
            "--in-chans", "1", "--num-classes", "10", "--repeats", "1", "--out", out])
        with open(os.path.join(out, "latency_rank_values.csv")) as f:
            archs = [r["arch"] for r in csv.DictReader(f)]
        json.dump(archs, open(cache, "w"))
    drawn = [(f"draw{i}", a, 1.0) for i, a in enumerate(json.load(open(cache)))]
    return drawn + [(f"conv-small x{w}", "conv-small", w) for w in PRESET_WIDTHS]


def run_name(budget, label, seed):
    slug = "".join(c if c.isalnum() else "_" for c in label)
    return f"fidelity-{tag()}-{budget}-{slug}-s{seed}"


def train(budget, label, arch, width, seed):
    name = run_name(budget, label, seed)
    if os.path.exists(os.path.join("runs", name, "summary.json")):
        return
    cmd = [BIN, "distill", BUDGETS[budget], "--quiet", "--set", f'name="{name}"', "--set", f"seed={seed}",
           "--set", f'model.arch="{arch}"', "--set", f"model.width={width}"]
    sh(cmd + (["--resume"] if os.path.exists(os.path.join("runs", name, "checkpoints", "last.json")) else []))


def result(budget, label, seed):
    s = json.load(open(os.path.join("runs", run_name(budget, label, seed), "summary.json")))
    with open(os.path.join("runs", run_name(budget, label, seed), "metrics.csv")) as f:
        seconds = sum(float(r["seconds"]) for r in csv.DictReader(f))
    return {"val": s["best_val_top1"], "test": s.get("test_top1"), "params": s["params"], "seconds": seconds}


def cost(arch, width):
    d = json.loads(sh([BIN, "inspect", arch, "--width", str(width), "--res", "32", "--in-chans", "1",
                       "--num-classes", "10", "--json"]))
    return d["params"], d["macs"]


def ranks(values):
    """Average ranks (1 = smallest), ties sharing the mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    r = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return r


def pearson(a, b):
    ma, mb = statistics.mean(a), statistics.mean(b)
    num = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    den = math.sqrt(sum((x - ma) ** 2 for x in a) * sum((y - mb) ** 2 for y in b))
    return num / den if den else float("nan")


def spearman(a, b):
    return pearson(ranks(a), ranks(b))


def kendall(a, b):
    """Kendall's tau-b."""
    conc = disc = ties_a = ties_b = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif da * db > 0:
                conc += 1
            else:
                disc += 1
    den = math.sqrt((conc + disc + ties_a) * (conc + disc + ties_b))
    return (conc - disc) / den if den else float("nan")


def report(archs, seeds):
    rows = []
    for label, arch, width in archs:
        low = [result("low", label, s) for s in seeds]
        high = [result("high", label, s) for s in seeds]
        params, macs = cost(arch, width)
        rows.append((label, arch, width, params, macs, low, high))
    truth = [statistics.mean(h["test"] for h in r[6]) for r in rows]
    rankers = {
        "low budget (validation top-1)": [statistics.mean(l["val"] for l in r[5]) for r in rows],
        "high budget, validation top-1": [statistics.mean(h["val"] for h in r[6]) for r in rows],
        "#params": [r[3] for r in rows],
        "MACs": [r[4] for r in rows],
    }
    sd = lambda runs, key: statistics.stdev([x[key] for x in runs]) if len(runs) > 1 else float("nan")
    noise = {b: statistics.mean(sd(r[i], "val") for r in rows) for b, i in (("low", 5), ("high", 6))}
    minutes = {b: sum(x["seconds"] for r in rows for x in r[i]) / 60 for b, i in (("low", 5), ("high", 6))}
    lines = [
        "# Fidelity: does the search's candidate budget rank architectures as a full budget does?",
        "",
        f"Reproduce: `cargo build --release && python3 scripts/fidelity_study.py --seeds {' '.join(map(str, seeds))}"
        f" --draws {len(archs) - len(PRESET_WIDTHS)}`.",
        f"{len(rows)} architectures ({len(archs) - len(PRESET_WIDTHS)} drawn from `{SPACE}` as the fine stage draws"
        " them, and conv-small at widths " + ", ".join(map(str, PRESET_WIDTHS)) + f"), seeds {', '.join(map(str, seeds))},"
        " each distilled from the default teacher at two budgets: low = `experiments/fidelity_low.toml` (a search"
        " candidate's budget: 4,000 images, 2 epochs), high = `experiments/fidelity_high.toml` (55,000 images,"
        " 10 epochs).",
        f"Machine: 2 cores, 24 GiB, no GPU, {cpu_model()}. Epoch time in all: {minutes['low']:.0f} min (low),"
        f" {minutes['high']:.0f} min (high).",
        "",
        "The reference ranking is the high budget's test top-1 (mean over seeds).",
        "",
        "| ranker | Kendall τ | Spearman ρ |",
        "|---|---:|---:|",
    ]
    for name, values in rankers.items():
        lines.append(f"| {name} | {kendall(values, truth):.3f} | {spearman(values, truth):.3f} |")
    lines += [
        "",
        f"Seed-to-seed standard deviation of one architecture's validation top-1, averaged over the architectures:"
        f" **{100 * noise['low']:.2f} points** at the low budget, **{100 * noise['high']:.2f} points** at the high.",
        "",
        "| architecture | params | MACs | low val top-1 (%) | high val top-1 (%) | high test top-1 (%) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    fmt = lambda runs, key: " / ".join(f"{100 * x[key]:.2f}" for x in runs)
    for label, arch, width, params, macs, low, high in rows:
        lines.append(f"| {label} | {params:,} | {macs:,} | {fmt(low, 'val')} | {fmt(high, 'val')} | {fmt(high, 'test')} |")
    lines += ["", "Per seed, separated by /. Block strings of the drawn architectures:", ""]
    lines += [f"- {label}: `{arch}`" for label, arch, _ in archs if arch != "conv-small"]
    lines.append("")
    os.makedirs(os.path.dirname(REPORT), exist_ok=True)
    publish(REPORT, lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--draws", type=int, default=8)
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    archs = architectures(args.draws)
    if not args.report_only:
        for budget in BUDGETS:
            for seed in args.seeds:
                for label, arch, width in archs:
                    train(budget, label, arch, width, seed)
    report(archs, args.seeds)


if __name__ == "__main__":
    main()
