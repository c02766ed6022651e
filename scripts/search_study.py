#!/usr/bin/env python3
"""NSGA-II against random search on Fashion-MNIST: same budget, same reference point, several seeds.

    cargo build --release && python3 scripts/search_study.py [--seeds 0 1 2] [--retrain]

Runs `mnv4-lab search experiments/search_fashion_mnist.toml` once per strategy and seed, with
`--workers` local worker processes (reports in reports/search_fashion_mnist/<strategy>/seed<k>/,
each with a copy of its run's search.json and the experiment file's hash, so a finished run is
not searched again on any checkout while the experiment is unchanged), then writes reports/search_fashion_mnist/README.md
with the hypervolume of each strategy after the same numbers of evaluations, as mean ± standard
deviation over the seeds, NSGA-II minus random search paired over seeds with a 95 % t interval,
and how many trials were each strategy's own (each stage's first population is drawn from a
stream both share). With --retrain, the first seed's front of the strategy with the larger mean
final hypervolume is retrained next to the conv-small curve at the fidelity study's reference
budget (`mnv4-lab retrain --recipe experiments/fidelity_high.toml`, `--retrain-seeds` seeds,
distilled and not, `--jobs` shards at a time) and the report quotes its verdicts against the
curve. An interrupted study resumes where it stopped. Standard library only.
"""
import argparse
import csv
import glob
import hashlib
import json
import os

import statistics
import subprocess
import sys
import tomllib

from study_common import (cpu_model, paired, publish, run_parallel, sh, study_binary, thread_env,
                          verdict)

BIN = study_binary()
EXP = "experiments/search_fashion_mnist.toml"
OUT = "reports/search_fashion_mnist"
STRATEGIES = ["nsga2", "random"]
# The retraining budget: the fidelity study's reference (high) budget, so the ranking the search
# relied on was measured against exactly the budget its front is retrained at.
RECIPE = "experiments/fidelity_high.toml"


def experiment_tag():
    """A hash of the experiment file: a run or report of another version of it is not this one's."""
    with open(EXP, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:8]


def run_name(strategy, seed):
    """The run of one strategy and seed, named after the experiment's `name` and its hash."""
    with open(EXP, "rb") as f:
        prefix = tomllib.load(f)["name"]
    return f"{prefix}-{experiment_tag()}-{strategy}-seed{seed}"


def report_dir(strategy, seed):
    return os.path.join(OUT, strategy, f"seed{seed}")


def hv_curve(strategy, seed):
    with open(os.path.join(report_dir(strategy, seed), "hypervolume.csv")) as f:
        return [float(r["hypervolume"]) for r in csv.DictReader(f)]


def search_state(strategy, seed):
    """The run's recorded state (study, teacher, reference point), kept with its report."""
    with open(os.path.join(report_dir(strategy, seed), "search.json")) as f:
        return json.load(f)


def keep_state(strategy, seed):
    """Copies a finished run's search.json next to its report, which is committed."""
    src = os.path.join("runs", run_name(strategy, seed), "search.json")
    dst = os.path.join(report_dir(strategy, seed), "search.json")
    with open(src) as f:
        text = f.read()
    with open(dst + ".tmp", "w") as f:
        f.write(text)
    os.replace(dst + ".tmp", dst)
    with open(os.path.join(report_dir(strategy, seed), "experiment.sha256"), "w") as f:
        f.write(experiment_tag() + "\n")


def finished(strategy, seed):
    """Whether the run's report and kept state are there, from this version of the experiment
    (then it is not run again)."""
    d = report_dir(strategy, seed)
    if not all(os.path.exists(os.path.join(d, f))
               for f in ("search.json", "hypervolume.csv", "trials.csv", "experiment.sha256")):
        return False
    with open(os.path.join(d, "experiment.sha256")) as f:
        return f.read().strip() == experiment_tag()


def trial_minutes(strategy, seed):
    with open(os.path.join(report_dir(strategy, seed), "trials.csv")) as f:
        return sum(float(r["wall_seconds"]) for r in csv.DictReader(f)) / 60


def retrain_hours(strategy, seed):
    """(runs, hours): the runs the retraining of one front trained itself and the sum of their
    epoch times (reused runs live elsewhere and are not counted)."""
    paths = glob.glob(os.path.join("runs", f"{run_name(strategy, seed)}-retrain-*", "*", "metrics.csv"))
    seconds = 0.0
    for path in paths:
        with open(path) as f:
            seconds += sum(float(r["seconds"]) for r in csv.DictReader(f))
    return len(paths), seconds / 3600


def mean_std(values):
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4g} ± {sd:.2g}"


def distill_text(state):
    """The loss weights a study's candidates were distilled with, as the search report prints them."""
    d = (state.get("study") or state["experiment"])["distill"]
    return (f"{d['ce_weight']} · CE + {d['kd_weight']} · KD at T = {d['temperature']} + "
            f"{d.get('feature_weight', 0)} · feature MSE at taps {d.get('feature_taps')}")


def data_text(state):
    """The candidates' training and validation images, as the study's [data] gives them."""
    d = (state.get("study") or state["experiment"])["data"]
    train = f"{d['train_limit']:,} training images" if d["train_limit"] else "the whole training split"
    val = min(d["val_size"], d["eval_limit"]) if d.get("eval_limit") else d["val_size"]
    return f"{train}, ranked on {val:,} validation images"


def test_text(state):
    """The test images a study's teacher was scored on (the [data] evaluation limit applies)."""
    limit = (state.get("study") or state["experiment"])["data"].get("eval_limit")
    return f"the first {limit:,} test images" if limit else "the test split"


def own_trials(cfg):
    """Trials per run proposed from the strategy's own stream: all but each stage's first population."""
    return sum(max(0, cfg[stage]["trials"] - cfg["population"]) for stage in ("coarse", "fine"))


def retrain(strategy, seed, seeds, jobs):
    """Retrains one run's front next to the preset curve at the fidelity study's reference budget,
    `jobs` shards at a time; returns its README's verdict lines."""
    report = report_dir(strategy, seed)
    # --reuse: the fidelity study's reference-budget runs of the presets are the same runs.
    cmd = [BIN, "retrain", report, "--quiet", "--seeds", str(seeds), "--recipe", RECIPE,
           "--reuse", "runs"]

    def shard(k):
        def task(threads):
            sh(cmd + ["--shard", f"{k}/{jobs}"], env=thread_env(threads))
        return task

    run_parallel([shard(k) for k in range(jobs)], jobs)
    sh(cmd)  # every run is present now: measures latency on a quiet machine, writes the tables
    with open(os.path.join(report, "retrain", "README.md")) as f:
        return [line.strip() for line in f if line.startswith("Arm `") and "searched models" in line]


def main():
    global EXP, OUT, RECIPE
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--retrain", action="store_true", help="retrain the best strategy's first front")
    p.add_argument("--retrain-seeds", type=int, default=3)
    p.add_argument("--jobs", type=int, default=2, help="retraining processes at a time (shards)")
    p.add_argument("--workers", type=int, default=2,
                   help="local worker processes per search (candidates trained at a time)")
    p.add_argument("--experiment", default=EXP, help="the search experiment (a smaller one to try the study)")
    p.add_argument("--out", default=OUT, help="where the reports go")
    p.add_argument("--recipe", default=RECIPE, help="the retraining recipe")
    a = p.parse_args()
    EXP, OUT, RECIPE = a.experiment, a.out, a.recipe
    for seed in a.seeds:
        for s in STRATEGIES:
            if finished(s, seed):
                continue
            name = run_name(s, seed)
            cmd = [BIN, "search", EXP, "--quiet", "--workers", str(a.workers),
                   "--set", f'name="{name}"', "--set", f"seed={seed}",
                   "--set", f'search.strategy="{s}"',
                   "--set", f'search.report_dir="{report_dir(s, seed)}"']
            if os.path.exists(os.path.join("runs", name, "search.json")):
                cmd.append("--resume")
            print("+", " ".join(cmd), file=sys.stderr, flush=True)
            subprocess.run(cmd, check=True)
            keep_state(s, seed)
    curves = {(s, k): hv_curve(s, k) for s in STRATEGIES for k in a.seeds}
    minutes = sum(trial_minutes(s, k) for s in STRATEGIES for k in a.seeds)
    states = {(s, k): search_state(s, k) for s in STRATEGIES for k in a.seeds}
    refs = {json.dumps(st["hv_reference"]) for st in states.values()}
    first = states[(STRATEGIES[0], a.seeds[0])]
    cfg = (first.get("study") or first["experiment"])["search"]
    n = min(len(c) for c in curves.values())
    marks = sorted({i for i in (4, 9, 14, 19, 24, n - 1) if i < n})
    seeds_text = ", ".join(str(k) for k in a.seeds)
    lines = [
        "# Search on Fashion-MNIST: NSGA-II against random search",
        "",
        f"Reproduce: `cargo build --release && python3 scripts/search_study.py --seeds {' '.join(map(str, a.seeds))}"
        + (" --retrain" if a.retrain else "") + f"` (settings in `{EXP}`). Machine: 2 cores, 24 GiB, no GPU; "
        f"the trials of all {len(curves)} runs took {minutes:.1f} minutes (teacher training not counted).",
        "",
        f"Budget, identical for both: coarse stage {cfg['coarse']['trials']} candidates × {cfg['coarse']['epochs']} epochs "
        f"(widths and depths, every UIB an IB), fine stage {cfg['fine']['trials']} × {cfg['fine']['epochs']} epochs "
        "(start / middle depthwise kernels, expansion, MQA placement) seeded by the coarse front; each candidate "
        f"distilled ({distill_text(first)}) on {data_text(first)} from one teacher shared by every run, "
        f"{first['teacher']} ({100 * first['teacher_test_top1']:.1f} % top-1 on {test_text(first)}). Seeds {seeds_text}: the seed drives the strategy, the weights and the data order "
        "(the validation split is fixed). Objectives: validation top-1 (max) and MACs (min).",
        "",
        f"Hypervolume reference point (1 − top-1, MACs): {first['hv_reference']}, fixed from the space's largest "
        "corner before the first trial; "
        + ("identical in every run." if len(refs) == 1 else "DIFFERENT between runs (do not compare)."),
        "",
        f"Hypervolume after the same numbers of evaluations, mean ± standard deviation over {len(a.seeds)} seeds. "
        f"In each stage both strategies draw their first population ({cfg['population']} candidates) from a stream"
        f" they share, so {own_trials(cfg)} of each run's {cfg['coarse']['trials'] + cfg['fine']['trials']} trials"
        " are the strategy's own proposals. The difference is NSGA-II minus random search, paired by seed, with"
        " its 95 % t interval:",
        "",
        "| evaluations | " + " | ".join(STRATEGIES) + " | difference [95 % CI] | verdict |",
        "|---:|" + "---:|" * len(STRATEGIES) + "---:|---|",
    ]
    for i in marks:
        d, ci = paired([curves[("nsga2", k)][i] for k in a.seeds], [curves[("random", k)][i] for k in a.seeds])
        interval = f"{d:+.4g}" + (f" [{ci[0]:+.4g}, {ci[1]:+.4g}]" if ci else "")
        lines.append(f"| {i + 1} | " + " | ".join(
            mean_std([curves[(s, k)][i] for k in a.seeds]) for s in STRATEGIES) + f" | {interval} | {verdict(ci)} |")
    final = {s: [curves[(s, k)][n - 1] for k in a.seeds] for s in STRATEGIES}
    wins = {s: sum(1 for j in range(len(a.seeds))
                   if all(final[s][j] > final[t][j] for t in STRATEGIES if t != s)) for s in STRATEGIES}
    ties = len(a.seeds) - sum(wins.values())
    lines += [
        "",
        "Final hypervolume per seed: " + "; ".join(
            f"seed {k}: " + ", ".join(f"{s} {final[s][j]:.4g}" for s in STRATEGIES)
            for j, k in enumerate(a.seeds)) + ".",
        "",
        f"After {n} evaluations the larger hypervolume went to "
        + ", ".join(f"{s} in {wins[s]} of {len(a.seeds)} seeds" for s in STRATEGIES)
        + (f" (equal in {ties})" if ties else "")
        + f"; means {', '.join(f'{s} {mean_std(final[s])}' for s in STRATEGIES)}.",
        "",
        "Per-run reports (front tables, Pareto and hypervolume plots, all trials):",
        "",
    ]
    for s in STRATEGIES:
        lines.append(f"- {s}: " + ", ".join(
            f"[seed {k}]({s}/seed{k}/README.md)" for k in a.seeds))
    lines += ["", f"![nsga2 seed {a.seeds[0]} Pareto front](nsga2/seed{a.seeds[0]}/pareto.png)", ""]
    if a.retrain:
        best = max(STRATEGIES, key=lambda s: statistics.mean(final[s]))
        verdicts = retrain(best, a.seeds[0], a.retrain_seeds, a.jobs)
        runs, hours = retrain_hours(best, a.seeds[0])
        spent = f"{hours:.1f} hours" if hours >= 1 else f"{60 * hours:.1f} minutes"
        reference = ", the fidelity study's reference" if RECIPE == p.get_default("recipe") else ""
        rel = f"{best}/seed{a.seeds[0]}/retrain/README.md"
        lines += [
            "## The front retrained against the presets",
            "",
            f"The front of {best} (the larger mean final hypervolume), seed {a.seeds[0]}, retrained at the full"
            f" budget (`{RECIPE}`{reference}) with {a.retrain_seeds} seeds, distilled (`kd`) and not (`ce`), next to conv-small at widths"
            f" 0.25–1.0 trained alike; test top-1 against the curve at equal MACs and latency ([table]({rel})).",
            f"The {runs} runs trained for it took {spent} of epochs (training and validation, one"
            f" thread each, {a.jobs} at a time; runs reused from other studies not counted). Latency measured"
            f" on {cpu_model()}, with nothing else running.",
            "",
            "Verdicts:",
            "",
            *[f"- {v}" for v in verdicts],
            "",
            f"![retrained front]({best}/seed{a.seeds[0]}/retrain/retrain.png)",
            "",
        ]
    publish(os.path.join(OUT, "README.md"), lines)


if __name__ == "__main__":
    main()
