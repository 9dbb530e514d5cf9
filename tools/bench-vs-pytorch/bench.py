"""Side-by-side benchmark: rsrefseg (Rust/burn) vs the PyTorch eager reference, same weights, same
inputs, same thread count.

    VENV/bin/python tools/bench-vs-pytorch/bench.py \
        --rsrefseg target/release/rsrefseg --out target/bench-vs-pytorch --reps 5 --threads 2 \
        [--image PATH] [--skip-train] [--torch-only]

Steps (every measured program runs alone, in its own child process, started with
subprocess.Popen and reaped with os.wait4 so that its own peak RSS is known):

1. `rsrefseg config --preset browser` -> OUT/browser.json (and `--preset nano` for training).
2. `torch_side.py make`: random weights of the browser config in the Rust loaders' layouts
   (OUT/weights/...). Reused on a later run when the config and seed are unchanged.
3. `torch_side.py infer` and `rsrefseg bench --pipeline` on the same image and token ids.
4. `torch_side.py train-step` and `rsrefseg bench --train-step` on the nano config.
5. A markdown table (printed, and OUT/results.md) and everything in OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TORCH_SIDE = HERE / "torch_side.py"
# The workplace's shared data sits next to the repository (../shared).
DEFAULT_IMAGE_DIR = HERE.parents[2] / "shared" / "data" / "aerial"
# A non-square photo, so that resizing, padding and cropping all run on both sides.
DEFAULT_IMAGE = "7292.JPG"
# <bos> followed by 15 fixed ids drawn once from [100, 30000) (random.Random(0)); passed verbatim
# to both sides: no BOS/EOS is added, no padding, attention mask all ones.
DEFAULT_TOKEN_IDS = [2, 27770, 12723, 24936, 29271, 13881, 1426, 8584, 16853, 16022, 13368, 25783, 27292, 10038, 15717, 11832]
STAGES = ["preprocess", "siglip_vision", "hiera_fpn", "siglip_text", "prompter", "decoder", "postprocess"]
TRAIN_PHASES = [("forward_ms", "forward"), ("backward_ms", "backward (incl. clipping)"),
                ("optimizer_ms", "optimizer (AdamW)"), ("step_ms", "whole step")]


# ----------------------------------------------------------------------------------------------
# child processes
# ----------------------------------------------------------------------------------------------


def run_child(name, cmd, out_dir: Path, threads=None, capture_stdout=None):
    """Run `cmd` as a child process and return its exit code, wall time and peak RSS.

    os.wait4 returns the rusage of that child alone (the driver's own memory is not mixed in).
    stdout goes to `capture_stdout` when given, else to OUT/logs/<name>.log with stderr."""
    logs = out_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}.log"
    env = dict(os.environ)
    if threads is not None:
        for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
            env[k] = str(threads)
    print(f"[bench] {name}: {' '.join(str(c) for c in cmd)}", flush=True)
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        stdout = open(capture_stdout, "w") if capture_stdout else log
        try:
            p = subprocess.Popen([str(c) for c in cmd], stdout=stdout, stderr=log, env=env)
            _, status, ru = os.wait4(p.pid, 0)
        finally:
            if capture_stdout:
                stdout.close()
    rc = os.waitstatus_to_exitcode(status)
    p.returncode = rc  # already reaped: keep Popen from waiting on it again
    wall = time.perf_counter() - t0
    res = {
        "cmd": [str(c) for c in cmd],
        "rc": rc,
        "wall_s": wall,
        "peak_rss_bytes": ru.ru_maxrss * 1024,  # Linux reports KiB
        "user_s": ru.ru_utime,
        "sys_s": ru.ru_stime,
        "log": str(log_path),
    }
    status_txt = "ok" if rc == 0 else f"FAILED (exit {rc})"
    print(f"[bench] {name}: {status_txt}, {wall:.1f} s, peak RSS {fmt_bytes(res['peak_rss_bytes'])}", flush=True)
    if rc != 0:
        tail = Path(log_path).read_text(errors="replace").splitlines()[-25:]
        print("\n".join("    " + line for line in tail), flush=True)
    return res


def fmt_bytes(n):
    if n is None:
        return "–"
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n} B"


def load_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------------------------


def get_config(preset, override, rsrefseg, out_dir: Path, runs: dict):
    dst = out_dir / f"{preset}.json"
    if override:
        shutil.copyfile(override, dst)
    else:
        if not rsrefseg:
            raise SystemExit(f"--{preset}-config or --rsrefseg is needed to get the {preset} config")
        r = run_child(f"config-{preset}", [rsrefseg, "config", "--preset", preset], out_dir, capture_stdout=dst)
        runs[f"config_{preset}"] = r
        if r["rc"] != 0:
            raise SystemExit(f"`rsrefseg config --preset {preset}` failed")
    json.loads(dst.read_text())  # must be valid JSON
    return dst


def prepare_image(src, out_dir: Path, long_side):
    """Write the benchmark image as PNG into OUT. PNG is lossless, so both programs decode the same
    pixels (two JPEG decoders may differ by ±1). The default image (the first JPEG of the aerial
    set, by name) is resized (OpenCV INTER_AREA) so that its long side is `long_side` (800 unless
    given); a user-given image keeps its size unless --long-side is given."""
    import cv2

    if src is None:
        jpegs = sorted(p for p in DEFAULT_IMAGE_DIR.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
        if not jpegs:
            raise SystemExit(f"no JPEG in {DEFAULT_IMAGE_DIR}; pass --image")
        src = next((p for p in jpegs if p.name == DEFAULT_IMAGE), jpegs[0])
        long_side = long_side or 800
    else:
        src = Path(src)
    img = cv2.imread(str(src), cv2.IMREAD_COLOR)
    if img is None:
        raise SystemExit(f"cannot read {src}")
    h, w = img.shape[:2]
    if long_side and max(h, w) != long_side:
        s = long_side / max(h, w)
        img = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    dst = out_dir / "input.png"
    cv2.imwrite(str(dst), img)
    return dst, str(src), list(img.shape[:2])


def resolve_near(p, json_dir: Path):
    """A mask path from a result JSON: as written, else relative to the JSON's folder."""
    p = Path(p)
    if p.is_absolute() or p.exists():
        return p
    return json_dir / p


def mask_iou(a_path, b_path):
    import cv2
    import numpy as np

    a = cv2.imread(str(a_path), cv2.IMREAD_UNCHANGED)
    b = cv2.imread(str(b_path), cv2.IMREAD_UNCHANGED)
    if a is None or b is None:
        return None
    if a.ndim == 3:
        a = a[..., 0]
    if b.ndim == 3:
        b = b[..., 0]
    if a.shape != b.shape:
        return {"error": f"mask sizes differ: {a.shape} vs {b.shape}"}
    a, b = a > 0, b > 0
    inter, union = int((a & b).sum()), int((a | b).sum())
    return {
        "iou": inter / union if union else 1.0,
        "intersection": inter,
        "union": union,
        "area_pytorch": int(a.sum()),
        "area_rsrefseg": int(b.sum()),
        "pixel_agreement": float((a == b).mean()),
    }


# ----------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------


def _norm_keys(d):
    # Tolerate "siglip-vision" vs "siglip_vision" in the other side's JSON.
    return {k.replace("-", "_"): v for k, v in (d or {}).items()}


def _med(x):
    if isinstance(x, dict):
        return x.get("median")
    return x


def _cell(x):
    if not isinstance(x, dict) or x.get("median") is None:
        return "–"
    return f"{x['median']:.1f} ({x['min']:.1f})"


def _ratio(r, t):
    r, t = _med(r), _med(t)
    if r is None or t is None or t == 0:
        return "–"
    return f"{r / t:.2f}×"


def _pct(a, b):
    a, b = _med(a), _med(b)
    if a is None or not b:
        return "–"
    return f"{100 * a / b:.0f} %"


def make_tables(res):
    L = []
    ti, ri, r8 = res.get("torch_infer"), res.get("rsrefseg_infer"), res.get("rsrefseg_infer_int8")
    a = res["args"]
    if ti or ri:
        L.append(f"## Inference — `browser` config, image {res['image_hw'][0]}×{res['image_hw'][1]}, "
                 f"{a['threads']} threads, {a['reps']} reps (+{a['warmup']} warm-up)")
        L.append("")
        L.append("Times in ms: median (min). Ratio = rsrefseg / PyTorch (fp32) of the medians (< 1: rsrefseg is "
                 "faster). int8: `--precision int8` (int8 products in the encoders, f32 elsewhere).")
        if r8 and r8.get("precision_label"):
            L.append("")
            L.append(f"rsrefseg int8 ran as: {r8['precision_label']}.")
        L.append("")
        L.append("| stage | PyTorch | rsrefseg | ratio | rsrefseg int8 | ratio |")
        L.append("|---|---:|---:|---:|---:|---:|")
        ts, rs = _norm_keys((ti or {}).get("stages_ms")), _norm_keys((ri or {}).get("stages_ms"))
        r8s = _norm_keys((r8 or {}).get("stages_ms"))
        for s in STAGES:
            L.append(f"| {s} | {_cell(ts.get(s))} | {_cell(rs.get(s))} | {_ratio(rs.get(s), ts.get(s))} | "
                     f"{_cell(r8s.get(s))} | {_ratio(r8s.get(s), ts.get(s))} |")
        tf, rf, f8 = (ti or {}).get("full_ms"), (ri or {}).get("full_ms"), (r8 or {}).get("full_ms")
        tq, rq, q8 = (ti or {}).get("requery_ms"), (ri or {}).get("requery_ms"), (r8 or {}).get("requery_ms")
        L.append(f"| **full pipeline** | {_cell(tf)} | {_cell(rf)} | {_ratio(rf, tf)} | {_cell(f8)} | {_ratio(f8, tf)} |")
        L.append(f"| **re-query** (text + prompter + decoder + post) | {_cell(tq)} | {_cell(rq)} | {_ratio(rq, tq)} | "
                 f"{_cell(q8)} | {_ratio(q8, tq)} |")
        L.append(f"| re-query / full | {_pct(tq, tf)} | {_pct(rq, rf)} | | {_pct(q8, f8)} | |")
        L.append("")

    L.append("## Peak memory (each process alone; ru_maxrss from os.wait4)")
    L.append("")
    L.append("| process | peak RSS | weights (fp32) | peak RSS / weights |")
    L.append("|---|---:|---:|---:|")
    for key, label, wkey in [
        ("torch_make", "PyTorch `make` (random init + save)", None),
        ("torch_infer", "PyTorch inference", "torch_infer"),
        ("rsrefseg_infer", "rsrefseg inference", "rsrefseg_infer"),
        ("rsrefseg_infer_int8", "rsrefseg inference, int8 (f32 weights kept)", "rsrefseg_infer_int8"),
        ("torch_train", "PyTorch train step (nano)", "torch_train"),
        ("rsrefseg_train", "rsrefseg train step (nano)", "rsrefseg_train"),
    ]:
        run = res["runs"].get(key)
        if not run:
            continue
        rss = run["peak_rss_bytes"] if run["rc"] == 0 else None
        w = None
        if wkey and res.get(wkey):
            j = res[wkey]
            w = j.get("weights_bytes")
            if w is None and j.get("trainable_params"):
                w = 4 * j["trainable_params"]
        mult = f"{rss / w:.2f}×" if (rss and w) else "–"
        L.append(f"| {label} | {fmt_bytes(rss)} | {fmt_bytes(w)} | {mult} |")
    ti, tt = res.get("torch_infer"), res.get("torch_train")
    if ti and ti.get("peak_rss_after_load_bytes"):
        L.append("")
        L.append(f"PyTorch inference: RSS after importing torch/transformers/sam2 "
                 f"{fmt_bytes(ti.get('rss_after_imports_bytes'))}; after loading the weights "
                 f"{fmt_bytes(ti.get('rss_after_load_bytes'))} (peak so far {fmt_bytes(ti['peak_rss_after_load_bytes'])}); "
                 f"the rest of the peak is activations.")
    if tt and tt.get("rss_after_imports_bytes"):
        L.append(f"PyTorch train step: RSS after imports {fmt_bytes(tt['rss_after_imports_bytes'])}.")
    L.append("")

    if ti or ri:
        L.append("## Mask agreement (same weights, same image and token ids)")
        L.append("")
        L.append("| | PyTorch | rsrefseg |")
        L.append("|---|---:|---:|")
        L.append(f"| mask area (pixels) | {(ti or {}).get('mask_area', '–')} | {(ri or {}).get('mask_area', '–')} |")
        fmt = lambda j: f"{j['iou_pred']:.4f}" if j and j.get("iou_pred") is not None else "–"  # noqa: E731
        L.append(f"| predicted IoU of the selected mask | {fmt(ti)} | {fmt(ri)} |")
        if ti and ti.get("selected_token") is not None:
            sel = (ri or {}).get("selected_token", "–")
            L.append(f"| selected mask token | {ti['selected_token']} | {sel} |")
        if ti and ti.get("stability_token0") is not None:
            rst = (ri or {}).get("stability_token0")
            L.append(f"| stability of mask token 0 (cut 0.98) | {ti['stability_token0']:.4f} | "
                     f"{'–' if rst is None else f'{rst:.4f}'} |")
        if ti and ti.get("near_threshold_frac") is not None:
            L.append(f"| output pixels with abs(logit) < 0.05 | {100 * ti['near_threshold_frac']:.2f} % | |")
        m8 = res.get("mask_compare_int8")
        if m8 and "iou" in m8:
            L.append(f"| IoU between PyTorch's mask and rsrefseg int8's | {m8['iou']:.4f} | "
                     f"(int8 predicted IoU {fmt(r8)}, area {(r8 or {}).get('mask_area', '–')}) |")
        m = res.get("mask_compare")
        if m and "iou" in m:
            L.append(f"| **IoU between the two masks** | {m['iou']:.4f} | (pixel agreement {100 * m['pixel_agreement']:.2f} %) |")
        elif m:
            L.append(f"| IoU between the two masks | {m.get('error')} | |")
        else:
            L.append("| IoU between the two masks | – | |")
        for j in (ti, ri):
            st = (j or {}).get("stability_token0")
            if st is not None and abs(st - 0.98) < 0.005:
                L.append("")
                L.append(f"Note: {j.get('impl')} stability {st:.4f} is within 0.005 of the 0.98 cut; the two sides "
                         "may pick different mask tokens from rounding alone.")
                break
        L.append("")

    tt, rt = res.get("torch_train"), res.get("rsrefseg_train")
    if tt or rt:
        bs = (tt or rt or {}).get("batch_size", a.get("batch_size"))
        L.append(f"## Training step — `nano` config, batch {bs}, {a['threads']} threads, {a['reps']} reps")
        L.append("")
        L.append("| phase | PyTorch | rsrefseg | ratio |")
        L.append("|---|---:|---:|---:|")
        for k, label in TRAIN_PHASES:
            tv, rv = (tt or {}).get(k), (rt or {}).get(k)
            L.append(f"| {label} | {_cell(tv)} | {_cell(rv)} | {_ratio(rv, tv)} |")
        L.append(f"| trainable parameters | {(tt or {}).get('trainable_params', '–')} | "
                 f"{(rt or {}).get('trainable_params', '–')} | |")
        L.append("")
    return "\n".join(L)


# ----------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rsrefseg", help="path of the rsrefseg binary (e.g. target/release/rsrefseg)")
    ap.add_argument("--out", default="target/bench-vs-pytorch")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--image", help="input image (default: ../shared/data/aerial/7292.JPG, long side 800)")
    ap.add_argument("--long-side", type=int, default=None,
                    help="resize the input so its long side is this (default image: 800; --image: unchanged)")
    ap.add_argument("--token-ids", default=",".join(map(str, DEFAULT_TOKEN_IDS)))
    ap.add_argument("--batch-size", type=int, default=2, help="training-step batch size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--skip-infer", action="store_true")
    ap.add_argument("--skip-int8", action="store_true", help="skip the rsrefseg --precision int8 inference run")
    ap.add_argument("--torch-only", action="store_true", help="run only the PyTorch side (no rsrefseg calls)")
    ap.add_argument("--browser-config", help="use this config JSON instead of `rsrefseg config --preset browser`")
    ap.add_argument("--nano-config", help="use this config JSON instead of `rsrefseg config --preset nano`")
    ap.add_argument("--remake", action="store_true", help="rewrite the random weights even if OUT/weights matches")
    ap.add_argument("--python", default=sys.executable, help="interpreter for torch_side.py")
    args = ap.parse_args()

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rs = None
    if not args.torch_only:
        if not args.rsrefseg:
            raise SystemExit("--rsrefseg is required (or --torch-only)")
        rs = str(Path(args.rsrefseg).resolve())
    cfg_bin = rs if rs else (str(Path(args.rsrefseg).resolve()) if args.rsrefseg else None)

    res = {"args": vars(args), "runs": {}, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    runs = res["runs"]
    py = args.python
    T = args.threads

    if not args.skip_infer:
        # --torch-only never runs the Rust binary, so it needs --browser-config.
        browser_cfg = get_config("browser", args.browser_config, None if args.torch_only else cfg_bin, out, runs)
        image, image_src, image_hw = prepare_image(args.image, out, args.long_side)
        res.update(image=str(image), image_source=image_src, image_hw=image_hw, token_ids=args.token_ids)

        wdir = out / "weights"
        info = load_json(wdir / "make_info.json")
        same = (
            info is not None and info.get("seed") == args.seed
            and load_json(wdir / "model.json") == load_json(browser_cfg)
            and all((wdir / f).exists() for f in ("sam2.pt", "prompter.safetensors", "siglip/model.safetensors"))
            # Weights written by an older version of the PyTorch scripts are remade.
            and (wdir / "make_info.json").stat().st_mtime
            > max((HERE / f).stat().st_mtime for f in ("torch_side.py", "torch_rsrefseg.py"))
        )
        if same and not args.remake:
            print(f"[bench] reusing the random weights in {wdir}", flush=True)
            res["weights_reused"] = True
        else:
            runs["torch_make"] = run_child("torch-make", [py, TORCH_SIDE, "make", "--config", browser_cfg,
                                                          "--seed", args.seed, "--out", wdir], out)
            if runs["torch_make"]["rc"] != 0:
                raise SystemExit("torch_side.py make failed")
        res["weights_dir"] = str(wdir)

        tj = out / "torch_infer.json"
        runs["torch_infer"] = run_child("torch-infer", [
            py, TORCH_SIDE, "infer", "--dir", wdir, "--image", image, "--token-ids", args.token_ids,
            "--reps", args.reps, "--warmup", args.warmup, "--threads", T, "--json", tj], out, threads=T)
        res["torch_infer"] = load_json(tj) if runs["torch_infer"]["rc"] == 0 else None

        if rs:
            rj = out / "rsrefseg_infer.json"
            runs["rsrefseg_infer"] = run_child("rsrefseg-infer", [
                rs, "bench", "--pipeline", "--config", wdir / "model.json",
                "--siglip-weights", wdir / "siglip" / "model.safetensors", "--sam-weights", wdir / "sam2.pt",
                "--prompter-weights", wdir / "prompter.safetensors", "--image", image,
                "--token-ids", args.token_ids, "--reps", args.reps, "--warmup", args.warmup,
                "--threads", T, "--json", rj], out, threads=T)
            res["rsrefseg_infer"] = load_json(rj) if runs["rsrefseg_infer"]["rc"] == 0 else None
            if not args.skip_int8:
                rj = out / "rsrefseg_infer_int8.json"
                runs["rsrefseg_infer_int8"] = run_child("rsrefseg-infer-int8", [
                    rs, "bench", "--pipeline", "--precision", "int8", "--config", wdir / "model.json",
                    "--siglip-weights", wdir / "siglip" / "model.safetensors", "--sam-weights", wdir / "sam2.pt",
                    "--prompter-weights", wdir / "prompter.safetensors", "--image", image,
                    "--token-ids", args.token_ids, "--reps", args.reps, "--warmup", args.warmup,
                    "--threads", T, "--json", rj], out, threads=T)
                res["rsrefseg_infer_int8"] = load_json(rj) if runs["rsrefseg_infer_int8"]["rc"] == 0 else None

        ti, ri = res.get("torch_infer"), res.get("rsrefseg_infer")
        if ti and ri and ti.get("mask_png") and ri.get("mask_png"):
            res["mask_compare"] = mask_iou(resolve_near(ti["mask_png"], out), resolve_near(ri["mask_png"], out))
        r8 = res.get("rsrefseg_infer_int8")
        if ti and r8 and ti.get("mask_png") and r8.get("mask_png"):
            res["mask_compare_int8"] = mask_iou(resolve_near(ti["mask_png"], out), resolve_near(r8["mask_png"], out))

    if not args.skip_train:
        nano_cfg = get_config("nano", args.nano_config, None if args.torch_only else cfg_bin, out, runs)
        tj = out / "torch_train.json"
        runs["torch_train"] = run_child("torch-train", [
            py, TORCH_SIDE, "train-step", "--config", nano_cfg, "--batch-size", args.batch_size,
            "--image-size-from-config", "--reps", args.reps, "--warmup", args.warmup, "--threads", T,
            "--seed", args.seed, "--json", tj], out, threads=T)
        res["torch_train"] = load_json(tj) if runs["torch_train"]["rc"] == 0 else None
        if rs:
            rj = out / "rsrefseg_train.json"
            runs["rsrefseg_train"] = run_child("rsrefseg-train", [
                rs, "bench", "--train-step", "--config", "nano", "--batch-size", args.batch_size,
                "--reps", args.reps, "--warmup", args.warmup, "--threads", T, "--json", rj], out, threads=T)
            res["rsrefseg_train"] = load_json(rj) if runs["rsrefseg_train"]["rc"] == 0 else None

    table = make_tables(res)
    res["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    (out / "results.json").write_text(json.dumps(res, indent=1) + "\n")
    (out / "results.md").write_text(table + "\n")
    print()
    print(table)
    failed = [k for k, r in runs.items() if r["rc"] != 0]
    if failed:
        print(f"\n[bench] failed: {', '.join(failed)} (logs in {out / 'logs'})")
        sys.exit(1)


if __name__ == "__main__":
    main()
