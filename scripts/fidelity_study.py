#!/usr/bin/env python3
"""Fidelity study: does the search's cheap candidate budget rank architectures as a full budget does?

    cargo build --release && python3 scripts/fidelity_study.py [--seeds 0 1] [--draws 8] [--jobs 2]

Architectures: `--draws` samples of search_spaces/small.toml as the fine stage proposes them (a
random skeleton with random per-block choices; drawn by `mnv4-lab bench latency-rank`, seed 0)
plus conv-small at widths 0.25, 0.5, 0.75 and 1.0. Each is distilled from the default teacher at
three budgets, with every other setting the same per budget:
  low   experiments/fidelity_low.toml: a search candidate's budget (4,000 images, 2 epochs)
  mid   experiments/fidelity_mid.toml: the same recipe on 16,000 images for 4 epochs
  high  experiments/fidelity_high.toml: the full training split, 10 epochs
for each seed. The reference ranking is the high budget's test top-1 (mean over seeds). The report
gives Kendall's tau and Spearman's rho of every ranker against it (the low and mid budgets'
validation top-1, the high budget's own validation top-1, #params, MACs), each candidate budget's
rho minus the best cost ranker's with a 95 % bootstrap interval over architectures, the
seed-to-seed standard deviation of one architecture at each budget, and the candidate budget it
chooses by a stated rule. Runs go budget by budget; the first run of each (budget, seed) fills the
teacher cache before the others start (`--jobs` at a time). A finished run's summary and per-epoch
times are kept in reports/fidelity/runs/<run>.json, which is committed: a kept run is not trained
again, even on a fresh checkout, and a partial one (in runs/) resumes, so the study can span
several sittings and machines. Run names carry a hash of their budget's experiment file. Writes
reports/fidelity/README.md. Standard library only.
"""
import argparse
import collections
import csv
import functools
import hashlib
import json
import math
import os
import random
import statistics

from study_common import cpu_model, publish, run_parallel, sh, study_binary, thread_env

BIN = study_binary()
BUDGETS = {
    "low": "experiments/fidelity_low.toml",
    "mid": "experiments/fidelity_mid.toml",
    "high": "experiments/fidelity_high.toml",
}
# The budgets a search candidate could be given; "high" is the reference.
CANDIDATE_BUDGETS = ["low", "mid"]
BOOTSTRAP = 2000
SPACE = "search_spaces/small.toml"
REPORT = "reports/fidelity/README.md"
# Finished runs' results, committed with the report (one JSON file per run).
KEPT = "reports/fidelity/runs"
PRESET_WIDTHS = [0.25, 0.5, 0.75, 1.0]


def tag(budget="low"):
    """A hash of the budget's experiment file (the low budget's names the drawn architectures)."""
    return hashlib.sha256(open(BUDGETS[budget], "rb").read()).hexdigest()[:8]


def architectures(draws):
    """(label, arch, width): the sampled block strings (cached in runs/) and the presets."""
    cache = os.path.join(KEPT, f"archs-{tag()}-{draws}.json")
    if not os.path.exists(cache):
        out = os.path.join("runs", f"fidelity-{tag()}-draws")
        sh([BIN, "bench", "latency-rank", "--space", SPACE, "--samples", str(draws), "--seed", "0",
            "--in-chans", "1", "--num-classes", "10", "--repeats", "1", "--out", out])
        with open(os.path.join(out, "latency_rank_values.csv")) as f:
            archs = [r["arch"] for r in csv.DictReader(f)]
        keep_json(cache, archs)
    drawn = [(f"draw{i}", a, 1.0) for i, a in enumerate(json.load(open(cache)))]
    return drawn + [(f"conv-small x{w}", "conv-small", w) for w in PRESET_WIDTHS]


def run_name(budget, label, seed):
    slug = "".join(c if c.isalnum() else "_" for c in label)
    return f"fidelity-{tag(budget)}-{budget}-{slug}-s{seed}"


def train(budget, label, arch, width, seed, threads):
    """Distills one architecture at one budget with `threads` math threads, resuming a partial run."""
    name = run_name(budget, label, seed)
    if os.path.exists(kept(name)):
        return
    if os.path.exists(os.path.join("runs", name, "summary.json")):
        return keep_run(name)
    cmd = [BIN, "distill", BUDGETS[budget], "--quiet", "--set", f'name="{name}"', "--set", f"seed={seed}",
           "--set", f'model.arch="{arch}"', "--set", f"model.width={width}"]
    resume = ["--resume"] if os.path.exists(os.path.join("runs", name, "checkpoints", "last.json")) else []
    sh(cmd + resume, thread_env(threads))
    keep_run(name)


def kept(name):
    return os.path.join(KEPT, name + ".json")


def keep_json(path, value):
    """Writes `value` as JSON to `path` atomically."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(value, f, indent=1)
    os.replace(path + ".tmp", path)


def keep_run(name):
    """Keeps a finished run's summary, its epochs' seconds (from metrics.csv) and the CPU it ran on
    (results repeat bit for bit on one CPU model and thread count, not across models)."""
    s = json.load(open(os.path.join("runs", name, "summary.json")))
    with open(os.path.join("runs", name, "metrics.csv")) as f:
        seconds = [float(r["seconds"]) for r in csv.DictReader(f)]
    keep_json(kept(name), {"summary": s, "epoch_seconds": seconds, "cpu": cpu_model()})


def train_all(archs, seeds, jobs):
    """Every budget in turn: first one unfinished run per seed (each fills its teacher cache), then
    the rest."""
    for budget in BUDGETS:
        left = lambda s: [a for a in archs if not os.path.exists(kept(run_name(budget, a[0], s)))]
        runs = [[functools.partial(train, budget, *a, s) for a in left(s)] for s in seeds]
        runs = [r for r in runs if r]
        run_parallel([r[0] for r in runs], jobs)
        run_parallel([t for r in runs for t in r[1:]], jobs)


def result(budget, label, seed):
    k = json.load(open(kept(run_name(budget, label, seed))))
    s = k["summary"]
    return {"val": s["best_val_top1"], "test": s.get("test_top1"), "params": s["params"],
            "seconds": sum(k["epoch_seconds"]), "cpu": k.get("cpu", "CPU not recorded")}


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


def bootstrap_delta(ranker, baseline, truth, seed=0):
    """95 % percentile bootstrap interval of spearman(ranker) − spearman(baseline) against `truth`,
    resampling architectures (resamples with a constant column are skipped)."""
    rng = random.Random(seed)
    n, deltas = len(truth), []
    while len(deltas) < BOOTSTRAP:
        idx = [rng.randrange(n) for _ in range(n)]
        pick = lambda v: [v[i] for i in idx]
        if min(len(set(pick(v))) for v in (ranker, baseline, truth)) < 2:
            continue
        deltas.append(spearman(pick(ranker), pick(truth)) - spearman(pick(baseline), pick(truth)))
    deltas.sort()
    return deltas[int(0.025 * BOOTSTRAP)], deltas[int(0.975 * BOOTSTRAP) - 1]


def choose(rankers, truth, baseline, minutes):
    """The rule: the cheapest candidate budget whose rho beats the best cost ranker's with a
    bootstrap interval above 0; when none does, the one with the highest rho, said to be unproven.
    Returns the table rows, the chosen budget and why."""
    rows, clear = [], []
    for b in CANDIDATE_BUDGETS:
        ranker = rankers[f"{b} budget (validation top-1)"]
        d = spearman(ranker, truth) - spearman(rankers[baseline], truth)
        lo, hi = bootstrap_delta(ranker, rankers[baseline], truth)
        rows.append(f"| {b} | {minutes[b]:.1f} | {d:+.3f} [{lo:+.3f}, {hi:+.3f}] |")
        if lo > 0:
            clear.append(b)
    if clear:
        pick = min(clear, key=lambda b: minutes[b])
        why = f"the cheapest budget that ranks better than {baseline}, with a 95 % interval above 0"
    else:
        pick = max(CANDIDATE_BUDGETS, key=lambda b: spearman(rankers[f"{b} budget (validation top-1)"], truth))
        why = (f"no budget ranks better than {baseline} with an interval above 0 (no significant difference);"
               " this one has the highest ρ")
    return rows, pick, why


def report(archs, seeds):
    rows = []
    for label, arch, width in archs:
        runs = {b: [result(b, label, s) for s in seeds] for b in BUDGETS}
        params, macs = cost(arch, width)
        rows.append((label, params, macs, runs))
    mean = lambda runs, key: statistics.mean(x[key] for x in runs)
    truth = [mean(r[3]["high"], "test") for r in rows]
    rankers = {f"{b} budget (validation top-1)": [mean(r[3][b], "val") for r in rows] for b in BUDGETS}
    rankers["#params"] = [r[1] for r in rows]
    rankers["MACs"] = [r[2] for r in rows]
    baseline = max(["#params", "MACs"], key=lambda k: spearman(rankers[k], truth))
    sd = lambda runs, key: statistics.stdev([x[key] for x in runs]) if len(runs) > 1 else float("nan")
    noise = {b: statistics.mean(sd(r[3][b], "val") for r in rows) for b in BUDGETS}
    minutes = {b: statistics.mean(x["seconds"] for r in rows for x in r[3][b]) / 60 for b in BUDGETS}
    choice_rows, pick, why = choose(rankers, truth, baseline, minutes)
    cpus = collections.Counter(x["cpu"] for r in rows for b in BUDGETS for x in r[3][b])
    drawn = len(archs) - len(PRESET_WIDTHS)
    lines = [
        "# Fidelity: does the search's candidate budget rank architectures as a full budget does?",
        "",
        f"Reproduce: `cargo build --release && python3 scripts/fidelity_study.py --seeds {' '.join(map(str, seeds))}"
        f" --draws {drawn}`.",
        f"{len(rows)} architectures ({drawn} drawn from `{SPACE}` as the fine stage draws them, and conv-small at"
        " widths " + ", ".join(map(str, PRESET_WIDTHS)) + f"), seeds {', '.join(map(str, seeds))}, each distilled"
        " from the default teacher at three budgets: low = `experiments/fidelity_low.toml` (a search candidate's"
        " budget: 4,000 images, 2 epochs, 2,000 validation images), mid = `experiments/fidelity_mid.toml` (16,000"
        " images, 4 epochs, 5,000 validation images), high = `experiments/fidelity_high.toml` (55,000 images,"
        " 10 epochs).",
        "Machines: 2 cores, 24 GiB, no GPU; runs per CPU model: " + ", ".join(f"{c} {n}" for c, n in cpus.most_common())
        + ". A run repeats bit for bit on one CPU model with one thread count, not across models (the matrix"
        " products block their sums by the cache sizes), so the seed-to-seed spread below also holds the"
        " difference between machines."
        " Mean minutes per run (training and validation epochs,"
        " from metrics.csv; an upper bound, as runs may have trained two at a time or beside other jobs): "
        + ", ".join(f"{b} {m:.1f}" for b, m in minutes.items()) + ".",
        "",
        "The reference ranking is the high budget's test top-1 (mean over seeds). The last two columns rank"
        f" only the {drawn} drawn architectures, which is what a search ranks: the presets differ from every"
        " drawn one in their stem, which alone can order the two groups.",
        "",
        f"| ranker | Kendall τ | Spearman ρ | τ, {drawn} drawn | ρ, {drawn} drawn |",
        "|---|---:|---:|---:|---:|",
    ]
    own = [i for i, (_, arch, _) in enumerate(archs) if arch != "conv-small"]
    sub = lambda v: [v[i] for i in own]
    for name, values in rankers.items():
        lines.append(f"| {name} | {kendall(values, truth):.3f} | {spearman(values, truth):.3f}"
                     f" | {kendall(sub(values), sub(truth)):.3f} | {spearman(sub(values), sub(truth)):.3f} |")
    lines += [
        "",
        f"Each candidate budget's ρ minus {baseline}'s (the better cost ranker), with a 95 % percentile bootstrap"
        f" interval ({BOOTSTRAP} resamples of the architectures):",
        "",
        "| budget | minutes per run | Δρ vs " + baseline + " [95 % CI] |",
        "|---|---:|---:|",
        *choice_rows,
        "",
        f"**Chosen candidate budget: {pick}** ({why}).",
        "",
        "Seed-to-seed standard deviation of one architecture's validation top-1, averaged over the architectures: "
        + ", ".join(f"**{100 * noise[b]:.2f} points** ({b})" for b in BUDGETS) + ".",
        "",
        "| architecture | params | MACs | "
        + " | ".join(f"{b} val top-1 (%)" for b in BUDGETS) + " | high test top-1 (%) |",
        "|---|---:|---:|" + "---:|" * (len(BUDGETS) + 1),
    ]
    fmt = lambda runs, key: " / ".join(f"{100 * x[key]:.2f}" for x in runs)
    for label, params, macs, runs in rows:
        cells = " | ".join(fmt(runs[b], "val") for b in BUDGETS)
        lines.append(f"| {label} | {params:,} | {macs:,} | {cells} | {fmt(runs['high'], 'test')} |")
    lines += ["", "Per seed, separated by /. Block strings of the drawn architectures:", ""]
    lines += [f"- {label}: `{arch}`" for label, arch, _ in archs if arch != "conv-small"]
    lines.append("")
    os.makedirs(os.path.dirname(REPORT), exist_ok=True)
    publish(REPORT, lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--draws", type=int, default=8)
    ap.add_argument("--jobs", type=int, default=1,
                    help="runs trained at once, the cores split between them (run times grow)")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    archs = architectures(args.draws)
    if not args.report_only:
        train_all(archs, args.seeds, args.jobs)
    report(archs, args.seeds)


if __name__ == "__main__":
    main()
