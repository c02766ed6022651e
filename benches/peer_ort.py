#!/usr/bin/env python3
"""Peer measurement for `mnv4-lab bench infer`: batch inference of an ONNX file in ONNX Runtime
(CPU provider, all graph optimisations). Prints one JSON object with the fields of
`mnv4-lab bench --json`; `idle_rss_bytes` is the resident size after importing onnxruntime and
numpy, before the session exists, so `peak - idle` is what the model costs.

    python3 benches/peer_ort.py /tmp/m.onnx --res 224 --batch 1 --in-chans 3 --steps 30 --threads 2

Needs onnxruntime and numpy; a measuring tool only, never a dependency of mnv4-lab.
"""
import argparse
import sys

import numpy as np
import onnxruntime as ort

from peer_common import rss_bytes, time_and_print


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model", help="the .onnx file (one float input [N, C, H, W])")
    p.add_argument("--label", default="onnxruntime", help="the `impl` field of the output")
    p.add_argument("--res", type=int, default=224)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--in-chans", type=int, default=3)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()

    idle = rss_bytes()
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(0).uniform(-1, 1, (a.batch, a.in_chans, a.res, a.res)).astype(np.float32)
    time_and_print(lambda: sess.run(None, {name: x}), a, idle, impl=a.label, kind="infer",
                   onnxruntime=ort.__version__)


if __name__ == "__main__":
    sys.exit(main())
