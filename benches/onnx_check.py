"""Check an ONNX file written by `mnv4-lab export` with the ONNX checker and ONNX Runtime.

Usage:

    cargo run --release -- export conv-small --res 64 -o /tmp/m.onnx --save-reference /tmp/m.json
    python3 benches/onnx_check.py /tmp/m.onnx /tmp/m.json

`--save-reference` makes mnv4-lab write a seeded batch of two inputs and the logits it computes
for them; this script runs the same batch through ONNX Runtime and prints the relative error
max |ort - ours| / max |ours| (exit status 1 above the tolerance, default 1e-4). Needs
`pip install onnx onnxruntime numpy`.
"""

import argparse
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", help="the .onnx file")
    p.add_argument("reference", help="the JSON written by --save-reference")
    p.add_argument("--tolerance", type=float, default=1e-4)
    args = p.parse_args()

    model = onnx.load(args.model)
    onnx.checker.check_model(model, full_check=True)
    print(f"onnx.checker: ok (IR {model.ir_version}, opset {model.opset_import[0].version})")

    with open(args.reference) as f:
        ref = json.load(f)
    x = np.asarray(ref["input"], dtype=np.float32).reshape(ref["shape"])
    ours = np.asarray(ref["logits"], dtype=np.float32).reshape(x.shape[0], -1)

    session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    (got,) = session.run([ref["output_name"]], {ref["input_name"]: x})
    err = float(np.abs(got - ours).max() / max(np.abs(ours).max(), 1e-12))
    print(f"ONNX Runtime {ort.__version__}: logits {got.shape}, max relative error {err:.2e}")
    return 0 if err <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
