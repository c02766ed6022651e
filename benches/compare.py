#!/usr/bin/env python3
"""Side-by-side speed report: runs `mnv4-lab bench --json` and benches/peer_torch.py for the same
configurations, interleaved in one run on one machine, and writes reports/bench.md.

    cargo build --release
    python3 -m venv /tmp/peer && /tmp/peer/bin/pip install torch timm onnxruntime onnx
    /tmp/peer/bin/python benches/compare.py            # writes reports/bench.md

Each configuration runs `--repeats` times per implementation (alternating), and the report keeps
each implementation's best median step time, so a background blip does not decide a ratio.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

CONFIGS = [
    # (label, kind, model, res, batch, in_chans, classes, steps)
    ("conv-small train 224² b32", "train", "conv-small", 224, 32, 3, 1000, 3),
    ("conv-small train 32² b128 (1 ch, 10 cls)", "train", "conv-small", 32, 128, 1, 10, 5),
    ("conv-small infer 224² b1", "infer", "conv-small", 224, 1, 3, 1000, 30),
    ("hybrid-medium train 224² b32", "train", "hybrid-medium", 224, 32, 3, 1000, 2),
    ("hybrid-medium infer 224² b1", "infer", "hybrid-medium", 224, 1, 3, 1000, 20),
]

TIMM = {"conv-small": "mobilenetv4_conv_small", "hybrid-medium": "mobilenetv4_hybrid_medium"}


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def ours(kind, model, res, batch, ch, cls, steps, threads):
    return run_json(["./target/release/mnv4-lab", "bench", kind, "--model", model, "--res", str(res),
                     "--batch", str(batch), "--in-chans", str(ch), "--num-classes", str(cls),
                     "--steps", str(steps), "--warmup", "2", "--threads", str(threads), "--json"])


def peer(kind, model, res, batch, ch, cls, steps, threads, onnx=False):
    cmd = [sys.executable, "benches/peer_torch.py", kind, "--model", TIMM[model], "--res", str(res),
           "--batch", str(batch), "--in-chans", str(ch), "--num-classes", str(cls),
           "--steps", str(steps), "--warmup", "2", "--threads", str(threads)]
    return run_json(cmd + (["--onnx"] if onnx else []))


def best(results):
    return min(results, key=lambda r: r["ms_per_step"])


def machine():
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, {platform.system()} {platform.release()}"


def mib(b):
    return f"{b / 2**20:.0f}" if b else "n/a"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--out", default="reports/bench.md")
    a = p.parse_args()
    rows = []
    started = time.time()
    for label, kind, model, res, batch, ch, cls, steps in CONFIGS:
        args = (kind, model, res, batch, ch, cls, steps, a.threads)
        o, t, x = [], [], []
        for _ in range(a.repeats):
            o.append(ours(*args))
            t.append(peer(*args))
            if kind == "infer":
                x.append(peer(*args, onnx=True))
        rows.append((label, kind, best(o), best(t), best(x) if x else None))
        print(f"{label}: ours {best(o)['images_per_sec']:.1f} img/s, torch {best(t)['images_per_sec']:.1f} img/s",
              file=sys.stderr)
    t0 = rows[0][3]
    lines = [
        "# Speed: mnv4-lab against PyTorch (and ONNX Runtime) on the same machine",
        "",
        f"Machine: {machine()}; {a.threads} threads for every implementation.",
        f"Peers: PyTorch {t0['torch']} eager with timm {t0['timm']}; ONNX Runtime for inference.",
        f"Each configuration ran {a.repeats}× per implementation, alternating; each cell is that implementation's",
        "best median step time (median over the timed steps after 2 warm-up steps). A training step is forward,",
        "cross-entropy (label smoothing 0.1), backward and an SGD-Nesterov update; inference is one eval-mode forward.",
        "The machine is shared, so absolute times move by 10-20 % from one run to the next; the ratios,",
        "from interleaved runs, are the figures to compare.",
        f"Total run time {time.time() - started:.0f} s. Reproduce: `cargo build --release && /tmp/peer/bin/python benches/compare.py`.",
        "",
        "| configuration | mnv4-lab img/s | PyTorch img/s | ratio (ours / PyTorch) | mnv4-lab ms/step | PyTorch ms/step | ONNX Runtime ms/step | peak RSS MiB (ours / PyTorch) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, kind, o, t, x in rows:
        lines.append(
            f"| {label} | {o['images_per_sec']:.1f} | {t['images_per_sec']:.1f} | "
            f"**{o['images_per_sec'] / t['images_per_sec']:.2f}×** | {o['ms_per_step']:.1f} | {t['ms_per_step']:.1f} | "
            f"{x['ms_per_step']:.2f} | {mib(o['peak_rss_bytes'])} / {mib(t['peak_rss_bytes'])} |"
            if x else
            f"| {label} | {o['images_per_sec']:.1f} | {t['images_per_sec']:.1f} | "
            f"**{o['images_per_sec'] / t['images_per_sec']:.2f}×** | {o['ms_per_step']:.1f} | {t['ms_per_step']:.1f} | "
            f"– | {mib(o['peak_rss_bytes'])} / {mib(t['peak_rss_bytes'])} |"
        )
    lines.append("")
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out + ".tmp", "w") as f:
        f.write("\n".join(lines))
    os.replace(a.out + ".tmp", a.out)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
