#!/usr/bin/env python3
"""Peer measurement for `mnv4-lab bench`: the same step in PyTorch + timm, in the default NCHW
layout or channels_last. Prints one JSON object, with the same fields as `mnv4-lab bench --json`;
`idle_rss_bytes` is the resident size after importing torch and timm, before the model exists.
`export` writes timm's model as ONNX (opset 17, eval mode) for benches/peer_ort.py.

    python3 benches/peer_torch.py train --model mobilenetv4_conv_small --res 32 --batch 128 \
        --in-chans 1 --num-classes 10 --steps 5 --threads 2 [--channels-last]
    python3 benches/peer_torch.py export --model mobilenetv4_conv_small --res 224 --out /tmp/t.onnx

Needs torch and timm (and onnx for export); they are measuring tools only, never a dependency
of mnv4-lab.
"""
import argparse
import sys

from peer_common import rss_bytes, time_and_print


def truncate(model, stages, num_classes):
    """Keeps the first `stages` stages of a timm MobileNetV4, then a 1x1 conv to 16 channels with
    batch norm and ReLU, a 16-wide 1x1 head without norm, and the classifier: the network that
    `mnv4-lab` builds from the same stages with `feat16 head16`."""
    import torch.nn as nn
    kept = list(model.blocks.children())[:stages]
    width = [m for m in kept[-1].modules() if isinstance(m, nn.Conv2d)][-1].out_channels
    feature = nn.Sequential(nn.Conv2d(width, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
    model.blocks = nn.Sequential(*kept, feature)
    model.conv_head = nn.Conv2d(16, 16, 1)
    model.norm_head = nn.Identity()
    model.classifier = nn.Linear(16, num_classes)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=["train", "infer", "export"])
    p.add_argument("--model", default="mobilenetv4_conv_small")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--res", type=int, default=224)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--in-chans", type=int, default=3)
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--channels-last", action="store_true", help="model and input in channels_last")
    p.add_argument("--out", help="export: where to write the ONNX file")
    p.add_argument("--stages", type=int,
                   help="keep only the first N stages of blocks, then a 16-channel 1x1 feature "
                        "conv and a 16-wide head (benches/stage_compare.py)")
    a = p.parse_args()
    if a.kind == "export" and not a.out:
        p.error("export needs --out FILE")

    import torch
    import timm

    idle = rss_bytes()
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    kwargs = dict(in_chans=a.in_chans, num_classes=a.num_classes)
    model = timm.create_model(a.model, **kwargs)
    if a.stages is not None:
        truncate(model, a.stages, a.num_classes)
    x = torch.rand(a.batch, a.in_chans, a.res, a.res) * 2 - 1
    y = torch.randint(0, a.num_classes, (a.batch,))
    impl = "pytorch-eager"
    if a.kind == "export":
        model.eval()
        torch.onnx.export(model, x, a.out, input_names=["x"], output_names=["y"], opset_version=17,
                          dynamo=False)
        return 0
    if a.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
        impl = "pytorch-eager-channels-last"

    if a.kind == "train":
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True, weight_decay=5e-5)
        loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)

        def step():
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
    else:
        model.eval()

        def step():
            with torch.inference_mode():
                model(x).sum().item()

    time_and_print(step, a, idle, impl=impl, kind=a.kind, model=a.model, num_classes=a.num_classes,
                   torch=torch.__version__, timm=timm.__version__)


if __name__ == "__main__":
    sys.exit(main())
