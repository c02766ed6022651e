#!/usr/bin/env python3
"""Checks `mnv4-lab detect map` against pycocotools on shared prediction sets; writes
reports/detect/coco_check.md.

    python3 -m venv /tmp/coco && /tmp/coco/bin/pip install pycocotools
    cargo build --release && /tmp/coco/bin/python scripts/coco_check.py

Ground truth: the validation labels of the default detection set (`mnv4-lab data make-detect`,
seed 0, 96×96 canvases), converted to COCO JSON. Predictions: seeded sets made from it — boxes
jittered around the objects with scores that fall with the error, missed objects, duplicates,
false positives of random classes, scores rounded so that ties occur, and one image with more than
100 detections of one class (COCO keeps 100). Each set is scored by pycocotools' COCOeval and by
mnv4-lab; the report lists both and their largest difference.
"""
import contextlib
import io
import json
import os
import random
import subprocess
import sys
import tempfile

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

sys.path.insert(0, os.path.dirname(__file__))
from study_common import publish  # noqa: E402

BIN = os.environ.get("MNV4_BIN", "./target/release/mnv4-lab")
CANVAS = 96
CLASSES = 10
# (name, seed, jitter as a fraction of the side, miss rate, duplicates, false positives per image)
SETS = [
    ("close", 1, 0.03, 0.05, 0.05, 0.2),
    ("noisy", 2, 0.08, 0.15, 0.20, 1.0),
    ("poor", 3, 0.15, 0.30, 0.30, 3.0),
]


def ground_truth(folder):
    """COCO ground truth from the set's validation labels (class cx cy w h, normalised)."""
    labels = os.path.join(folder, "labels", "val")
    images, anns = [], []
    for k, name in enumerate(sorted(os.listdir(labels))):
        images.append({"id": k + 1, "file_name": name.replace(".txt", ".png"),
                       "width": CANVAS, "height": CANVAS})
        for line in open(os.path.join(labels, name)):
            c, cx, cy, w, h = line.split()
            w, h = float(w) * CANVAS, float(h) * CANVAS
            x, y = float(cx) * CANVAS - w / 2, float(cy) * CANVAS - h / 2
            anns.append({"id": len(anns) + 1, "image_id": k + 1, "category_id": int(c),
                         "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
    cats = [{"id": c, "name": str(c)} for c in range(CLASSES)]
    return {"images": images, "annotations": anns, "categories": cats}


def predictions(gt, seed, jitter, miss, dup, fp):
    rng = random.Random(seed)
    out = []

    def add(image, cat, box, score):
        x, y, w, h = box
        out.append({"image_id": image, "category_id": cat,
                    "bbox": [round(x, 3), round(y, 3), round(max(w, 0.5), 3), round(max(h, 0.5), 3)],
                    "score": round(score, 2)})

    for a in gt["annotations"]:
        for _ in range(1 + (rng.random() < dup)):
            if rng.random() < miss:
                continue
            x, y, w, h = a["bbox"]
            e = [rng.gauss(0, jitter) for _ in range(4)]
            box = [x + e[0] * w, y + e[1] * h, w * (1 + e[2]), h * (1 + e[3])]
            add(a["image_id"], a["category_id"], box, max(0.01, 1 - sum(abs(v) for v in e) + rng.gauss(0, 0.1)))
    for im in gt["images"]:
        n = int(fp) + (rng.random() < fp - int(fp))
        for _ in range(n):
            w, h = rng.uniform(8, 40), rng.uniform(8, 40)
            add(im["id"], rng.randrange(CLASSES), [rng.uniform(0, CANVAS - w), rng.uniform(0, CANVAS - h), w, h],
                rng.uniform(0.01, 0.6))
    first = gt["annotations"][0]
    for _ in range(120):  # more than COCO's 100 per image and class
        x, y, w, h = first["bbox"]
        add(first["image_id"], first["category_id"], [x + rng.uniform(-6, 6), y + rng.uniform(-6, 6), w, h],
            rng.uniform(0.01, 0.99))
    return out


def pycocotools_metrics(gt_path, pred_path):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_path)
        e = COCOeval(gt, gt.loadRes(pred_path), "bbox")
        e.evaluate()
        e.accumulate()
        e.summarize()
    return {"map": e.stats[0], "map50": e.stats[1], "map75": e.stats[2]}


def main():
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "det")
        subprocess.run([BIN, "data", "make-detect", "--out", folder, "--train", "1", "--val", "500"],
                       check=True, capture_output=True)
        gt = ground_truth(folder)
        gt_path = os.path.join(tmp, "gt.json")
        json.dump(gt, open(gt_path, "w"))
        rows, worst = [], 0.0
        for name, seed, *knobs in SETS:
            pred = predictions(gt, seed, *knobs)
            pred_path = os.path.join(tmp, f"{name}.json")
            json.dump(pred, open(pred_path, "w"))
            theirs = pycocotools_metrics(gt_path, pred_path)
            ours = json.loads(subprocess.run([BIN, "detect", "map", "--gt", gt_path, "--pred", pred_path, "--json"],
                                             check=True, capture_output=True, text=True).stdout)
            diff = max(abs(ours[k] - theirs[k]) for k in theirs)
            worst = max(worst, diff)
            rows.append(f"| {name} (seed {seed}) | {len(pred):,} | {theirs['map']:.6f} | {ours['map']:.6f} |"
                        f" {theirs['map50']:.6f} | {ours['map50']:.6f} | {theirs['map75']:.6f} | {ours['map75']:.6f} | {diff:.1e} |")
    lines = [
        "# COCO box mAP: mnv4-lab against pycocotools",
        "",
        "Reproduce: `python3 -m venv /tmp/coco && /tmp/coco/bin/pip install pycocotools`, then"
        " `cargo build --release && /tmp/coco/bin/python scripts/coco_check.py`.",
        "",
        f"Ground truth: the validation labels of the default detection set (`mnv4-lab data make-detect --val 500`,"
        f" seed 0): {len(gt['images'])} images, {len(gt['annotations'])} objects, {CLASSES} classes. Each prediction set"
        " jitters the objects' boxes (scores fall with the error), misses and duplicates some, adds false positives"
        " of random classes, rounds scores to two decimals (ties) and puts 120 detections of one class on one image"
        " (COCO keeps the best 100). pycocotools' `COCOeval` (bbox) and `mnv4-lab detect map` score the same files.",
        "",
        "| predictions | detections | mAP50-95 pycocotools | mAP50-95 ours | mAP50 pycocotools | mAP50 ours |"
        " mAP75 pycocotools | mAP75 ours | largest difference |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"Largest difference over every set and metric: {worst:.1e}"
        + (" (equal up to floating-point summation order)." if worst < 1e-9 else " — they DIFFER."),
        "",
    ]
    os.makedirs("reports/detect", exist_ok=True)
    publish("reports/detect/coco_check.md", lines)
    if worst >= 1e-9:
        sys.exit("mnv4-lab detect map differs from pycocotools")


if __name__ == "__main__":
    main()
