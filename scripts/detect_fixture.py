#!/usr/bin/env python3
"""Regenerates the Ultralytics parity fixture read by tests/detect_parity.rs.

    python3 -m venv /tmp/peer && /tmp/peer/bin/pip install torch ultralytics safetensors
    /tmp/peer/bin/python scripts/detect_fixture.py [--seed 0] [--input 1 3 64 64]

It builds Ultralytics' yolo11n.yaml with 10 classes (random init under torch.manual_seed(seed)),
then, from a generator seeded with `seed`, draws every BatchNorm's weight ~ U(0.75, 1.25),
bias ~ N(0, 0.05²), running mean ~ N(0, 0.1²) and running variance ~ U(0.5, 2), and every conv
bias ~ N(0, 0.05²) (DFL's fixed bins 0…15 stay). The weights are rounded to float16 and written
back into the model, the input is drawn ~ N(0, 1) from the same generator, and the outputs are
computed in float32 (CPU, eval mode) from the rounded weights.

It writes tests/fixtures/yolo11n_nc10.safetensors with
- the state dict (Ultralytics' names, without `num_batches_tracked`) as float16;
- `io.input` (float32, NCHW);
- `io.level.0` … `io.level.2`: the raw head map per level (P3, P4, P5), the box branch's
  64 channels then the 10 class logits, float32;
- `io.decoded`: Ultralytics' decoded output [B, 4 + nc, anchors] (boxes as centre x, centre y,
  width, height in pixels, then class sigmoids), float32;
and writes the versions and parameter count into the file's metadata.
"""
import argparse
import os

import torch
from fixture_common import is_batch_norm, normal_, randomize_batch_norm, round_to_float16
import ultralytics
from safetensors.torch import save_file
from ultralytics.nn.tasks import DetectionModel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "yolo11n_nc10.safetensors")


@torch.no_grad()
def randomize(model, gen):
    """Draws BN statistics and affine parameters and conv biases (see the docstring)."""
    for _, module in model.named_modules():
        if is_batch_norm(module):
            randomize_batch_norm(module, gen)
        elif isinstance(module, torch.nn.Conv2d) and module.bias is not None:
            normal_(module.bias, 0.05, gen)


@torch.no_grad()
def head_maps(model, x):
    """Runs the model; returns its decoded output and the raw map of every head level."""
    detect = model.model[-1]
    captured = {}

    def keep(name):
        def hook(_module, _inputs, output):
            captured[name] = output

        return hook

    hooks = []
    for i in range(detect.nl):
        hooks.append(detect.cv2[i].register_forward_hook(keep(f"box.{i}")))
        hooks.append(detect.cv3[i].register_forward_hook(keep(f"cls.{i}")))
    out = model(x)
    for h in hooks:
        h.remove()
    decoded = out[0] if isinstance(out, (tuple, list)) else out
    maps = [torch.cat((captured[f"box.{i}"], captured[f"cls.{i}"]), 1) for i in range(detect.nl)]
    return decoded, maps


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--input", type=int, nargs=4, default=[1, 3, 64, 64], metavar=("N", "C", "H", "W"))
    p.add_argument("--out", default=OUT)
    args = p.parse_args()
    torch.set_grad_enabled(False)
    torch.manual_seed(args.seed)
    model = DetectionModel("yolo11n.yaml", nc=10, verbose=False)
    gen = torch.Generator().manual_seed(args.seed)
    randomize(model, gen)
    tensors = round_to_float16(model)
    model.eval()
    x = torch.randn(tuple(args.input), generator=gen, dtype=torch.float32)
    decoded, maps = head_maps(model, x)
    io = {"io.input": x, "io.decoded": decoded}
    io.update({f"io.level.{i}": m for i, m in enumerate(maps)})
    tensors.update({k: v.detach().to(torch.float32).contiguous() for k, v in io.items()})
    meta = {
        "model": "yolo11n.yaml, nc=10",
        "ultralytics": ultralytics.__version__,
        "torch": torch.__version__,
        "seed": str(args.seed),
        "params": str(sum(p.numel() for p in model.parameters())),
        "weights_dtype": "float16 (outputs computed in float32 from these rounded weights)",
    }
    save_file(tensors, args.out, metadata=meta)
    shapes = ", ".join(str(list(m.shape)) for m in maps)
    print(f"{args.out}: {meta['params']} parameters, maps {shapes}, decoded {list(decoded.shape)}")


if __name__ == "__main__":
    main()
