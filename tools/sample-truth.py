#!/usr/bin/env python3
"""Attach the generator's ground truth to the page's synthetic samples (web/samples/samples.json).

The synthetic samples are scenes of `rsrefseg synth --out D --n 6 --seed 0`; for each of their
sentences this copies the target mask (COCO RLE, as the generator wrote it) into the sample's
"truth" list, after checking that the sample image is byte-identical to the generated one. The
page test (tests/page-test.mjs) compares the page's mask with it.

    target/release/rsrefseg synth --out target/samples-seed0 --n 6 --seed 0
    python3 tools/sample-truth.py target/samples-seed0 [--model-iou]

With --model-iou it also measures "model_iou": the IoU of the shipped nano model's mask
(models/nano/nano.safetensors, f32, through `rsrefseg eval` on a one-sample dataset) with that
truth, for each sentence.
"""
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

root = Path(__file__).resolve().parent.parent
args = [a for a in sys.argv[1:] if not a.startswith("--")]
data = Path(args[0]) if args else root / "target/samples-seed0"
measure = "--model-iou" in sys.argv[1:]


def model_iou(image: Path, sentence: str, truth: dict) -> float:
    """The shipped nano model's IoU on one sample (gIoU of a one-sample dataset)."""
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        shutil.copy(image, d / "image.png")
        line = {"split": "test", "image_id": 0, "sent": sentence, "file_name": "image.png", "segmentation": truth}
        (d / "test.jsonl").write_text(json.dumps(line) + "\n")
        subprocess.run(
            [str(root / "target/release/rsrefseg"), "eval", "--config", "nano", "--tokenizer",
             str(root / "models/nano/tokenizer.json"), "--weights", str(root / "models/nano/nano.safetensors"),
             "--data", str(d), "--split", "test", "--json", str(d / "eval.json"), "--threads", "1"],
            check=True, capture_output=True)
        return round(json.loads((d / "eval.json").read_text())["giou"], 4)

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
    if measure:
        sample["model_iou"] = [model_iou(index.parent / sample["file"], s, t) for s, t in zip(sample["sentences"], truth)]
        print(sample["file"], sample["model_iou"])

lines = [json.dumps(s, ensure_ascii=False) for s in doc["samples"]]
index.write_text('{\n  "about": ' + json.dumps(doc["about"]) + ',\n  "samples": [\n    ' + ",\n    ".join(lines) + "\n  ]\n}\n")
print(f"truth attached to {sum('truth' in s for s in doc['samples'])} samples in {index}")
