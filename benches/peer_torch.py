#!/usr/bin/env python3
"""Peer measurement for `mnv4-lab bench`: the same step in PyTorch + timm (and ONNX Runtime
for inference). Prints one JSON object per line, with the same fields as `mnv4-lab bench --json`.

    python3 benches/peer_torch.py train --model mobilenetv4_conv_small --res 32 --batch 128 \
        --in-chans 1 --num-classes 10 --steps 5 --threads 2

Needs torch and timm (and onnxruntime + onnx for --onnx); they are measuring tools only,
never a dependency of mnv4-lab.
"""
import argparse
import json
import resource
import statistics
import sys
import tempfile
import time


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main():
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=["train", "infer"])
    p.add_argument("--model", default="mobilenetv4_conv_small")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--res", type=int, default=224)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--in-chans", type=int, default=3)
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--onnx", action="store_true", help="inference through ONNX Runtime")
    a = p.parse_args()

    import torch
    import timm

    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    kwargs = dict(in_chans=a.in_chans, num_classes=a.num_classes)
    model = timm.create_model(a.model, **kwargs)
    x = torch.rand(a.batch, a.in_chans, a.res, a.res) * 2 - 1
    y = torch.randint(0, a.num_classes, (a.batch,))
    impl = "pytorch-eager"

    if a.kind == "train":
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True, weight_decay=5e-5)
        loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)

        def step():
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
    elif a.onnx:
        import onnxruntime as ort

        model.eval()
        impl = "onnxruntime"
        path = tempfile.NamedTemporaryFile(suffix=".onnx", delete=False).name
        torch.onnx.export(model, x, path, input_names=["x"], output_names=["y"], opset_version=17, dynamo=False)
        so = ort.SessionOptions()
        so.intra_op_num_threads = a.threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        xn = x.numpy()

        def step():
            sess.run(None, {"x": xn})
    else:
        model.eval()

        def step():
            with torch.inference_mode():
                model(x).sum().item()

    for _ in range(a.warmup):
        step()
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    times.sort()
    med = times[len(times) // 2]
    print(json.dumps({
        "impl": impl,
        "kind": a.kind,
        "model": a.model,
        "res": [a.res, a.res],
        "batch": a.batch,
        "in_chans": a.in_chans,
        "num_classes": a.num_classes,
        "steps": a.steps,
        "images_per_sec": a.batch / med,
        "ms_per_step": med * 1e3,
        "ms_min": times[0] * 1e3,
        "ms_max": times[-1] * 1e3,
        "peak_rss_bytes": peak_rss_bytes(),
        "threads": a.threads,
        "torch": torch.__version__,
        "timm": timm.__version__,
    }))


if __name__ == "__main__":
    sys.exit(main())
