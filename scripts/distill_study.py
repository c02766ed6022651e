#!/usr/bin/env python3
"""Distillation study on Fashion-MNIST: every method against no KD, paired over seeds.

    cargo build --release && python3 scripts/distill_study.py [--seeds 0 1 2] [--width 1.0]

Teacher: the ensemble of experiments/teacher_fashion_mnist.toml and teacher_fashion_mnist_erase.toml
(each trained first if its run folder has no finished run). Student and recipe:
experiments/distill_fashion_mnist.toml on the full training split, the student conv-small at
--width (default 0.5: reports/distill_fashion_mnist.md; another width writes
reports/distill_fashion_mnist_w<W>.md). Arms (every other setting the same):
  none        cross-entropy only (`mnv4-lab train`)
  none+ls     cross-entropy with label smoothing matched to KD's soft targets: the smoothing that
              gives the true class the mean probability the teacher gives it on the augmented
              training images (`mnv4-lab eval --split train --temperature 1`). KD at T matches the
              student's softmax(s/T) to the teacher's softmax(t/T); a student that matched exactly
              would output the teacher's own distribution, softmax(t), so T = 1 is the matched mass.
  kd          CE + Hinton KD (T = 4)
  kd+feat8    CE + KD + feature KD at the stride-8 tap (4x4 at 32x32)
  kd+feat16   CE + KD + feature KD at the stride-16 tap (2x2 at 32x32)
  at          CE + attention transfer at the stride-8 tap
  dkd-bB      CE + Decoupled KD, alpha 1, beta B in {1, 2, 4, 8}, T 4
Runs go seed by seed, so an interrupted study has whole seeds; finished runs (summary.json present)
are not rerun, so the study can span several sittings. Run names carry a hash of the two experiment
files, so a change of settings starts fresh runs instead of reusing stale ones. Every arm is compared with `none` as a
paired difference over seeds with a 95 % t interval. Only the standard library.
"""
import argparse
import csv
import hashlib
import json
import os
import re
import statistics

from study_common import cpu_model, paired, publish, sh, study_binary, verdict

EXP = "experiments/distill_fashion_mnist.toml"
# The ensemble teacher's members: (experiment, run folder).
TEACHERS = [("experiments/teacher_fashion_mnist.toml", "runs/teacher_fashion_mnist"),
            ("experiments/teacher_fashion_mnist_erase.toml", "runs/teacher_fashion_mnist_erase")]
BIN = study_binary()
# The student is conv-small at this width (--width); the experiment file's own width is 0.5.
DEFAULT_WIDTH = 0.5
WIDTH = DEFAULT_WIDTH
FEATURES_OFF = ["distill.feature_weight=0"]
ARMS = {
    "none": None,
    "none+ls": None,
    "kd": FEATURES_OFF,
    "kd+feat8": ["distill.feature_taps=[2]"],
    "kd+feat16": ["distill.feature_taps=[3]"],
    "at": ["distill.kd_weight=0", "distill.feature_weight=0", "distill.at_weight=1000", "distill.feature_taps=[2]"],
    **{
        f"dkd-b{b}": ["distill.kd_weight=0", "distill.dkd_weight=1", f"distill.dkd_beta={b}"] + FEATURES_OFF
        for b in (1, 2, 4, 8)
    },
}


def ensure_teacher():
    """Trains (or resumes) each member without a finished run; returns their best sidecars."""
    sidecars = []
    for exp, run_dir in TEACHERS:
        last = os.path.join(run_dir, "checkpoints", "last.json")
        if not os.path.exists(os.path.join(run_dir, "summary.json")):
            sh([BIN, "train", exp, "--quiet"] + (["--resume"] if os.path.exists(last) else []))
        sidecars.append(os.path.join(run_dir, "checkpoints", "best.json"))
    return sidecars


def cached_json(what, compute):
    path = os.path.join("runs", f"distill_fm-{settings_tag()}-{what}.json")
    if os.path.exists(path):
        return json.load(open(path))
    got = compute()
    json.dump(got, open(path, "w"))
    return got


def matched_smoothing(sidecars):
    def compute():
        out = sh([BIN, "eval", *sidecars, "--experiment", EXP, "--split", "train", "--temperature", "1"])
        m = re.search(r"true-class probability at T=1: ([0-9.]+); matched label smoothing: ([0-9.]+)", out)
        return {"p_true": float(m.group(1)), "smoothing": round(float(m.group(2)), 4)}
    return cached_json("matched-ls", compute)


def teacher_accuracy(sidecars):
    """The ensemble teacher's top-1 on the students' validation split and on test."""
    def compute():
        got = {}
        for split in ("val", "test"):
            out = sh([BIN, "eval", *sidecars, "--experiment", EXP, "--split", split])
            got[split] = float(re.search(r"top-1 ([0-9.]+)%", out).group(1)) / 100
        return got
    return cached_json("teacher", compute)


def settings_tag():
    """8 hex digits of the study's and the teacher's experiment files: runs made with other
    settings are not reused."""
    h = hashlib.sha256()
    for path in (EXP, *(exp for exp, _ in TEACHERS)):
        h.update(open(path, "rb").read())
    return h.hexdigest()[:8]


def run_name(arm, seed, suffix=""):
    student = "" if WIDTH == DEFAULT_WIDTH else f"-w{WIDTH}"
    return f"distill_fm-{settings_tag()}{student}-{arm.replace('+', '_')}-s{seed}{suffix}"


def report_path():
    student = "" if WIDTH == DEFAULT_WIDTH else f"_w{WIDTH}"
    return f"reports/distill_fashion_mnist{student}.md"


def run(arm, seed, smoothing, suffix=""):
    name = run_name(arm, seed, suffix)
    if os.path.exists(os.path.join("runs", name, "summary.json")):
        return
    sets = [f'name="{name}"', f"seed={seed}", f"model.width={WIDTH}"]
    if ARMS[arm] is None:
        cmd = [BIN, "train", EXP, "--quiet"]
        if arm == "none+ls":
            sets.append(f"train.label_smoothing={smoothing}")
    else:
        cmd = [BIN, "distill", EXP, "--quiet"]
        sets += ARMS[arm]
    for s in sets:
        cmd += ["--set", s]
    sh(cmd + (["--resume"] if os.path.exists(os.path.join("runs", name)) else []))


def load(name):
    with open(os.path.join("runs", name, "summary.json")) as f:
        s = json.load(f)
    p = os.path.join("runs", name, "distill.json")
    d = json.load(open(p)) if os.path.exists(p) else {}
    return s, d


def run_seconds(name):
    """Seconds of the run's epochs (training and validation) summed from metrics.csv, so a run
    resumed over several sittings counts every epoch once."""
    with open(os.path.join("runs", name, "metrics.csv")) as f:
        return sum(float(r["seconds"]) for r in csv.DictReader(f))


def ms(values):
    if len(values) < 2:
        return f"{100 * values[0]:.2f}"
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def paired_on_seeds(a, b):
    """`paired` over the seeds both rows finished."""
    common = [s for s in a["seeds"] if s in b["seeds"]]
    pick = lambda r: [r["test"][r["seeds"].index(s)] for s in common]
    return paired(pick(a), pick(b), scale=100)


def cache_story(fills, reads, speedups):
    """What the cache did for each seed: kd fills it, kd+feat8 reads it; or, when an earlier study
    with the same teacher, data and views filled it (the key does not hold the student), that
    every run read it and no speed-up is measured here."""
    if not any(d["live_batches"] for d, _ in fills):
        return (
            "The cache already held these views: an earlier study with the same teacher, data and seeds"
            " (the ×0.5 student's, `reports/distill_fashion_mnist.md`) filled it, and its key is the"
            " teacher, data and view, not the student. So kd read every batch from it as well"
            f" ({', '.join(str(d['cached_batches']) for d, _ in fills)} hits) and this study measures no"
            " speed-up; the ×0.5 study's figure stands. A run from the cache trains bit for bit like the"
            " live run (`tests/distill_e2e.rs`)."
        )
    return (
        "For each seed, kd is the first run and fills the cache (teacher live for"
        f" {', '.join(str(d['live_batches']) for d, _ in fills)} batches,"
        f" {', '.join(str(round(d['teacher_seconds'])) for d, _ in fills)} s in the teacher):"
        f" {', '.join(f'{t:.0f}' for _, t in fills)} s of epochs; kd+feat8 then reads every batch from it"
        f" ({', '.join(str(d['cached_batches']) for d, _ in reads)} hits,"
        f" {sum(d['live_batches'] for d, _ in reads)} misses): {', '.join(f'{t:.0f}' for _, t in reads)} s, although it"
        f" also computes the feature loss. Speed-up at least **{statistics.mean(speedups):.2f}×** (mean over seeds;"
        f" {', '.join(f'{x:.2f}×' for x in speedups)}), with the timing caveat above. A run from the cache trains"
        " bit for bit like the live run (`tests/distill_e2e.rs`)."
    )


def report(seeds, ls, acc):
    members = [json.load(open(os.path.join(run, "summary.json"))) for _, run in TEACHERS]
    alone = ", ".join(f"{100 * m['test_top1']:.2f}%" for m in members)
    rows = {}
    for arm in ARMS:
        # Seeds whose run finished (a study cut short reports what it has, seed by seed).
        done = [s for s in seeds if os.path.exists(os.path.join("runs", run_name(arm, s), "summary.json"))]
        if not done:
            continue  # an arm left out of this study (--arms)
        got = [load(run_name(arm, s)) for s in done]
        rows[arm] = {
            "seeds": done,
            "val": [s["best_val_top1"] for s, _ in got],
            "test": [s["test_top1"] for s, _ in got],
            "wall": [run_seconds(run_name(arm, s)) for s in done],
            "cached": sum(d.get("cached_batches", 0) for _, d in got),
            "live": sum(d.get("live_batches", 0) for _, d in got),
            "loss": got[0][1].get("loss", "cross-entropy" + (f", label smoothing {ls['smoothing']}" if arm == "none+ls" else "")),
        }
    left_out = [a for a in ARMS if a not in rows]
    flags = (f" --width {WIDTH}" if WIDTH != DEFAULT_WIDTH else "") + (
        f" --arms {' '.join(rows)}" if left_out else "")
    student = load(run_name("none", seeds[0]))[0]
    # Per seed: kd fills the seed's cache (the teacher runs live), kd+feat8 then reads it (same
    # taps, same views); it also computes the feature loss, so its time bounds the speed-up below.
    both = [s for s in rows["kd"]["seeds"] if s in rows["kd+feat8"]["seeds"]]
    fills = [(load(run_name("kd", s))[1], run_seconds(run_name("kd", s))) for s in both]
    reads = [(load(run_name("kd+feat8", s))[1], run_seconds(run_name("kd+feat8", s))) for s in both]
    speedups = [f / r for (_, f), (_, r) in zip(fills, reads)]
    bytes_per_sample = reads[0][0].get("cache_bytes_per_sample", 0)
    total = sum(sum(r["wall"]) for r in rows.values()) / 60
    lines = [
        "# Distillation on Fashion-MNIST",
        "",
        f"Reproduce: `cargo build --release && python3 scripts/distill_study.py --seeds {' '.join(map(str, seeds))}{flags}`"
        f" ({total:.0f} minutes of epochs in all for the {sum(len(r['seeds']) for r in rows.values())} runs in the table, teacher"
        " excluded).",
        f"Settings: `{EXP}` (student), {' and '.join(f'`{e}`' for e, _ in TEACHERS)} (the teacher's members)."
        " Machine: 2 cores, 24 GiB, no GPU,"
        f" {cpu_model()}; the runs went one after another, over several sittings (a run cut off by the end of"
        " one resumed from its last epoch in the next).",
        "Times are upper bounds: during parts of the study the machine also built and tested code, and it was"
        " paused (SIGSTOP) while a benchmark or a timed job ran, which counts in the epoch that held the pause."
        " Compare them loosely; the accuracies do not depend on them.",
        "",
        f"- **Teacher**: the ensemble of {len(members)} conv-small ×1.0 runs ({sum(m['params'] for m in members):,}"
        " parameters in all; mean logits, feature maps side by side), trained for their own sake (see"
        f" `reports/teacher_fashion_mnist.md`): test top-1 **{100 * acc['test']:.2f}%**, validation"
        f" {100 * acc['val']:.2f}% (members alone: test {alone}).",
        f"- **Student**: conv-small ×{WIDTH} ({student['params']:,} parameters) on the full training split"
        " (55,000 images; 5,000 held out for validation, the same split as the teacher's; the official 10,000"
        " test images), the same recipe and augmentation for every arm.",
        f"- **Seeds** {', '.join(map(str, seeds))} (weights, data order, augmentation). Selection (best epoch) on"
        " validation; test reported once, for that epoch.",
        f"- **Matched label smoothing**: the teacher gives the true class a mean probability of {ls['p_true']:.4f}"
        f" on the augmented training images (T = 1, the distribution a student that matched KD's targets exactly"
        f" would output); smoothing ε = {ls['smoothing']} gives it the same mass.",
        "",
        "| arm | loss | val top-1 (%) | test top-1 (%) | Δ test vs none, mean [95 % CI] (points) | verdict | seeds | epoch s/run |",
        "|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for arm, r in rows.items():
        if arm == "none":
            delta, v = "–", "baseline"
        else:
            m, ci = paired_on_seeds(r, rows["none"])
            delta = f"{m:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")
            v = verdict(ci)
        lines.append(
            f"| {arm} | {r['loss']} | {ms(r['val'])} | {ms(r['test'])} | {delta} | {v} | {len(r['seeds'])} |"
            f" {statistics.mean(r['wall']):.0f} |"
        )
    lines += [
        "",
        "Values are mean ± sample standard deviation over the seeds; Δ is the mean of the per-seed differences with",
        "its 95 % Student-t interval; \"no significant difference\" when the interval holds 0.",
    ]
    if left_out:
        lines.append(f"Arms not run for this student: {', '.join(left_out)}.")
    if "kd+feat16" in rows:
        m, ci = paired_on_seeds(rows["kd+feat8"], rows["kd+feat16"])
        lines += [
            "",
            "## Which feature tap",
            "",
            f"At 32×32 the stride-16 map is 2×2 and the stride-8 map 4×4. Stride 8 minus stride 16: {m:+.2f} points"
            + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}] ({verdict(ci)})." if ci else "."),
        ]
    lines += [
        "",
        "## The offline distillation dataset",
        "",
        f"Each view holds, per training sample, the teacher's 10 logits and its stride-8 maps (both members') in f16:"
        f" {bytes_per_sample:,} bytes per sample, {bytes_per_sample * 55000 / 1e6:.0f} MB per epoch.",
        cache_story(fills, reads, speedups),
        f"Over the study, {sum(r['cached'] for r in rows.values())} batches came from the cache and"
        f" {sum(r['live'] for r in rows.values())} ran the teacher (hit rate"
        f" {sum(r['cached'] for r in rows.values()) / max(1, sum(r['cached'] + r['live'] for r in rows.values())):.1%}).",
        "",
    ]
    publish(report_path(), lines)




def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--width", type=float, default=DEFAULT_WIDTH, help="the student's conv-small width")
    ap.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS),
                    help="the arms to run (default all); `none` is always run, as every arm's baseline")
    args = ap.parse_args()
    global WIDTH
    WIDTH = args.width
    sidecars = ensure_teacher()
    ls = matched_smoothing(sidecars)
    acc = teacher_accuracy(sidecars)
    if not args.report_only:
        arms = ["none"] + [a for a in args.arms if a != "none"]
        for seed in args.seeds:
            for arm in arms:
                run(arm, seed, ls["smoothing"])
    report(args.seeds, ls, acc)


if __name__ == "__main__":
    main()
