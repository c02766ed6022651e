#!/usr/bin/env python3
"""Where a training step's time goes, stage by stage, against PyTorch channels_last.

    MNV4_BIN=./target/release/mnv4-lab /tmp/peer/bin/python benches/stage_compare.py \
        --repeats 4 [--res 224 --batch 32 --threads 2]

Times a conv-small training step (forward in train mode, cross-entropy, backward, SGD) on the
network cut after its first k stages of blocks, for k = 1..4, each followed by a 16-channel 1x1
feature conv and a 16-wide head: mnv4-lab from the same block string (`feat16 head16`), PyTorch
from timm's model cut the same way (`benches/peer_torch.py --stages k`, channels_last). The
runs alternate, k by k and side by side, `--repeats` times. A stage's time is the difference
between consecutive cuts (stage 1 carries the stem), as a mean with its 95 % t interval over the
repeats; the speed-up is PyTorch's stage time over ours, its interval from the two intervals'
ends (conservative). Prints a markdown table with the CPU model.
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))
from study_common import T975, cpu_model, study_binary  # noqa: E402

MAPS = ["stem 112², stage 56²", "28²", "14²", "7²"]


def last_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["ms_per_step"]


def our_stages(binary):
    """conv-small's block string from `inspect`, as its head and its stages of blocks."""
    out = subprocess.run([binary, "inspect", "conv-small"], check=True, capture_output=True,
                         text=True).stdout
    line = next(l for l in out.splitlines() if l.split()[:1] == ["blocks"])
    head, *stages = [p.strip() for p in line.split(None, 1)[1].split("|")]
    head = " ".join(w for w in head.split() if not w.startswith(("feat", "head")))
    return head + " feat16 head16", stages


def mean_ci(v):
    m = statistics.mean(v)
    if len(v) < 2:
        return m, (m, m)
    half = T975[len(v) - 1] * statistics.stdev(v) / math.sqrt(len(v))
    return m, (m - half, m + half)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--res", type=int, default=224)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=8)
    a = p.parse_args()
    binary = study_binary()
    head, stages = our_stages(binary)
    common = ["--res", str(a.res), "--batch", str(a.batch), "--steps", str(a.steps), "--warmup", "2",
              "--threads", str(a.threads)]
    times = {side: {k: [] for k in range(1, len(stages) + 1)} for side in ("ours", "torch")}
    for r in range(a.repeats):
        for k in range(1, len(stages) + 1):
            model = " | ".join([head] + stages[:k])
            times["ours"][k].append(last_json([binary, "bench", "train", "--model", model, "--json"] + common))
            times["torch"][k].append(last_json(
                [sys.executable, os.path.join(os.path.dirname(__file__), "peer_torch.py"), "train",
                 "--model", "mobilenetv4_conv_small", "--stages", str(k), "--channels-last"] + common))
            print(f"repeat {r + 1} cut {k}: ours {times['ours'][k][-1]:.1f} ms, "
                  f"PyTorch {times['torch'][k][-1]:.1f} ms", file=sys.stderr, flush=True)
    print(f"{cpu_model()}; conv-small train {a.res}² b{a.batch}, {a.threads} threads, "
          f"{a.repeats} repeats\n")
    print("| stage | maps | mnv4-lab ms [95 % CI] | PyTorch channels_last ms [95 % CI] | speed-up |")
    print("|---|---|---:|---:|---:|")
    for k in range(1, len(stages) + 1):
        inc = {s: [t - (times[s][k - 1][i] if k > 1 else 0.0) for i, t in enumerate(times[s][k])]
               for s in times}
        (om, (olo, ohi)), (tm, (tlo, thi)) = mean_ci(inc["ours"]), mean_ci(inc["torch"])
        ratio = tm / om if om > 0 else float("nan")
        lo = tlo / ohi if ohi > 0 else float("nan")
        hi = thi / olo if olo > 0 else float("inf")
        print(f"| {k} | {MAPS[k - 1] if k <= len(MAPS) else ''} | {om:.1f} [{olo:.1f}, {ohi:.1f}] | "
              f"{tm:.1f} [{tlo:.1f}, {thi:.1f}] | {ratio:.2f}× [{lo:.2f}, {hi:.2f}] |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
