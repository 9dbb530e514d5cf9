"""PyTorch eager implementation of RSRefSeg 2, used as the reference side of the benchmark.

Library parts are used as they are: Hugging Face `SiglipModel` (both towers) and Meta's `sam2`
package (`build_sam2` + hydra overrides; only the image path is kept: image encoder, prompt
encoder, mask decoder, `no_mem_embed`). The parts that live only in the authors' repository are
re-implemented here after `docs/reference.md`:

* `CascadedPrompter` (§3) with the authors' module names, so its `state_dict` has exactly the keys
  of `CascadedPrompter.state_dict()` and loads `prompter.safetensors` strictly;
* the loss head (§6): 5·BCE + 5·Dice + 0.5·orthogonality + 0.5·sample contrastive, with the decode
  head's own learnable scalars `logit_scale1/2`, `logit_bias1/2`;
* `RSRefSegTorch`, the whole model with `forward` split into the stages that are timed:
  preprocess, siglip_vision, hiera_fpn, siglip_text, prompter, decoder, postprocess.

The configuration is the JSON of the Rust CLI's `--config` (`{"siglip", "sam", "prompter", ...}`).
`tools/bench-vs-pytorch/verify_torch_parts.py` checks this file against the golden fixtures made
with the authors' own code.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SAM2_YAML = "configs/sam2.1/sam2.1_hiera_t.yaml"

# ----------------------------------------------------------------------------------------------
# Cascaded second-order referring prompter (reference §3)
# ----------------------------------------------------------------------------------------------


class Attn(nn.Module):
    """SAM-style attention: biased q/k/v/out projections through an `internal_dim` bottleneck,
    no mask, no dropout. Positional embeddings are added by the caller (to q and k only)."""

    def __init__(self, q_dim: int, kv_dim: int, internal_dim: int, num_heads: int):
        super().__init__()
        assert internal_dim % num_heads == 0
        self.num_heads = num_heads
        self.q_proj = nn.Linear(q_dim, internal_dim)
        self.k_proj = nn.Linear(kv_dim, internal_dim)
        self.v_proj = nn.Linear(kv_dim, internal_dim)
        self.out_proj = nn.Linear(internal_dim, q_dim)

    def _heads(self, x):
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q, k, v):
        q = self._heads(self.q_proj(q))
        k = self._heads(self.k_proj(k))
        v = self._heads(self.v_proj(v))
        # SDPA is PyTorch's fastest exact eager path; it computes softmax(QK^T/sqrt(d))V.
        out = F.scaled_dot_product_attention(q, k, v)
        b, h, n, d = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * d))


class Mlp(nn.Module):
    """Linear -> exact (erf) GELU -> Linear; the names `layers.0`/`layers.1` are the authors'."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(dim, hidden), nn.Linear(hidden, dim)])

    def forward(self, x):
        return self.layers[1](F.gelu(self.layers[0](x)))


def _add(x, pe):
    return x if pe is None else x + pe


class DecompositionBlock(nn.Module):
    """Referring semantic decomposition block (operation order of the released configs): a
    post-norm block that updates the two query sets q1, q2 in turn."""

    def __init__(self, d1, internal, heads, mlp, eps):
        super().__init__()
        A = lambda: Attn(d1, d1, internal, heads)  # noqa: E731
        self.self_attn_query_query1 = A()
        self.self_attn_query_query2 = A()
        self.cross_attn_query_text_query1_text = A()
        self.cross_attn_query_text_query2_text = A()
        self.cross_attn_query_query_query1_query2 = A()
        self.cross_attn_query_query_query2_query1 = A()
        for q in (1, 2):
            for i in range(1, 6):
                setattr(self, f"norm_query{q}_{i}", nn.LayerNorm(d1, eps=eps))
            for i in (2, 3):
                setattr(self, f"mlp_query{q}_{i}", Mlp(d1, mlp))

    def forward(self, q1, q2, tw, p1, p2):
        a = _add(q1, p1)
        q1 = self.norm_query1_1(q1 + self.self_attn_query_query1(a, a, q1))
        a = _add(q2, p2)
        q2 = self.norm_query2_1(q2 + self.self_attn_query_query2(a, a, q2))
        q1 = self.norm_query1_2(q1 + self.cross_attn_query_text_query1_text(_add(q1, p1), tw, tw))
        q1 = self.norm_query1_3(q1 + self.mlp_query1_2(q1))
        q2 = self.norm_query2_2(q2 + self.cross_attn_query_text_query2_text(_add(q2, p2), tw, tw))
        q2 = self.norm_query2_3(q2 + self.mlp_query2_2(q2))
        q1 = self.norm_query1_4(q1 + self.cross_attn_query_query_query1_query2(_add(q1, p1), _add(q2, p2), q2))
        q1 = self.norm_query1_5(q1 + self.mlp_query1_3(q1))
        # q2 attends to the q1 just updated above (the reference's order).
        q2 = self.norm_query2_4(q2 + self.cross_attn_query_query_query2_query1(_add(q2, p2), _add(q1, p1), q1))
        q2 = self.norm_query2_5(q2 + self.mlp_query2_3(q2))
        return q1, q2


class FirstOrderBlock(nn.Module):
    """Stage 1: the text queries t1 refine themselves, then the image tokens attend to them."""

    def __init__(self, d1, internal, heads, mlp, eps):
        super().__init__()
        self.self_attn_text_text_1 = Attn(d1, d1, internal, heads)
        self.cross_attn_img_text_1 = Attn(d1, d1, internal, heads)
        self.norm_text_1 = nn.LayerNorm(d1, eps=eps)
        self.norm_img_1 = nn.LayerNorm(d1, eps=eps)
        self.norm_img_2 = nn.LayerNorm(d1, eps=eps)
        self.mlp_img_1 = Mlp(d1, mlp)

    def forward(self, x, a, g, p1):
        ap = _add(a, p1)
        a = self.norm_text_1(a + self.self_attn_text_text_1(ap, ap, a))
        x = self.norm_img_1(x + self.cross_attn_img_text_1(_add(x, g), _add(a, p1), a))
        x = self.norm_img_2(x + self.mlp_img_1(x))
        return x, a


class SecondOrderBlock(nn.Module):
    """Stage 2 + sparse prompt generation, interleaved in one block as in the code (the prompts
    of block k read the image tokens after block k's second-order update)."""

    def __init__(self, d1, d2, internal, heads, mlp, eps):
        super().__init__()
        self.self_attn_text_1 = Attn(d1, d1, internal, heads)
        self.cross_attn_img_text_1 = Attn(d1, d1, internal, heads)
        self.self_attn_prompt_1 = Attn(d2, d2, internal, heads)
        self.cross_attn_prompt_text_1 = Attn(d2, d1, internal, heads)
        self.cross_attn_prompt_img_1 = Attn(d2, d1, internal, heads)
        self.norm_text_1 = nn.LayerNorm(d1, eps=eps)
        self.norm_img_1 = nn.LayerNorm(d1, eps=eps)
        self.norm_img_2 = nn.LayerNorm(d1, eps=eps)
        for i in range(1, 6):
            setattr(self, f"norm_prompt_{i}", nn.LayerNorm(d2, eps=eps))
        self.mlp_img_1 = Mlp(d1, mlp)
        self.mlp_prompt_2 = Mlp(d2, mlp)
        self.mlp_prompt_3 = Mlp(d2, mlp)

    def forward(self, x, b, p, g, p2, q):
        bp = _add(b, p2)
        b = self.norm_text_1(b + self.self_attn_text_1(bp, bp, b))
        bp = _add(b, p2)
        x = self.norm_img_1(x + self.cross_attn_img_text_1(_add(x, g), bp, b))
        x = self.norm_img_2(x + self.mlp_img_1(x))
        pq = _add(p, q)
        p = self.norm_prompt_1(p + self.self_attn_prompt_1(pq, pq, p))
        p = self.norm_prompt_2(p + self.cross_attn_prompt_text_1(_add(p, q), bp, b))
        p = self.norm_prompt_3(p + self.mlp_prompt_2(p))
        p = self.norm_prompt_4(p + self.cross_attn_prompt_img_1(_add(p, q), _add(x, g), x))
        p = self.norm_prompt_5(p + self.mlp_prompt_3(p))
        return x, b, p


class CascadedPrompter(nn.Module):
    """The cascaded second-order referring prompter (reference §3.3), parameter names as in the
    authors' `CascadedPrompter` so that `state_dict()` matches their checkpoints key for key."""

    def __init__(
        self,
        clip_dim: int,
        prompt_dim: int,
        grid: int,
        num_text_queries: int = 3,
        num_prompts: int = 9,
        num_heads: int = 8,
        internal_dim: int = 512,
        mlp_dim: int = 512,
        decomposition_depth: int = 2,
        first_order_depth: int = 2,
        second_order_depth: int = 2,
        text_query_init: str = "text_pool",
        text_query_pe: bool = True,
        prompt_init: str = "learnable",
        prompt_pe: bool = True,
        img_pe: bool = True,
        dense_prompt: bool = True,
        layer_norm_eps: float = 1e-5,
    ):
        super().__init__()
        if text_query_init not in ("text_pool", "textpool"):
            raise NotImplementedError(f"text_query_init={text_query_init!r} (released configs use text_pool)")
        if prompt_init != "learnable":
            raise NotImplementedError(f"prompt_init={prompt_init!r} (released configs use learnable)")
        d1, d2 = clip_dim, prompt_dim
        self.num_text_queries = num_text_queries
        self.grid = grid
        # The reference leaves every tensor at its PyTorch default init (init_weights is a no-op);
        # its PEs and learnable prompts are torch.randn.
        if text_query_pe:
            self.text_query_pe_embedding1 = nn.Parameter(torch.randn(num_text_queries, d1))
            self.text_query_pe_embedding2 = nn.Parameter(torch.randn(num_text_queries, d1))
        else:
            self.text_query_pe_embedding1 = self.text_query_pe_embedding2 = None
        self.img_pe = nn.Parameter(torch.randn(1, d1, grid, grid)) if img_pe else None
        self.prompt_pe_embedding = nn.Parameter(torch.randn(num_prompts, d2)) if prompt_pe else None
        self.prompt_embedding = nn.Parameter(torch.randn(num_prompts, d2))
        eps = layer_norm_eps
        self.two_queries_text_attn_layers = nn.ModuleList(
            [DecompositionBlock(d1, internal_dim, num_heads, mlp_dim, eps) for _ in range(decomposition_depth)]
        )
        self.queries1_to_img_attn_layers = nn.ModuleList(
            [FirstOrderBlock(d1, internal_dim, num_heads, mlp_dim, eps) for _ in range(first_order_depth)]
        )
        self.prompt_queries2_img_attn_layers = nn.ModuleList(
            [SecondOrderBlock(d1, d2, internal_dim, num_heads, mlp_dim, eps) for _ in range(second_order_depth)]
        )
        self.sparse_prompt_mlp = Mlp(d2, mlp_dim)
        if dense_prompt:
            # "V-soft" head: conv3x3 d1->d1/2, BatchNorm, GELU, conv3x3 d1/2->d1 (indices 0,1,3).
            self.dense_prompt_conv = nn.Sequential(
                nn.Conv2d(d1, d1 // 2, 3, padding=1),
                nn.BatchNorm2d(d1 // 2),
                nn.GELU(),
                nn.Conv2d(d1 // 2, d1, 3, padding=1),
            )
        else:
            self.dense_prompt_conv = None

    @classmethod
    def from_config(cls, p: dict) -> "CascadedPrompter":
        keys = (
            "clip_dim prompt_dim grid num_text_queries num_prompts num_heads internal_dim mlp_dim "
            "decomposition_depth first_order_depth second_order_depth text_query_init text_query_pe "
            "prompt_init prompt_pe img_pe dense_prompt layer_norm_eps"
        ).split()
        return cls(**{k: p[k] for k in keys if k in p})

    def forward(self, clip_visual_feat, clip_text_feat, clip_text_feat_pooler, logit_scale, logit_bias, mask_size):
        """clip_visual_feat (B, g*g, d1) SigLIP vision last_hidden_state (row-major grid);
        clip_text_feat (B, L, d1) SigLIP text last_hidden_state (all positions);
        clip_text_feat_pooler (B, d1) SigLIP text pooler_output;
        logit_scale, logit_bias: SigLIP's scalars (the dense prompt is cos·exp(scale)+bias);
        mask_size: SAM's mask-input size M (the dense prompt is produced at M×M)."""
        v, tw, ts = clip_visual_feat, clip_text_feat, clip_text_feat_pooler
        B, N, C = v.shape
        g = int(round(math.sqrt(N)))
        assert g * g == N, "the SigLIP grid must be square"
        out = {"clip_visual_feat_map": v.transpose(1, 2).reshape(B, C, g, g)}

        # ---- referring semantic decomposition ----
        # adaptive average pooling over the token axis: bin i = [floor(iL/n), ceil((i+1)L/n)).
        pooled = F.adaptive_avg_pool1d(tw.transpose(1, 2), self.num_text_queries).transpose(1, 2)
        out["textpool_init"] = pooled
        p1, p2 = self.text_query_pe_embedding1, self.text_query_pe_embedding2
        q1, q2 = pooled, pooled
        for blk in self.two_queries_text_attn_layers:
            q1, q2 = blk(q1, q2, tw, p1, p2)
        out["t1"], out["t2"] = q1, q2

        if self.img_pe is not None:
            pe = self.img_pe
            if pe.shape[-1] != g:
                # Only when the SigLIP grid differs from the trained one (reference §15).
                pe = F.interpolate(pe, size=(g, g), mode="bicubic", align_corners=True)
            G = pe.flatten(2).transpose(1, 2)
        else:
            G = None

        # ---- first-order interaction: the image tokens attend to the refined t1 ----
        x, a = v, q1
        for blk in self.queries1_to_img_attn_layers:
            x, a = blk(x, a, G, p1)
        out["stage1_img_tokens"] = x

        # ---- second-order interaction + sparse prompts (t2 starts un-refined) ----
        b = q2
        p = self.prompt_embedding.unsqueeze(0).expand(B, -1, -1)
        Q = self.prompt_pe_embedding
        for blk in self.prompt_queries2_img_attn_layers:
            x, b, p = blk(x, b, p, G, p2, Q)
        out["refined_img_feat_map"] = x.transpose(1, 2).reshape(B, C, g, g)
        out["sparse_prompts"] = self.sparse_prompt_mlp(p)

        # ---- dense prompt: conv head, pre-upsampling, cosine with the pooled text ----
        if self.dense_prompt_conv is not None:
            f = self.dense_prompt_conv(out["refined_img_feat_map"])
            out["dense_conv_out"] = f
            f = F.interpolate(f, size=(mask_size, mask_size), mode="bilinear", align_corners=True)
            f = F.normalize(f, dim=1)
            t = F.normalize(ts, dim=-1)
            cos = torch.einsum("bchw,bc->bhw", f, t).unsqueeze(1)
            out["dense_prompts"] = cos * logit_scale.exp().reshape(-1, 1, 1, 1) + logit_bias.reshape(-1, 1, 1, 1)
        else:
            out["dense_prompts"] = None
        return out


# ----------------------------------------------------------------------------------------------
# Loss head (reference §6)
# ----------------------------------------------------------------------------------------------

LOSS_WEIGHTS = {
    "loss_ce": 5.0,
    "loss_dice": 5.0,
    "loss_text_queries1_queries2": 0.5,
    "loss_perbatch_refined_img_feat_map_perbatch": 0.5,
}


class DecodeHead(nn.Module):
    """The decode head's learnable scalars (0-d, as in the checkpoint). Only τ = logit_scale2 and
    β = logit_bias2 enter the released loss (sample contrastive); scale1/bias1 belong to the unused
    per-image alignment term but are trainable parameters of the reference all the same."""

    def __init__(self):
        super().__init__()
        tau, beta = math.log(1 / 0.07), math.log(0.5)
        self.logit_scale1 = nn.Parameter(torch.tensor(tau))
        self.logit_bias1 = nn.Parameter(torch.tensor(beta))
        self.logit_scale2 = nn.Parameter(torch.tensor(tau))
        self.logit_bias2 = nn.Parameter(torch.tensor(beta))


def rsrefseg_losses(seg_lowres, gt, t1, t2, v_map, tau, bias, ignore_index=255, weights=LOSS_WEIGHTS):
    """Released loss: 5·BCE + 5·Dice + 0.5·ortho(t1, t2) + 0.5·sample contrastive(v, gt, t2).

    seg_lowres (B, 1, M, M) mask logits (token 0 in training); gt (B, 1, S, S) or (B, S, S) labels
    in {0, 1} (255 = padding); v_map (B, C, g, g) the raw SigLIP map; tau/bias the decode head's
    logit_scale2/logit_bias2. Returns the four weighted terms and `total`.
    """
    if gt.dim() == 3:
        gt = gt.unsqueeze(1)
    S = gt.shape[-2:]
    z = F.interpolate(seg_lowres, size=S, mode="bilinear", align_corners=False)
    y = gt.float()
    valid = (gt != ignore_index).float()
    # mmseg CrossEntropyLoss(use_sigmoid): ignored pixels get weight 0 but stay in the mean.
    bce = (F.binary_cross_entropy_with_logits(z, y * valid, reduction="none") * valid).mean()
    # Dice (V-Net form, eps 1e-3 on both squared sums); the modified mmseg copy uses y as a
    # value, so 255 padding counts as 255 here (reference §6, fixture README "pad255").
    p = z.sigmoid().flatten(1)
    yf = y.flatten(1)
    dice = (1 - 2 * (p * yf).sum(1) / ((p * p).sum(1) + 1e-3 + (yf * yf).sum(1) + 1e-3)).mean()
    # Orthogonality between the two decomposed query sets.
    u = F.normalize(t1.mean(1), dim=-1)
    w = F.normalize(t2.mean(1), dim=-1)
    ortho = ((u * w).sum(-1) ** 2).mean()
    # Sample contrastive: masked mean of the raw SigLIP map vs the mean of t2.
    g = v_map.shape[-2:]
    yg = (F.interpolate(y, size=g, mode="bilinear", align_corners=True) > 0.5).to(v_map.dtype)
    r = F.normalize((v_map * yg).mean(dim=(2, 3)), dim=-1)
    s = F.normalize(t2.mean(1), dim=-1)
    logits = tau.exp() * r @ s.t() + bias
    target = torch.arange(logits.shape[0], device=logits.device)
    contr = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
    out = {
        "loss_ce": weights["loss_ce"] * bce,
        "loss_dice": weights["loss_dice"] * dice,
        "loss_text_queries1_queries2": weights["loss_text_queries1_queries2"] * ortho,
        "loss_perbatch_refined_img_feat_map_perbatch": weights["loss_perbatch_refined_img_feat_map_perbatch"]
        * contr,
        "contrastive_logits": logits,
    }
    out["total"] = sum(out[k] for k in weights)
    return out


# ----------------------------------------------------------------------------------------------
# Weights I/O
# ----------------------------------------------------------------------------------------------

_ST_DTYPES = {
    "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


def read_safetensors(path) -> dict:
    """Read a safetensors file with plain reads into freshly allocated tensors. The library reader
    maps the file, and the touched pages would count in the process's peak RSS on top of the
    tensors (the benchmark compares peak RSS), so the bytes are copied straight from the file."""
    out = {}
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        base = 8 + n
        items = sorted(((k, v) for k, v in header.items() if k != "__metadata__"), key=lambda kv: kv[1]["data_offsets"][0])
        for k, v in items:
            dt = _ST_DTYPES[v["dtype"]]
            a, b = v["data_offsets"]
            t = torch.empty(v["shape"], dtype=dt)
            if b > a:
                f.seek(base + a)
                buf = t.view(-1).view(torch.uint8) if t.dim() > 0 else t.reshape(1).view(torch.uint8)
                assert buf.numel() == b - a, k
                f.readinto(memoryview(buf.numpy()))
            out[k] = t
    return out


def write_safetensors(path, tensors: dict):
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(path), metadata={"format": "pt"})


# ----------------------------------------------------------------------------------------------
# SigLIP and SAM 2.1 from the Rust config
# ----------------------------------------------------------------------------------------------


def siglip_config(cfg: dict):
    from transformers import SiglipConfig

    s = dict(cfg)
    s.pop("model_type", None)
    return SiglipConfig(text_config=s["text_config"], vision_config=s["vision_config"])


def build_siglip(cfg: dict, attn: str = "sdpa"):
    from transformers import SiglipModel

    config = siglip_config(cfg)
    config._attn_implementation = attn
    model = SiglipModel(config)
    return model


def load_siglip(model_dir, attn: str = "sdpa", drop_vision_head: bool = True):
    """SiglipModel from `save_pretrained` output without a second random copy: the module tree is
    created on the meta device and the file's tensors are assigned to it."""
    from transformers import SiglipConfig, SiglipModel

    model_dir = Path(model_dir)
    config = SiglipConfig.from_pretrained(str(model_dir))
    config._attn_implementation = attn
    with torch.device("meta"):
        model = SiglipModel(config)
    sd = read_safetensors(model_dir / "model.safetensors")
    missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
    assert not unexpected, unexpected
    # Non-persistent buffers (position ids) are not in the file: rebuild them.
    for name, mod in model.named_modules():
        for bname, buf in list(mod._buffers.items()):
            if buf is not None and buf.is_meta:
                assert bname == "position_ids", f"{name}.{bname}"
                mod._buffers[bname] = torch.arange(buf.shape[-1]).expand(buf.shape).contiguous()
    missing = [m for m in missing if not m.endswith("position_ids")]
    assert not missing, missing
    if drop_vision_head and getattr(model.vision_model, "use_head", False):
        # RSRefSeg 2 never uses the vision MAP head (pooler); keep it out of memory.
        del model.vision_model.head
        model.vision_model.use_head = False
    for t in list(model.parameters()) + list(model.buffers()):
        assert not t.is_meta
    return model.eval()


SAM2_DEFAULT_HEADS = dict(
    transformer_depth=2, transformer_num_heads=8, transformer_mlp_dim=2048, attention_downsample_rate=2,
    num_multimask_outputs=3, iou_head_depth=3, iou_head_hidden_dim=256, mask_in_chans=16,
)


def _hlist(xs):
    return "[" + ",".join(str(x) for x in xs) + "]"


def sam2_hydra_overrides(sam: dict) -> list:
    """Hydra overrides of `configs/sam2.1/sam2.1_hiera_t.yaml` that give the Rust `Sam2Config`."""
    h = sam["hiera"]
    fixed = dict(patch_kernel_size=7, patch_stride=4, patch_padding=3, in_chans=3, mlp_ratio=4.0, layer_norm_eps=1e-6)
    for k, want in fixed.items():
        if k in h and float(h[k]) != float(want):
            raise ValueError(f"sam.hiera.{k}={h[k]} is hard-coded to {want} in Meta's Hiera")
    if list(h.get("q_stride", [2, 2])) != [2, 2]:
        # Hiera hands q_stride to nn.MaxPool2d, which rejects hydra's ListConfig; only the
        # default (2, 2) of every SAM 2.1 size is supported.
        raise ValueError("sam.hiera.q_stride must be [2, 2]")
    if sam.get("backbone_stride", 16) != 16:
        raise ValueError("backbone_stride must be 16")
    d = sam["d_model"]
    dims = [int(h["embed_dim"] * h.get("dim_mul", 2.0) ** i) for i in range(len(h["stages"]))]
    o = [
        f"++model.image_size={sam['image_size']}",
        f"++model.image_encoder.scalp={sam.get('scalp', 1)}",
        f"++model.image_encoder.trunk.embed_dim={h['embed_dim']}",
        f"++model.image_encoder.trunk.num_heads={h['num_heads']}",
        f"++model.image_encoder.trunk.stages={_hlist(h['stages'])}",
        f"++model.image_encoder.trunk.global_att_blocks={_hlist(h['global_att_blocks'])}",
        f"++model.image_encoder.trunk.window_spec={_hlist(h['window_spec'])}",
        f"++model.image_encoder.trunk.window_pos_embed_bkg_spatial_size={_hlist(h['window_pos_embed_bkg_spatial_size'])}",
        f"++model.image_encoder.trunk.q_pool={h.get('q_pool', 3)}",
        f"++model.image_encoder.trunk.dim_mul={h.get('dim_mul', 2.0)}",
        f"++model.image_encoder.trunk.head_mul={h.get('head_mul', 2.0)}",
        f"++model.image_encoder.neck.d_model={d}",
        f"++model.image_encoder.neck.position_encoding.num_pos_feats={d}",
        f"++model.image_encoder.neck.backbone_channel_list={_hlist(dims[::-1])}",
        f"++model.image_encoder.neck.fpn_top_down_levels={_hlist(sam.get('fpn_top_down_levels', [2, 3]))}",
        f"++model.image_encoder.neck.fpn_interp_model={sam.get('fpn_interp', 'nearest')}",
        f"++model.use_high_res_features_in_sam={str(sam.get('use_high_res_features', True)).lower()}",
        f"++model.iou_prediction_use_sigmoid={str(sam.get('iou_prediction_use_sigmoid', True)).lower()}",
        f"++model.pred_obj_scores={str(sam.get('pred_obj_scores', True)).lower()}",
        f"++model.pred_obj_scores_mlp={str(sam.get('pred_obj_scores', True)).lower()}",
        # What build_sam2(apply_postprocessing=True) adds, with the config's values.
        f"++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability={str(sam.get('dynamic_multimask_via_stability', True)).lower()}",
        f"++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta={sam.get('dynamic_multimask_stability_delta', 0.05)}",
        f"++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh={sam.get('dynamic_multimask_stability_thresh', 0.98)}",
    ]
    if d != 256:
        # The video-memory modules are unused, but keep their widths consistent with d_model so
        # the module tree is one Meta's code would build for this width.
        E = sam["image_size"] // 16
        o += [
            f"++model.memory_attention.d_model={d}",
            f"++model.memory_attention.layer.d_model={d}",
            f"++model.memory_attention.layer.self_attention.embedding_dim={d}",
            f"++model.memory_attention.layer.self_attention.feat_sizes=[{E},{E}]",
            f"++model.memory_attention.layer.cross_attention.embedding_dim={d}",
            f"++model.memory_attention.layer.cross_attention.feat_sizes=[{E},{E}]",
            f"++model.memory_encoder.in_dim={d}",
            f"++model.memory_encoder.mask_downsampler.embed_dim={d}",
            f"++model.memory_encoder.fuser.layer.dim={d}",
        ]
    return o


def build_sam2_model(sam: dict, ckpt_path=None):
    """Meta's SAM2Base through `build_sam2` (sam2.1 tiny yaml + overrides). The prompt encoder and
    mask decoder hyper-parameters that SAM2Base hard-codes (8 heads, MLP 2048, IoU hidden 256,
    mask_in_chans 16) are rebuilt with Meta's own classes when the config differs."""
    from sam2.build_sam import build_sam2
    from sam2.modeling.sam.mask_decoder import MaskDecoder
    from sam2.modeling.sam.prompt_encoder import PromptEncoder
    from sam2.modeling.sam.transformer import TwoWayTransformer

    model = build_sam2(
        SAM2_YAML, ckpt_path=None, device="cpu", mode="eval",
        hydra_overrides_extra=sam2_hydra_overrides(sam), apply_postprocessing=False,
    )
    heads = {k: sam.get(k, v) for k, v in SAM2_DEFAULT_HEADS.items()}
    if heads != SAM2_DEFAULT_HEADS:
        d, S = sam["d_model"], sam["image_size"]
        E = S // 16
        model.sam_prompt_encoder = PromptEncoder(
            embed_dim=d, image_embedding_size=(E, E), input_image_size=(S, S), mask_in_chans=heads["mask_in_chans"]
        )
        md = model.sam_mask_decoder
        model.sam_mask_decoder = MaskDecoder(
            num_multimask_outputs=heads["num_multimask_outputs"],
            transformer=TwoWayTransformer(
                depth=heads["transformer_depth"], embedding_dim=d, mlp_dim=heads["transformer_mlp_dim"],
                num_heads=heads["transformer_num_heads"], attention_downsample_rate=heads["attention_downsample_rate"],
            ),
            transformer_dim=d,
            iou_head_depth=heads["iou_head_depth"],
            iou_head_hidden_dim=heads["iou_head_hidden_dim"],
            use_high_res_features=model.use_high_res_features_in_sam,
            iou_prediction_use_sigmoid=model.iou_prediction_use_sigmoid,
            pred_obj_scores=model.pred_obj_scores,
            pred_obj_scores_mlp=model.pred_obj_scores_mlp,
            use_multimask_token_for_obj_ptr=model.use_multimask_token_for_obj_ptr,
            dynamic_multimask_via_stability=md.dynamic_multimask_via_stability,
            dynamic_multimask_stability_delta=md.dynamic_multimask_stability_delta,
            dynamic_multimask_stability_thresh=md.dynamic_multimask_stability_thresh,
        )
    if ckpt_path is not None:
        sd = torch.load(str(ckpt_path), map_location="cpu", mmap=True, weights_only=True)["model"]
        model.load_state_dict(sd, strict=True)
        del sd
    return model.eval()


class SamImagePath(nn.Module):
    """What RSRefSeg 2's SAM wrapper keeps of SAM2Base: image encoder, prompt encoder, mask decoder
    and no_mem_embed (every video/memory module is deleted)."""

    def __init__(self, sam2_base):
        super().__init__()
        self.image_encoder = sam2_base.image_encoder
        self.sam_prompt_encoder = sam2_base.sam_prompt_encoder
        self.sam_mask_decoder = sam2_base.sam_mask_decoder
        self.no_mem_embed = sam2_base.no_mem_embed
        self.image_size = sam2_base.image_size


def neck_forward(neck, xs):
    """Meta's FpnNeck.forward without the sine position encodings: those only feed the video
    memory path, and even cached they cost a (B, d, S/4, S/4) copy per image."""
    n = len(neck.convs) - 1
    out = [None] * len(neck.convs)
    prev = None
    for i in range(n, -1, -1):
        lateral = neck.convs[n - i](xs[i])
        if i in neck.fpn_top_down_levels and prev is not None:
            top = F.interpolate(
                prev.to(dtype=torch.float32), scale_factor=2.0, mode=neck.fpn_interp_model,
                align_corners=(None if neck.fpn_interp_model == "nearest" else False), antialias=False,
            )
            prev = lateral + top
            if neck.fuse_type == "avg":
                prev = prev / 2
        else:
            prev = lateral
        out[i] = prev
    return out


# ----------------------------------------------------------------------------------------------
# The whole model
# ----------------------------------------------------------------------------------------------


@dataclass
class PreMeta:
    ori_hw: tuple
    img_hw: tuple
    S: int


class RSRefSegTorch(nn.Module):
    def __init__(self, config: dict, siglip, sam: SamImagePath, prompter: CascadedPrompter):
        super().__init__()
        self.config = config
        self.siglip = siglip
        self.sam = sam
        self.prompter = prompter
        self.decode_head = DecodeHead()
        self.S = int(config["sam"]["image_size"])
        self.siglip_size = int(config["siglip"]["vision_config"]["image_size"])
        self.mask_size = 4 * (self.S // 16)
        self.register_buffer("imagenet_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("imagenet_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    # -- stages -----------------------------------------------------------------------------

    def preprocess(self, image_rgb_u8: np.ndarray):
        """H0×W0×3 RGB uint8 -> keep-ratio resize (long side S, OpenCV INTER_LINEAR on uint8 as
        mmcv's Resize does) -> /255 -> zero pad bottom/right to S×S -> per-branch inputs:
        SigLIP = bilinear(align_corners=False, no antialias)((x-0.5)/0.5) at its native size,
        SAM = ImageNet-normalised x at S×S (reference §1, §2, §7.1)."""
        import cv2

        S = self.S
        H0, W0 = image_rgb_u8.shape[:2]
        s = S / max(H0, W0)
        h1, w1 = int(H0 * s + 0.5), int(W0 * s + 0.5)
        if (h1, w1) != (H0, W0):
            resized = cv2.resize(image_rgb_u8, (w1, h1), interpolation=cv2.INTER_LINEAR)
        else:
            resized = image_rgb_u8
        x = torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1).float() / 255.0
        x01 = F.pad(x, (0, S - w1, 0, S - h1)).unsqueeze(0)
        return self.branch_inputs(x01), PreMeta((H0, W0), (h1, w1), S)

    def branch_inputs(self, x01):
        clip_px = F.interpolate((x01 - 0.5) / 0.5, size=(self.siglip_size, self.siglip_size), mode="bilinear",
                                align_corners=False)
        sam_px = (x01 - self.imagenet_mean) / self.imagenet_std
        return clip_px, sam_px

    def siglip_vision(self, clip_px):
        """SigLIP vision last_hidden_state (after post_layernorm). The MAP head is not run: its
        output is unused by RSRefSeg 2."""
        vm = self.siglip.vision_model
        h = vm.embeddings(clip_px, interpolate_pos_encoding=False)
        h = vm.encoder(inputs_embeds=h).last_hidden_state
        return vm.post_layernorm(h)

    def hiera_fpn(self, sam_px):
        """Hiera trunk + FPN neck (scalp drops the stride-32 level) + conv_s0/conv_s1 high-res
        projections + no_mem_embed on the stride-16 level (directly_add_no_mem_embed)."""
        enc = self.sam.image_encoder
        feats = neck_forward(enc.neck, enc.trunk(sam_px))
        if enc.scalp > 0:
            feats = feats[: -enc.scalp]
        md = self.sam.sam_mask_decoder
        feat_s0 = md.conv_s0(feats[0])
        feat_s1 = md.conv_s1(feats[1])
        image_embed = feats[-1] + self.sam.no_mem_embed.view(1, -1, 1, 1)
        return feat_s0, feat_s1, image_embed

    def siglip_text(self, input_ids, attention_mask=None):
        """t_word = last_hidden_state (all positions), t_sent = pooler_output = head(last position)."""
        o = self.siglip.text_model(input_ids=input_ids, attention_mask=attention_mask)
        return o.last_hidden_state, o.pooler_output

    def run_prompter(self, v, t_word, t_sent):
        return self.prompter(v, t_word, t_sent, self.siglip.logit_scale, self.siglip.logit_bias, self.mask_size)

    def decoder(self, image_feats, sparse, dense):
        """Prompt encoder mask_downscaling of the dense prompt + mask decoder. Eval: token 0 unless
        its stability (#logit>0.05 / #logit>-0.05) is below 0.98, then the multimask token (1..3)
        with the highest predicted IoU (reference §4.4). Training: token 0."""
        feat_s0, feat_s1, image_embed = image_feats
        pe = self.sam.sam_prompt_encoder
        md = self.sam.sam_mask_decoder
        B = sparse.shape[0]
        if dense is not None:
            dense_emb = pe.mask_downscaling(dense)
        else:
            dense_emb = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(B, -1, *image_embed.shape[-2:])
        all_m, all_iou, _, _ = md.predict_masks(
            image_embeddings=image_embed.expand(B, -1, -1, -1) if image_embed.shape[0] != B else image_embed,
            image_pe=pe.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense_emb,
            repeat_image=False,
            high_res_features=[f.expand(B, -1, -1, -1) if f.shape[0] != B else f for f in (feat_s0, feat_s1)],
        )
        info = {}
        if self.training or not md.dynamic_multimask_via_stability:
            masks, iou = all_m[:, 0:1], all_iou[:, 0:1]
        else:
            masks, iou = md._dynamic_multimask_via_stability(all_m, all_iou)
            stab = md._get_stability_scores(all_m[:, 0:1]).reshape(-1)
            info["stability_token0"] = stab
            info["selected_token"] = torch.where(
                stab >= md.dynamic_multimask_stability_thresh, torch.zeros_like(stab, dtype=torch.long),
                1 + torch.argmax(all_iou[:, 1:], dim=-1),
            )
        info["all_masks"], info["all_iou"] = all_m, all_iou
        return masks, iou, info

    def postprocess(self, lowres, meta: PreMeta):
        """Low-res logits -> bilinear (align_corners=False) to S×S -> crop the padding -> bilinear
        to the original size -> sigmoid > 0.5 (reference §4.5)."""
        up = F.interpolate(lowres, size=(meta.S, meta.S), mode="bilinear", align_corners=False)
        h1, w1 = meta.img_hw
        up = up[..., :h1, :w1]
        logits = F.interpolate(up, size=meta.ori_hw, mode="bilinear", align_corners=False)
        mask = (logits.sigmoid() > 0.5)[0, 0]
        return mask, logits

    # -- training forward -------------------------------------------------------------------

    def train_forward(self, x01, input_ids, attention_mask, gt):
        """Training forward on an already S×S batch (no resize/pad): the four weighted loss terms."""
        clip_px, sam_px = self.branch_inputs(x01)
        v = self.siglip_vision(clip_px)
        t_word, t_sent = self.siglip_text(input_ids, attention_mask)
        pr = self.run_prompter(v, t_word, t_sent)
        feats = self.hiera_fpn(sam_px)
        lowres, _, _ = self.decoder(feats, pr["sparse_prompts"], pr["dense_prompts"])
        dh = self.decode_head
        return rsrefseg_losses(lowres, gt, pr["t1"], pr["t2"], pr["clip_visual_feat_map"], dh.logit_scale2, dh.logit_bias2)


def build_model(config: dict, siglip_dir=None, sam_ckpt=None, prompter_path=None) -> RSRefSegTorch:
    """Assemble the model from a Rust `--config` JSON (dict or path). Without paths the weights are
    the libraries' default random initialisation; with paths they are loaded (strictly)."""
    if not isinstance(config, dict):
        config = json.loads(Path(config).read_text())
    # SAM first: building it allocates a throw-away random copy, better before SigLIP is resident.
    sam_full = build_sam2_model(config["sam"], sam_ckpt)
    sam = SamImagePath(sam_full)
    del sam_full
    if siglip_dir is not None:
        siglip = load_siglip(siglip_dir)
    else:
        siglip = build_siglip(config["siglip"]).eval()
    prompter = CascadedPrompter.from_config(config["prompter"])
    if prompter_path is not None:
        prompter.load_state_dict(read_safetensors(prompter_path), strict=True)
    return RSRefSegTorch(config, siglip, sam, prompter).eval()


def weights_bytes(model: nn.Module) -> int:
    """fp32 bytes of every parameter and buffer held by the model (4 bytes per element)."""
    seen = set()
    n = 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in seen:
            continue
        seen.add(id(t))
        n += t.numel()
    return 4 * n
