#!/usr/bin/env python3
"""Scale-out measurements: writes reports/scale_out.md.

    cargo build --release && python3 scripts/scale_out.py

1. The main job's search (experiments/quick.toml) twice on this machine: in one process with 2
   math threads (`search`, a trial at a time), and through the work queue with 2 local workers
   of 1 thread each (`search --workers 2 --worker-threads 1`, a generation at a time). The two
   schedules propose differently, so the candidates differ; candidate-epochs per hour is the
   comparable rate. The teacher is trained before the clock starts (and reused by later runs).
2. Queue contention: `cargo bench --bench queue_contention` (1, 8 and 32 threads with their own
   connections draining 2,000 no-op trials from one PostgreSQL server and one SQLite file).
Needs an otherwise idle machine. Only the standard library.
"""
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time

from study_common import cpu_model, publish

BIN = os.environ.get("MNV4_BIN", "./target/release/mnv4-lab")
EXP = "experiments/quick.toml"
SETUPS = [(None, 2), (2, 1)]


def search(workers, threads):
    name = f"scale_out_w{workers or 0}t{threads}"
    shutil.rmtree(os.path.join("runs", name), ignore_errors=True)
    db = os.path.join("runs", name, "trials.sqlite")
    cmd = [BIN, "search", EXP, "--quiet", "--storage", f"sqlite:{db}",
           "--set", f'name="{name}"', "--set", f'search.report_dir="runs/{name}/report"']
    if workers:
        cmd += ["--workers", str(workers), "--worker-threads", str(threads)]
    else:
        cmd += ["--set", f"train.threads={threads}"]
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    t0 = time.time()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    wall = time.time() - t0
    m = re.search(r"(\d+) trials in (\d+)s", out.stderr)
    db = sqlite3.connect(db)
    records = [json.loads(r[0]) for r in db.execute("SELECT record FROM trials WHERE study = ?", (name,))]
    trained = [r for r in records if r.get("duplicate_of") is None and r.get("epochs", 0) > 0]
    return {
        "name": name, "workers": workers, "threads": threads, "wall": wall,
        "trials": int(m.group(1)), "seconds": int(m.group(2)),
        "trained": len(trained), "epochs": sum(r["epochs"] for r in trained),
        "archs": sorted(r["hash"] for r in records),
    }


def main():
    rows = [search(w, t) for w, t in SETUPS]
    bench = subprocess.run(["cargo", "bench", "--bench", "queue_contention"], check=True,
                           capture_output=True, text=True).stdout
    table = "\n".join(l for l in bench.splitlines() if l.startswith("|"))
    same = rows[0]["archs"] == rows[1]["archs"]
    base = rows[0]
    lines = [
        "# Scale-out: trials through the work queue",
        "",
        "Reproduce: `cargo build --release && python3 scripts/scale_out.py` on an otherwise idle machine.",
        f"Machine: 2 cores, 24 GiB, no GPU, {cpu_model()}.",
        "",
        "## The main job's search with local workers",
        "",
        f"`mnv4-lab search {EXP}`, {base['trials']} trials (coarse, fine, successive halving, references),"
        " in one process a trial at a time, and with `--workers 2 --worker-threads 1` a generation at a time"
        " through the run's SQLite queue. Seconds from"
        " the first generation to the last result (the teacher, trained or found before, is not counted);"
        " a candidate-epoch is one epoch of one trained candidate, promotions included.",
        "",
        "| setup | seconds | trials per hour | candidate-epochs | candidate-epochs per hour | ratio |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        per_h = r["epochs"] / r["seconds"] * 3600
        ratio = (r["epochs"] / r["seconds"]) / (base["epochs"] / base["seconds"])
        setup = (f"{r['workers']} workers × {r['threads']} thread" if r["workers"]
                 else f"1 process × {r['threads']} threads")
        lines.append(f"| {setup} | {r['seconds']} |"
                     f" {r['trials'] / r['seconds'] * 3600:.0f} | {r['epochs']} | {per_h:.0f} | {ratio:.2f} |")
    lines += [
        "",
        ("Both runs trained the same architectures." if same else
         "The two schedules trained different architectures (a generation at a time proposes differently from"
         " one at a time), so the comparison is of similar, not identical, work: compare candidate-epochs per hour."),
        "One run of each, one after the other; a second pair of runs would say how much of the ratio is noise.",
        "",
        "## Queue contention",
        "",
        "`cargo bench --bench queue_contention`: W threads, each with its own connection (as W workers would"
        " have), claim and record 2,000 no-op trials from one throw-away PostgreSQL server (unix socket) and"
        " one SQLite file; heartbeats left out. No trial may be claimed twice.",
        "",
        table,
        "",
        "With real trials (seconds to hours each) a worker claims a few times per hour; the queue is far from"
        " being the limit at these rates.",
        "",
    ]
    publish("reports/scale_out.md", lines)


if __name__ == "__main__":
    main()
