#!/usr/bin/env python3
"""Regenerates the timm parity fixtures read by tests/timm_parity.rs (format: tests/fixtures/timm/README.md).

    python3 -m venv /tmp/peer && /tmp/peer/bin/pip install torch timm safetensors
    /tmp/peer/bin/python scripts/make_timm_fixtures.py [--models NAME ...] [--seed 0] [--input 2 3 96 96]

For each timm model NAME it writes three files:

- NAME.json: model, timm and torch versions, seed, input/logits/feature shapes, parameter count,
  weights dtype, eval mode (json.dumps with indent 1, no trailing newline).
- NAME.weights.safetensors: the whole state dict (timm key names, 1000 classes) as float16, without
  `num_batches_tracked`.
- NAME.io.safetensors: float32 `input` (NCHW), `logits`, and `feature.0` ... `feature.4`, timm's
  `forward_intermediates` maps at strides 2, 4, 8, 16, 32.

The model is timm's random init under `torch.manual_seed(seed)`. Then, from a generator seeded with
`seed`, every BatchNorm gets weight ~ U(0.75, 1.25), bias ~ N(0, 0.05²), running mean ~ N(0, 0.1²)
and running variance ~ U(0.5, 2); every layer-scale gamma ~ U(0.5, 1); every other bias
~ N(0, 0.05²). Eval-mode BN and attention are thus really exercised. The weights are rounded to
float16 and written back into the model, the input is drawn ~ N(0, 1) from the same generator,
and the expected outputs are computed in float32 (CPU, eval mode) from the rounded weights.

The committed fixtures were made by an earlier generator with the same distributions but a
different draw order, and it left `norm_head.weight` at 1 and drew the MQA blocks' `*.norm.bias`
like BN weights; so regenerated files match them in format and statistics, not value for value.

conv-small goes to tests/fixtures/timm/ (kept in the repository, about 9 MB); the larger models go
to --shared-out (default ../shared/fixtures/timm, which the parity test also reads).
"""
import argparse
import json
import os

import timm
import torch
from fixture_common import (is_batch_norm, normal_, randomize_batch_norm,
                            round_to_float16, uniform_)
from safetensors.torch import save_file

MODELS = ["mobilenetv4_conv_small", "mobilenetv4_conv_medium", "mobilenetv4_hybrid_medium"]
REPO_MODELS = {"mobilenetv4_conv_small"}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEIGHTS_DTYPE = "float16 (expected outputs computed in float32 from these rounded weights)"


@torch.no_grad()
def randomize(model, gen):
    """Draws BN statistics and affine parameters, layer-scale gammas and biases (see the docstring)."""
    for _, module in model.named_modules():
        if is_batch_norm(module):
            randomize_batch_norm(module, gen)
            continue
        for name, p in module.named_parameters(recurse=False):
            if name == "gamma":
                uniform_(p, 0.5, 1.0, gen)
            elif name == "bias":
                normal_(p, 0.05, gen)


@torch.no_grad()
def make(name, seed, input_shape, out_dir):
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, num_classes=1000)
    gen = torch.Generator().manual_seed(seed)
    randomize(model, gen)
    weights = round_to_float16(model)
    model.eval()
    x = torch.randn(input_shape, generator=gen, dtype=torch.float32)
    logits = model(x)
    feats = model.forward_intermediates(x, intermediates_only=True)
    assert len(feats) == 5, f"{name}: {len(feats)} feature maps, expected 5"
    io = {"input": x, "logits": logits}
    io.update({f"feature.{i}": f for i, f in enumerate(feats)})
    io = {k: v.detach().to(torch.float32).contiguous() for k, v in io.items()}
    os.makedirs(out_dir, exist_ok=True)
    save_file(weights, os.path.join(out_dir, f"{name}.weights.safetensors"))
    save_file(io, os.path.join(out_dir, f"{name}.io.safetensors"))
    meta = {
        "model": name,
        "timm": timm.__version__,
        "torch": torch.__version__,
        "seed": seed,
        "input_shape": list(x.shape),
        "logits_shape": list(logits.shape),
        "feature_shapes": [list(f.shape) for f in feats],
        "params": sum(p.numel() for p in model.parameters()),
        "weights_dtype": WEIGHTS_DTYPE,
        "eval_mode": not model.training,
    }
    with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
        f.write(json.dumps(meta, indent=1))
    print(f"{name}: {meta['params']} parameters, logits max |.| {logits.abs().max():.3g} -> {out_dir}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=MODELS, help="timm model names")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--input", type=int, nargs=4, default=[2, 3, 96, 96], metavar=("N", "C", "H", "W"))
    p.add_argument("--repo-out", default=os.path.join(ROOT, "tests", "fixtures", "timm"))
    p.add_argument("--shared-out", default=os.path.join(ROOT, "..", "shared", "fixtures", "timm"))
    args = p.parse_args()
    torch.set_grad_enabled(False)
    for name in args.models:
        out = args.repo_out if name in REPO_MODELS else args.shared_out
        make(name, args.seed, tuple(args.input), out)


if __name__ == "__main__":
    main()
