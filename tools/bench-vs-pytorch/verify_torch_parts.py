"""Check the PyTorch side of the benchmark against the golden fixtures made with the authors' code.

1. Prompter: `prompter.safetensors` is loaded strictly into `CascadedPrompter` and run on the
   inputs of `prompter_io.safetensors` (eval mode, and train mode for BatchNorm).
2. Loss head: `rsrefseg_losses` on the `head_in_*` tensors of `loss_io.safetensors` (every
   weighted term, the total, the gradients w.r.t. the head inputs, and the pad255 variant).
3. Whole model (eval): `full_model.safetensors` with LoRA merged (fixture README rules) loaded into
   `RSRefSegTorch` built from an equivalent Rust-style config, run stage by stage on the fixture's
   image and token ids, compared with the intermediates of `full_io.safetensors`.
4. Whole model (train): the training forward on the loss batch of `loss_io.safetensors`
   (losses, and gradients of the non-LoRA parameters).

Only the public stage functions used by `torch_side.py` are exercised, so passing this means the
benchmark's PyTorch side computes what the reference computes. Runs in a few seconds on the CPU.

    VENV/bin/python tools/bench-vs-pytorch/verify_torch_parts.py [--fixtures DIR]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

# Keep the tools folder free of __pycache__ (these scripts are run, not installed).
sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch_rsrefseg as tr  # noqa: E402

DEFAULT_FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "reference"

failures = []


def cmp(name, got, want, atol=1e-4, rtol=1e-4):
    got = got.detach().double()
    want = want.detach().double().reshape(got.shape) if want.numel() == got.numel() else want.detach().double()
    diff = (got - want).abs()
    mx = float(diff.max()) if diff.numel() else 0.0
    scale = float(want.abs().max()) if want.numel() else 0.0
    ok = bool((diff <= atol + rtol * want.abs()).all())
    print(f"  {'ok  ' if ok else 'FAIL'} {name:48s} max|diff| {mx:.3e}  (max|ref| {scale:.3g})")
    if not ok:
        failures.append(name)
    return mx


def tiny_prompter_config(cfg):
    p = cfg["reference_model_config"]["prompter"]
    tc = cfg["tiny_config"]
    return dict(
        clip_dim=p["text_feat_dim"], prompt_dim=p["prompt_feat_dim"], grid=p["imgpe_config"]["size"],
        num_text_queries=p["num_text_queries"], num_prompts=p["num_prompts"], num_heads=p["num_heads"],
        internal_dim=p["internal_dim"], mlp_dim=p["mlp_dim"],
        decomposition_depth=p["two_queries_text_attn_depth"], first_order_depth=p["queries1_to_img_attn_depth"],
        second_order_depth=p["prompt_queries2_img_attn_depth"], text_query_init="text_pool", text_query_pe=True,
        prompt_init="learnable", prompt_pe=True, img_pe=True, dense_prompt=True, layer_norm_eps=1e-5,
    ), tc


def check_prompter(fx: Path, cfg):
    print("[1] CascadedPrompter vs prompter_io.safetensors")
    pcfg, _ = tiny_prompter_config(cfg)
    pr = tr.CascadedPrompter.from_config(pcfg)
    sd = load_file(str(fx / "prompter.safetensors"))
    pr.load_state_dict(sd, strict=True)  # raises on any missing/unexpected key or shape mismatch
    print(f"  strict load of prompter.safetensors: {len(sd)} tensors, keys identical")
    io = load_file(str(fx / "prompter_io.safetensors"))
    args = (io["in_v"], io["in_t_word"], io["in_t_sent"], io["in_logit_scale"], io["in_logit_bias"], int(io["in_mask_size"][0]))
    pr.eval()
    with torch.no_grad():
        out = pr(*args)
    worst = 0.0
    for mine, ref in [
        ("textpool_init", "mid_textpool_init"), ("t1", "out_t1"), ("t2", "out_t2"),
        ("stage1_img_tokens", "mid_stage1_img_tokens"), ("refined_img_feat_map", "out_refined_img_feat_map"),
        ("clip_visual_feat_map", "out_clip_visual_feat_map"), ("sparse_prompts", "out_sparse_prompts"),
        ("dense_conv_out", "mid_dense_conv_out"), ("dense_prompts", "out_dense_prompts"),
    ]:
        worst = max(worst, cmp(ref, out[mine], io[ref]))
    # Train mode: BatchNorm uses the batch statistics and updates its running stats.
    prt = copy.deepcopy(pr).train()
    with torch.no_grad():
        out_t = prt(*args)
    bn = prt.dense_prompt_conv[1]
    worst = max(worst, cmp("train_mid_dense_conv_out", out_t["dense_conv_out"], io["train_mid_dense_conv_out"]))
    worst = max(worst, cmp("train_out_dense_prompts", out_t["dense_prompts"], io["train_out_dense_prompts"]))
    worst = max(worst, cmp("train_bn_running_mean_after", bn.running_mean, io["train_bn_running_mean_after"]))
    worst = max(worst, cmp("train_bn_running_var_after", bn.running_var, io["train_bn_running_var_after"]))
    return worst


def check_loss_head(fx: Path):
    print("[2] loss head vs loss_io.safetensors (head_in_* inputs)")
    io = load_file(str(fx / "loss_io.safetensors"))
    names = ["seg_logits_lowres", "t1", "t2", "clip_visual_feat_map"]
    res = {}
    for variant, gt_key, prefix in [("normal", "in_gt", ""), ("pad255", "pad255_in_gt", "pad255_")]:
        x = {n: io[f"head_in_{n}"].clone().requires_grad_(True) for n in names}
        tau = io["head_in_logit_scale2_tau"].reshape(())
        bias = io["head_in_logit_bias2"].reshape(())
        out = tr.rsrefseg_losses(x["seg_logits_lowres"], io[gt_key], x["t1"], x["t2"], x["clip_visual_feat_map"], tau, bias)
        for k in tr.LOSS_WEIGHTS:
            d = cmp(f"{prefix}weighted_{k}", out[k].reshape(1), io[f"{prefix}weighted_{k}"], atol=1e-6, rtol=1e-5)
            res[f"{prefix}{k}"] = d
        res[f"{prefix}total"] = cmp(f"{prefix}total", out["total"].reshape(1), io[f"{prefix}total"], atol=1e-6, rtol=1e-5)
        if variant == "normal":
            cmp("mid_contrastive_logits_per_image", out["contrastive_logits"], io["mid_contrastive_logits_per_image"])
            out["total"].backward()
            for n in names:
                res[f"grad_{n}"] = cmp(f"head_grad_{n}", x[n].grad, io[f"head_grad_{n}"], atol=1e-6, rtol=1e-4)
    return res


# ---- whole model -------------------------------------------------------------------------------


def tiny_rust_style_config(cfg):
    """The fixture set's sizes in the Rust `--config` layout that `build_model` reads."""
    tc = cfg["tiny_config"]
    s = tc["siglip"]
    h = tc["hiera"]
    pcfg, _ = tiny_prompter_config(cfg)
    common = dict(hidden_size=s["hidden"], intermediate_size=s["intermediate"], num_hidden_layers=s["layers"],
                  num_attention_heads=s["heads"], layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh")
    return {
        "siglip": {
            "text_config": dict(common, vocab_size=s["vocab"], max_position_embeddings=s["max_pos"]),
            "vision_config": dict(common, num_channels=3, image_size=s["image_size"], patch_size=s["patch"]),
            "model_type": "siglip",
        },
        "sam": {
            "hiera": dict(embed_dim=h["embed_dim"], num_heads=h["num_heads"], stages=h["stages"],
                          window_spec=h["window_spec"], global_att_blocks=h["global_att_blocks"],
                          window_pos_embed_bkg_spatial_size=h["window_pos_embed_bkg_spatial_size"]),
            "d_model": tc["sam_d_model"], "image_size": tc["sam_image_size"],
        },
        "prompter": pcfg,
    }


def merged_state_dicts(fx: Path):
    """full_model.safetensors -> (HF SiglipModel sd, SAM image-path sd, prompter sd, decode head sd)
    following the fixture README: W = base + (alpha/r)·B@A (scale 1), prefixes stripped."""
    sd = load_file(str(fx / "full_model.safetensors"))
    merged = {}
    for k, v in sd.items():
        if ".lora_A." in k or ".lora_B." in k:
            continue
        if ".base_layer." in k:
            stem = k.replace(".base_layer.", ".")
            if k.endswith("weight"):
                a = sd.get(k.replace(".base_layer.weight", ".lora_A.default.weight"))
                b = sd.get(k.replace(".base_layer.weight", ".lora_B.default.weight"))
                if a is not None:
                    delta = (b.reshape(b.shape[0], -1) @ a.reshape(a.shape[0], -1)).reshape(v.shape)
                    v = v + delta
            merged[stem] = v
        else:
            merged[k] = v
    sig, sam, pro, head = {}, {}, {}, {}
    for k, v in merged.items():
        if k.startswith("clip_vision_encoder.base_model.model.model."):
            sig["vision_model." + k[len("clip_vision_encoder.base_model.model.model."):]] = v
        elif k.startswith("clip_text_encoder.base_model.model.model."):
            sig["text_model." + k[len("clip_text_encoder.base_model.model.model."):]] = v
        elif k.startswith("clip_text_encoder.base_model.model."):
            sig[k[len("clip_text_encoder.base_model.model."):]] = v
        elif k.startswith("backbone.model."):
            sam[k[len("backbone.model."):].replace("image_encoder.base_model.model.", "image_encoder.")] = v
        elif k.startswith("prompter."):
            pro[k[len("prompter."):]] = v
        elif k.startswith("decode_head."):
            head[k[len("decode_head."):]] = v
        else:
            raise KeyError(k)
    # The README's quirk: the vision MAP head's out_proj LoRA is not applied by the reference.
    for suffix in ("weight", "bias"):
        key = f"clip_vision_encoder.base_model.model.model.head.attention.out_proj.base_layer.{suffix}"
        if key in sd:
            sig[f"vision_model.head.attention.out_proj.{suffix}"] = sd[key]
    return sig, sam, pro, head


def build_fixture_model(fx: Path, cfg):
    rcfg = tiny_rust_style_config(cfg)
    torch.manual_seed(0)
    model = tr.build_model(rcfg)
    sig, sam, pro, head = merged_state_dicts(fx)
    model.siglip.load_state_dict(sig, strict=True)
    model.sam.load_state_dict(sam, strict=True)
    model.prompter.load_state_dict(pro, strict=True)
    model.decode_head.load_state_dict(head, strict=True)
    return model.eval()


def check_full_eval(fx: Path, cfg):
    print("[3] whole model, eval, stage by stage vs full_io.safetensors")
    model = build_fixture_model(fx, cfg)
    io = load_file(str(fx / "full_io.safetensors"))
    img = io["image_rgb_u8"].numpy()
    res = {}
    with torch.no_grad():
        (clip_px, sam_px), meta = model.preprocess(img)
        assert tuple(meta.img_hw) == tuple(io["meta_img_hw"].tolist()), (meta.img_hw, io["meta_img_hw"])
        res["clip_pixel_values"] = cmp("clip_pixel_values", clip_px, io["clip_pixel_values"])
        res["sam_pixel_values"] = cmp("sam_pixel_values", sam_px, io["sam_pixel_values"])
        v = model.siglip_vision(clip_px)
        res["v"] = cmp("v", v, io["v"])
        feats = model.hiera_fpn(sam_px)
        res["sam_feat_s0"] = cmp("sam_feat_s0", feats[0], io["sam_feat_s0"])
        res["sam_feat_s1"] = cmp("sam_feat_s1", feats[1], io["sam_feat_s1"])
        res["sam_image_embed"] = cmp("sam_image_embed", feats[2], io["sam_image_embed"])
        t_word, t_sent = model.siglip_text(io["input_ids"], io["attention_mask"])
        res["t_word"] = cmp("t_word", t_word, io["t_word"])
        res["t_sent"] = cmp("t_sent", t_sent, io["t_sent"])
        pr = model.run_prompter(v, t_word, t_sent)
        for k in ["t1", "t2", "sparse_prompts", "dense_prompts", "refined_img_feat_map"]:
            res[f"prompter_{k}"] = cmp(f"prompter_{k}", pr[k], io[f"prompter_{k}"])
        dense_emb = model.sam.sam_prompt_encoder.mask_downscaling(pr["dense_prompts"])
        res["sam_dense_embed"] = cmp("sam_dense_embed", dense_emb, io["sam_dense_embed"])
        masks, iou, info = model.decoder(feats, pr["sparse_prompts"], pr["dense_prompts"])
        res["dec_all_masks"] = cmp("dec_all_masks", info["all_masks"], io["dec_all_masks"])
        res["dec_all_iou"] = cmp("dec_all_iou", info["all_iou"], io["dec_all_iou"])
        res["dec_selected_mask"] = cmp("dec_selected_mask", masks, io["dec_selected_mask"])
        res["dec_selected_iou"] = cmp("dec_selected_iou", iou, io["dec_selected_iou"])
        stable = int(info["stability_token0"][0] >= 0.98)
        print(f"  stability token0 {float(info['stability_token0'][0]):.4f} (ref {float(io['dec_stability_token0'][0]):.4f}),"
              f" stable {stable} (ref {int(io['dec_is_stable'][0])}), selected token {int(info['selected_token'][0])}")
        if stable != int(io["dec_is_stable"][0]):
            failures.append("dec_is_stable")
        mask, logits = model.postprocess(masks, meta)
        res["final_logits"] = cmp("final_logits", logits, io["final_logits"])
        ref_mask = io["final_mask"][0].bool()
        decided = logits[0, 0].abs() > 1e-3
        mism = int(((mask != ref_mask) & decided).sum())
        print(f"  {'ok  ' if mism == 0 else 'FAIL'} final_mask: {mism} mismatching pixels where |logit| > 1e-3"
              f" (all pixels: {int((mask != ref_mask).sum())}), area {int(mask.sum())} (ref {int(ref_mask.sum())})")
        if mism:
            failures.append("final_mask")
        res["final_mask_mismatch"] = mism
    return res


def check_full_train(fx: Path, cfg):
    print("[4] whole model, train-mode forward + backward vs loss_io.safetensors")
    model = build_fixture_model(fx, cfg)
    model.train()
    io = load_file(str(fx / "loss_io.safetensors"))
    x01 = io["in_images_rgb_u8"].permute(0, 3, 1, 2).float() / 255.0
    out = model.train_forward(x01, io["in_input_ids"], io["in_attention_mask"], io["in_gt"])
    res = {}
    for k in tr.LOSS_WEIGHTS:
        res[k] = cmp(f"weighted_{k}", out[k].reshape(1), io[f"weighted_{k}"], atol=1e-5, rtol=1e-4)
    res["total"] = cmp("total", out["total"].reshape(1), io["total"], atol=1e-5, rtol=1e-4)
    bn = model.prompter.dense_prompt_conv[1]
    cmp("bn_running_mean_after", bn.running_mean, io["bn_running_mean_after"])
    cmp("bn_running_var_after", bn.running_var, io["bn_running_var_after"])
    out["total"].backward()
    params = {
        "grad.backbone.model.no_mem_embed": model.sam.no_mem_embed,
        "grad.backbone.model.sam_mask_decoder.output_hypernetworks_mlps.0.layers.2.weight":
            model.sam.sam_mask_decoder.output_hypernetworks_mlps[0].layers[2].weight,
        "grad.backbone.model.sam_prompt_encoder.mask_downscaling.0.weight":
            model.sam.sam_prompt_encoder.mask_downscaling[0].weight,
        "grad.clip_text_encoder.base_model.model.logit_bias": model.siglip.logit_bias,
        "grad.clip_text_encoder.base_model.model.logit_scale": model.siglip.logit_scale,
        "grad.decode_head.logit_scale2": model.decode_head.logit_scale2,
        "grad.decode_head.logit_bias2": model.decode_head.logit_bias2,
        "grad.prompter.dense_prompt_conv.3.bias": model.prompter.dense_prompt_conv[3].bias,
        "grad.prompter.img_pe": model.prompter.img_pe,
        "grad.prompter.prompt_embedding": model.prompter.prompt_embedding,
        "grad.prompter.sparse_prompt_mlp.layers.0.weight": model.prompter.sparse_prompt_mlp.layers[0].weight,
    }
    for k, p in params.items():
        # Gradients are compared relative to their own scale (fixture README: 1e-4 relative).
        ref = io[k]
        tol = 1e-4 * float(ref.abs().max()) + 1e-7
        res[k] = cmp(k, p.grad.reshape(ref.shape), ref, atol=tol, rtol=1e-4)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixtures", type=Path, default=DEFAULT_FIXTURES)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, help="also write the max differences as JSON")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    fx = args.fixtures
    cfg = json.loads((fx / "config.json").read_text())
    report = {
        "prompter_max_abs_diff": check_prompter(fx, cfg),
        "loss_head": check_loss_head(fx),
        "full_eval": check_full_eval(fx, cfg),
        "full_train": check_full_train(fx, cfg),
        "failures": failures,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    print()
    print(f"prompter max |diff| over all outputs: {report['prompter_max_abs_diff']:.3e}")
    if failures:
        print("FAILED:", ", ".join(failures))
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
