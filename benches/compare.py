#!/usr/bin/env python3
"""Side-by-side speed report: `mnv4-lab bench --json` against PyTorch + timm (default NCHW layout
and channels_last; the faster of the two is the peer) and, for inference, ONNX Runtime, all
interleaved in one run on one machine. Writes this CPU model's section of reports/bench.md and
keeps the sections of other CPU models.

    cargo build --release
    python3 -m venv /tmp/peer && /tmp/peer/bin/pip install torch timm onnxruntime onnx
    /tmp/peer/bin/python benches/compare.py            # updates reports/bench.md

Each configuration runs `--repeats` times per implementation (alternating), and the report keeps
each implementation's best median step time, so a background blip does not decide a ratio.
Memory is the peak resident size minus the process's resident size before the model existed
(for PyTorch: after importing torch and timm), so interpreters and libraries do not count.
"""
import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

BIN = os.environ.get("MNV4_BIN", "./target/release/mnv4-lab")
CONFIGS = [
    # (label, kind, model, res, batch, in_chans, classes, timed steps)
    ("conv-small train 224² b32", "train", "conv-small", 224, 32, 3, 1000, 5),
    ("conv-small train 32² b128 (1 ch, 10 cls)", "train", "conv-small", 32, 128, 1, 10, 9),
    ("hybrid-medium train 224² b32", "train", "hybrid-medium", 224, 32, 3, 1000, 5),
    ("conv-small infer 224² b1", "infer", "conv-small", 224, 1, 3, 1000, 30),
    ("hybrid-medium infer 224² b1", "infer", "hybrid-medium", 224, 1, 3, 1000, 20),
]
TIMM = {"conv-small": "mobilenetv4_conv_small", "hybrid-medium": "mobilenetv4_hybrid_medium"}
# Implementations timed per kind, in the order they alternate.
IMPLS = {
    "train": ["ours", "torch", "torch-cl"],
    "infer": ["ours", "ours-native", "ours-tract", "torch", "torch-cl", "ort-timm", "ort-ours"],
}


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def shape_args(res, batch, ch):
    return ["--res", str(res), "--batch", str(batch), "--in-chans", str(ch)]


def measure(impl, cfg, threads, files):
    """One run of `impl` on `cfg`; `files` holds the configuration's exported ONNX files."""
    _, kind, model, res, batch, ch, cls, steps = cfg
    common = shape_args(res, batch, ch) + ["--steps", str(steps), "--warmup", "2", "--threads", str(threads)]
    if impl in ("ours", "ours-native", "ours-tract"):
        engine = {"ours": [], "ours-native": ["--engine", "native"], "ours-tract": ["--engine", "tract"]}[impl]
        return run_json([BIN, "bench", kind, "--model", model, "--num-classes", str(cls), "--json"]
                        + common + engine)
    if impl in ("torch", "torch-cl"):
        layout = ["--channels-last"] if impl == "torch-cl" else []
        return run_json([sys.executable, "benches/peer_torch.py", kind, "--model", TIMM[model],
                         "--num-classes", str(cls)] + common + layout)
    return run_json([sys.executable, "benches/peer_ort.py", files[impl], "--label", impl] + common)


def export_files(cfg, tmp):
    """timm's and our ONNX files of an inference configuration, with random weights."""
    label, _, model, res, batch, ch, cls, _ = cfg
    stem = os.path.join(tmp, re.sub(r"\W+", "_", label))
    files = {"ort-timm": stem + "_timm.onnx", "ort-ours": stem + "_ours.onnx"}
    subprocess.run([sys.executable, "benches/peer_torch.py", "export", "--model", TIMM[model],
                    "--num-classes", str(cls), "--out", files["ort-timm"]] + shape_args(res, batch, ch),
                   check=True, capture_output=True)
    subprocess.run([BIN, "export", model, "--res", str(res), "--in-chans", str(ch), "--num-classes",
                    str(cls), "-o", files["ort-ours"]], check=True, capture_output=True)
    return files


def cpu():
    """CPU model (name, family and model number: a name such as "AMD EPYC" alone covers several
    generations) and the SIMD features that matter for the kernels."""
    name, ids, flags = "unknown CPU", {}, set()
    try:
        for line in open("/proc/cpuinfo"):
            key = line.split(":", 1)[0].strip()
            if key == "model name":
                name = line.split(":", 1)[1].strip()
            elif key in ("cpu family", "model"):
                ids[key] = line.split(":", 1)[1].strip()
            elif key == "flags":
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    if len(ids) == 2:
        name += f", family {ids['cpu family']} model {ids['model']}"
    wanted = ["sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile"]
    return name, [f for f in wanted if f in flags]


def machine(name, feats, threads):
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{name}, {os.cpu_count()} cores, {mem:.0f} GiB, {platform.system()} {platform.release()}; "
            f"SIMD: {' '.join(feats) or 'none listed'}; {threads} threads per implementation "
            "(tract runs on one)")


def delta_mib(r):
    if not r.get("peak_rss_bytes") or r.get("idle_rss_bytes") is None:
        return "n/a"
    return f"{(r['peak_rss_bytes'] - r['idle_rss_bytes']) / 2**20:.0f}"


def train_table(rows):
    out = ["| configuration | mnv4-lab img/s | PyTorch NCHW img/s | PyTorch channels_last img/s | **ours / best PyTorch** | "
           "memory Δ MiB (ours / NCHW / channels_last) |",
           "|---|---:|---:|---:|---:|---:|"]
    for label, r in rows:
        o, t, c = r["ours"], r["torch"], r["torch-cl"]
        peer = max(t["images_per_sec"], c["images_per_sec"])
        out.append(f"| {label} | {o['images_per_sec']:.1f} | {t['images_per_sec']:.1f} | {c['images_per_sec']:.1f} | "
                   f"**{o['images_per_sec'] / peer:.2f}×** | {delta_mib(o)} / {delta_mib(t)} / {delta_mib(c)} |")
    return out


def infer_table(rows):
    out = ["| configuration | mnv4-lab candle ms | mnv4-lab native ms | mnv4-lab ONNX in tract ms | PyTorch NCHW ms | "
           "PyTorch channels_last ms | ONNX Runtime, timm's ONNX ms | ONNX Runtime, our ONNX ms | "
           "**native / ORT (timm's)** | native / best PyTorch | "
           "memory Δ MiB (candle / native / tract / NCHW / cl / ORT timm / ORT ours) |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, r in rows:
        ms = {k: r[k]["ms_per_step"] for k in IMPLS["infer"]}
        mem = " / ".join(delta_mib(r[k]) for k in IMPLS["infer"])
        cells = " | ".join(f"{ms[k]:.2f}" for k in IMPLS["infer"])
        torch = min(ms["torch"], ms["torch-cl"])
        out.append(f"| {label} | {cells} | **{ms['ours-native'] / ms['ort-timm']:.2f}×** | "
                   f"{ms['ours-native'] / torch:.2f}× | {mem} |")
    return out


def section(name, feats, threads, repeats, seconds, rows, versions):
    train = [(l, r) for l, r in rows if l[1] == "train"]
    infer = [(l, r) for l, r in rows if l[1] == "infer"]
    return "\n".join([
        f"## {name}",
        "",
        f"Machine: {machine(name, feats, threads)}.",
        f"Peers: {versions}. Measured {time.strftime('%Y-%m-%d')}; total run time {seconds:.0f} s.",
        f"Each cell is the best of {repeats} runs (implementations alternating) of the median step time.",
        "",
        "Training (forward, cross-entropy with label smoothing 0.1, backward, SGD-Nesterov update), images/s:",
        "",
        *train_table([(l[0], r) for l, r in train]),
        "",
        "Batch-1 inference (eval mode), ms per image. mnv4-lab runs it three ways: candle (the training path), the native "
        "engine (`bench infer --engine native`: batch norm folded, channels-last kernels with fused epilogues, "
        "runtime AVX2/AVX-512 dispatch) and our ONNX export in tract. The ratios are time over time (lower is better): "
        "the native engine against ONNX Runtime on timm's export, and against the faster PyTorch layout:",
        "",
        *infer_table([(l[0], r) for l, r in infer]),
        "",
    ])


HEADER = """# Speed: mnv4-lab against PyTorch and ONNX Runtime

One section per CPU model, each from one interleaved run of `benches/compare.py` on that machine.
Reproduce: `cargo build --release && /tmp/peer/bin/python benches/compare.py` (the peer venv is in
the script's docstring). Absolute times on a shared machine move by 10–20 % between runs; the
ratios, from interleaved runs, are the figures to compare. Memory Δ is peak resident size minus
the resident size before the model existed, so interpreters and libraries are not counted.
"""


def write_report(path, new_section, name):
    """Replaces `name`'s section of `path` (or adds it), keeping every other CPU model's."""
    sections = {}
    if os.path.exists(path):
        text = open(path).read()
        for part in re.split(r"^(?=## )", text, flags=re.M)[1:]:
            sections[part.splitlines()[0][3:].strip()] = part.rstrip() + "\n"
    sections[name] = new_section
    body = HEADER + "\n" + "\n".join(sections[k] for k in sorted(sections))
    with open(path + ".tmp", "w") as f:
        f.write(body)
    os.replace(path + ".tmp", path)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--out", default="reports/bench.md")
    a = p.parse_args()
    name, feats = cpu()
    started = time.time()
    rows, versions = [], ""
    with tempfile.TemporaryDirectory() as tmp:
        for cfg in CONFIGS:
            files = export_files(cfg, tmp) if cfg[1] == "infer" else {}
            runs = {k: [] for k in IMPLS[cfg[1]]}
            for _ in range(a.repeats):
                for impl in IMPLS[cfg[1]]:
                    runs[impl].append(measure(impl, cfg, a.threads, files))
            best = {k: min(v, key=lambda r: r["ms_per_step"]) for k, v in runs.items()}
            rows.append((cfg, best))
            if "torch" in best and not versions:
                versions = f"PyTorch {best['torch']['torch']} eager with timm {best['torch']['timm']}"
            if "ort-timm" in best:
                versions = versions.split("; ONNX")[0] + f"; ONNX Runtime {best['ort-timm']['onnxruntime']}"
            print(cfg[0], {k: round(v["ms_per_step"], 2) for k, v in best.items()}, file=sys.stderr)
    text = section(name, feats, a.threads, a.repeats, time.time() - started, rows, versions)
    write_report(a.out, text, name)
    print(text)


if __name__ == "__main__":
    main()
