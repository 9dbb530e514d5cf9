#!/usr/bin/env python3
"""Attach the generator's ground truth to the page's synthetic samples (web/samples/samples.json).

The synthetic samples are scenes of `rsrefseg synth --out D --n 6 --seed 0`; for each of their
sentences this copies the target mask (COCO RLE, as the generator wrote it) into the sample's
"truth" list, after checking that the sample image is byte-identical to the generated one. The
page test (tests/page-test.mjs) compares the page's mask with it.

    target/release/rsrefseg synth --out target/samples-seed0 --n 6 --seed 0
    python3 tools/sample-truth.py target/samples-seed0
"""
import hashlib
import json
import sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
data = Path(sys.argv[1]) if len(sys.argv) > 1 else root / "target/samples-seed0"
index = root / "web/samples/samples.json"
rows = [json.loads(l) for split in ("train", "val", "test") for l in open(data / f"{split}.jsonl")]
digest = lambda p: hashlib.sha256(Path(p).read_bytes()).hexdigest()

doc = json.loads(index.read_text())
for sample in doc["samples"]:
    if not sample["file"].startswith("synth-"):
        continue
    want = digest(index.parent / sample["file"])
    truth = []
    for sent in sample["sentences"]:
        hits = [r for r in rows if r["sent"] == sent and digest(data / r["file_name"]) == want]
        if not hits:
            sys.exit(f"{sample['file']}: no generated expression {sent!r} on this image")
        truth.append(hits[0]["segmentation"])
    sample["truth"] = truth

lines = [json.dumps(s, ensure_ascii=False) for s in doc["samples"]]
index.write_text('{\n  "about": ' + json.dumps(doc["about"]) + ',\n  "samples": [\n    ' + ",\n    ".join(lines) + "\n  ]\n}\n")
print(f"truth attached to {sum('truth' in s for s in doc['samples'])} samples in {index}")
