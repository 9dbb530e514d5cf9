#!/usr/bin/env python3
"""The IoU a perfect low-resolution answer can reach on a referring split: the resolution ceiling
of SAM's mask output (README "The shipped nano model").

SAM answers with logits on an m x m grid (m = 64 for nano: 4 x its 16 x 16 image embedding) that
are upsampled bilinearly to the image and thresholded at 0. The best such answer for a ground-truth
mask is its coverage of each cell (area average) minus 0.5: this script upsamples that map the
way the post-processing does (bilinear, half-pixel centres, edges clamped), thresholds it and
reports the mean IoU with the ground truth, overall and per category. Square images whose side is
a multiple of m only (the synthetic benchmark: 256 x 256).

    python3 tools/mask-ceiling.py target/nano-stages/test-data [--split test] [--cells 64]

Needs numpy.
"""
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def rle_counts(s: str) -> list:
    """COCO's compressed RLE string -> run lengths."""
    counts, p = [], 0
    data = s.encode()
    while p < len(data):
        x, k, more = 0, 0, True
        while more:
            c = data[p] - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def decode(seg: dict) -> np.ndarray:
    h, w = seg["size"]
    flat = np.zeros(h * w, np.uint8)
    pos, value = 0, 0
    for c in rle_counts(seg["counts"]):
        flat[pos:pos + c] = value
        pos += c
        value ^= 1
    return flat.reshape(w, h).T  # COCO RLE runs down the columns


def upsample_axis(n_out: int, n_in: int) -> np.ndarray:
    """[n_out, n_in] bilinear weights, half-pixel centres, edges clamped."""
    scale = n_in / n_out
    src = np.clip((np.arange(n_out) + 0.5) * scale - 0.5, 0, n_in - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), lo] += 1 - frac
    m[np.arange(n_out), hi] += frac
    return m


def main() -> None:
    args = [a for a in sys.argv[1:]]
    split, cells = "test", 64
    if "--split" in args:
        i = args.index("--split")
        split = args[i + 1]
        del args[i:i + 2]
    if "--cells" in args:
        i = args.index("--cells")
        cells = int(args[i + 1])
        del args[i:i + 2]
    if len(args) != 1:
        sys.exit(__doc__)
    ious, per_category = [], defaultdict(list)
    for line in open(Path(args[0]) / f"{split}.jsonl"):
        r = json.loads(line)
        gt = decode(r["segmentation"]).astype(np.float64)
        h, w = gt.shape
        if h != w or h % cells:
            sys.exit(f"{r['file_name']}: {w}x{h} is not a square with a side multiple of {cells}")
        f = h // cells
        coverage = gt.reshape(cells, f, cells, f).mean(axis=(1, 3))
        up = upsample_axis(h, cells)
        answer = up @ (coverage - 0.5) @ up.T > 0
        truth = gt > 0
        union = (answer | truth).sum()
        iou = (answer & truth).sum() / union if union else 1.0
        ious.append(iou)
        per_category[r.get("category_name", "?")].append(iou)
    print(f"{len(ious)} samples, {cells}x{cells} answers: mean IoU {np.mean(ious):.3f}")
    for c, v in sorted(per_category.items()):
        print(f"  {c}: {np.mean(v):.3f} ({len(v)})")


if __name__ == "__main__":
    main()
