#!/usr/bin/env python3
"""A/B of two builds or two settings on one `mnv4-lab bench ... --json` cell, as a paired ratio.

    python3 benches/ab.py --a ./target/release/mnv4-lab --b /tmp/other/mnv4-lab \
        --pairs 10 -- bench train --model conv-small --res 32 --batch 128 --in-chans 1 \
        --num-classes 10 --steps 15 --warmup 3 --json
    python3 benches/ab.py --b-env CANDLE_NUM_THREADS=1 --pairs 10 -- bench train ...

A and B alternate (A first in even pairs, B first in odd ones), so a drift of the machine falls on
both. Each run's median step time (`ms_per_step`) is read from its last output line. The result
is B's time over A's: the geometric mean of the per-pair ratios with a 95 % t interval, and the
verdict ("no significant difference" when the interval holds 1). The CPU model is printed with it.
Standard library only.
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))
from study_common import T975, cpu_model  # noqa: E402


def step_ms(binary, args, env):
    out = subprocess.run([binary, *args], check=True, capture_output=True, text=True,
                         env=dict(os.environ, **env)).stdout
    return json.loads(out.strip().splitlines()[-1])["ms_per_step"]


def parse_env(pairs):
    env = {}
    for p in pairs:
        key, sep, value = p.partition("=")
        if not sep:
            sys.exit(f"--a-env/--b-env: expected KEY=VALUE, got {p!r}")
        env[key] = value
    return env


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", default=os.environ.get("MNV4_BIN", "./target/release/mnv4-lab"), help="binary A")
    ap.add_argument("--b", help="binary B (default: A)")
    ap.add_argument("--a-env", nargs="*", default=[], metavar="KEY=VALUE", help="environment of A's runs")
    ap.add_argument("--b-env", nargs="*", default=[], metavar="KEY=VALUE", help="environment of B's runs")
    ap.add_argument("--pairs", type=int, default=10)
    ap.add_argument("args", nargs=argparse.REMAINDER, help="-- then the mnv4-lab arguments (with --json)")
    a = ap.parse_args()
    args = a.args[1:] if a.args[:1] == ["--"] else a.args
    if a.pairs < 2 or a.pairs - 1 > max(T975):
        sys.exit(f"--pairs must be 2 to {max(T975) + 1}")
    sides = {"A": (a.a, parse_env(a.a_env)), "B": (a.b or a.a, parse_env(a.b_env))}
    logs = []
    for i in range(a.pairs):
        order = "AB" if i % 2 == 0 else "BA"
        ms = {}
        for side in order:
            binary, env = sides[side]
            ms[side] = step_ms(binary, args, env)
        logs.append(math.log(ms["B"] / ms["A"]))
        print(f"pair {i + 1}: A {ms['A']:.2f} ms, B {ms['B']:.2f} ms", flush=True)
    mean, half = statistics.mean(logs), T975[len(logs) - 1] * statistics.stdev(logs) / math.sqrt(len(logs))
    lo, hi = math.exp(mean - half), math.exp(mean + half)
    verdict = "no significant difference" if lo <= 1 <= hi else ("B faster" if hi < 1 else "B slower")
    print(f"B/A time {math.exp(mean):.3f} [95 % CI {lo:.3f}, {hi:.3f}] over {len(logs)} pairs: {verdict}"
          f" ({cpu_model()})")


if __name__ == "__main__":
    main()
