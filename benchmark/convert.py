"""Convert foreign checkpoints to the suite's canonical backbone format (timm key space).

Sources
-------
``simmim``
    Official SimMIM / Swin-Transformer checkpoints (``ckpt_epoch_N.pth``): ``{'model': {'encoder.*', 'decoder.*'},
    'optimizer', 'lr_scheduler', 'epoch', 'config' (a pickled yacs ``CfgNode``), 'amp', ...}``. The ViT encoder (a
    BEiT-style ViT) becomes timm ``beit_*`` (or plain ``vit_*`` when it has neither relative position bias nor
    q/v biases); Swin / SwinV2 encoders become timm ``swin_*`` / ``swinv2_*``. Fine-tuned official checkpoints (no
    ``encoder.`` prefix) are accepted too.
``mmpretrain``
    OpenMMLab checkpoints ``{'state_dict': {'backbone.*': ...}, 'meta': ...}`` of a ViT or a Swin (V1) backbone, in
    mmpretrain's or mmsegmentation's key layout (they agree except for ViT attention, which mmseg stores as
    ``attn.attn.in_proj_*`` / ``attn.attn.out_proj.*``). PatchMerging weights are stored in ``nn.Unfold`` channel
    order and are permuted to timm's order. SwinV2 from mmpretrain is refused (not validated).
``timm``
    A timm state dict (plain, or under ``state_dict`` / ``model`` / ``state_dict_ema``); ``arch`` is required.

Safety: user checkpoints are untrusted and are read only with ``torch.load(weights_only=True)``. The official SimMIM
checkpoint pickles its yacs config, which ``weights_only`` refuses; a short allow-list of config classes
(``yacs.config.CfgNode``, ``argparse.Namespace``) is mapped to inert stubs whose data is kept as plain dicts; yacs
need not be installed and no code from the checkpoint runs. Any other global is refused with the name of the global.

Coverage: the converted weights must fill every tensor of the timm backbone (``checkpoint.load_weights``) and every
tensor of the source backbone must find a place, unless ``allow_partial``. Decoder / neck / head / mask token /
optimizer state and non-persistent buffers (relative position indices, attention masks) are dropped on purpose.
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from . import checkpoint as ckpt_mod
from .checkpoint import Coverage
from .errors import CheckpointError
from .families import variant

log = logging.getLogger("benchmark.convert")

SOURCES = ("simmim", "mmpretrain", "timm")

# ViT widths whose head count is standard (ViT-Ti/S/B/L/H); used only when neither a config nor a relative
# position table says how many heads there are (head count changes no tensor shape of a ViT).
STANDARD_VIT_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}

# --------------------------------------------------------------------------------------------------------------
# Safe reading
# --------------------------------------------------------------------------------------------------------------

_STUB_MARK = "__mimbench_stub__"


class _ConfigStub:
    """Inert stand-in for an allow-listed config class met while unpickling.

    ``torch``'s weights-only unpickler creates allow-listed classes with ``cls.__new__(cls)`` (NEWOBJ), fills dict
    subclasses with SETITEMS (allowed on plain dict / OrderedDict / Counter only) and restores ``__dict__`` state
    with BUILD (allowed on OrderedDict: ``inst.__dict__.update(state)``). So the stub returns a marked OrderedDict:
    the dict items and the instance ``__dict__`` both land in plain containers, nothing of the class runs, and
    :func:`_unstub` turns the result into a plain ``dict`` afterwards.
    """

    kind = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        od: OrderedDict = OrderedDict()
        od.__dict__[_STUB_MARK] = cls.kind
        return od


class _YacsCfgNodeStub(_ConfigStub):
    kind = "yacs.config.CfgNode"          # dict subclass: data are the dict items


class _NamespaceStub(_ConfigStub):
    kind = "argparse.Namespace"           # plain object: data are the instance __dict__


ALLOWED_CONFIG_CLASSES: dict[str, type] = {c.kind: c for c in (_YacsCfgNodeStub, _NamespaceStub)}


def _unstub(obj: Any) -> Any:
    """Replace stubbed config objects (marked OrderedDicts) by plain dicts, in place where possible."""
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, dict):
        kind = getattr(obj, "__dict__", {}).get(_STUB_MARK) if isinstance(obj, OrderedDict) else None
        if kind is not None:
            if kind == _NamespaceStub.kind:
                items = {k: v for k, v in obj.__dict__.items() if k != _STUB_MARK}
            else:
                items = dict(obj)
            return {k: _unstub(v) for k, v in items.items()}
        for k, v in list(obj.items()):
            nv = _unstub(v)
            if nv is not v:
                obj[k] = nv
        return obj
    if isinstance(obj, list):
        for i, v in enumerate(obj):
            nv = _unstub(v)
            if nv is not v:
                obj[i] = nv
        return obj
    if isinstance(obj, tuple):
        new = tuple(_unstub(v) for v in obj)
        return obj if all(a is b for a, b in zip(new, obj)) else new
    return obj


def load_untrusted(path: str | os.PathLike) -> Any:
    """``torch.load(weights_only=True)`` with the config allow-list; config objects come back as plain dicts."""
    stubs = tuple((cls, name) for name, cls in ALLOWED_CONFIG_CLASSES.items())
    obj = ckpt_mod.read_checkpoint(
        path, allowed_globals=stubs,
        foreign_fix="in an environment you trust, re-save only the weights, e.g. "
                    "torch.save({'model': torch.load(SRC, weights_only=False)['model']}, 'weights.pth')")
    return _unstub(obj)


# --------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    """What a source parser found: a timm model and the weights in timm's key space (before timm's filter)."""

    arch: str
    kwargs: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    method: str = "unknown"
    dropped: list[str] = field(default_factory=list)       # dropped on purpose (decoder, head, buffers, ...)
    notes: list[str] = field(default_factory=list)


def convert(src, dst, source: str, *, arch: str | None = None, img_size: int | None = None,
            window_size: int | None = None, allow_partial: bool = False) -> Coverage:
    """Convert ``src`` (a ``source`` checkpoint) into a canonical backbone checkpoint at ``dst``.

    ``arch`` picks the timm model name (required for ``timm``; otherwise the family and all architecture numbers are
    inferred from the checkpoint's config or tensor shapes and ``arch`` only names the model). ``img_size`` /
    ``window_size`` set the target geometry: absolute position embeddings and relative position bias tables are
    resized (bicubic) to it. Returns the coverage report; raises :class:`CheckpointError` on anything wrong.
    """
    if source not in SOURCES:
        raise CheckpointError(f"unknown checkpoint source '{source}'", f"use one of {', '.join(SOURCES)}")
    if arch is not None:
        _check_arch(arch)
    obj = load_untrusted(src)
    parse = {"simmim": _plan_simmim, "mmpretrain": _plan_mmpretrain, "timm": _plan_timm}[source]
    plan = parse(obj, src=str(src), arch=arch, img_size=img_size, window_size=window_size)
    if plan.dropped:
        log.info("%s: dropped %d tensors on purpose (%s)", src, len(plan.dropped), _few(plan.dropped))

    meta = ckpt_mod.make_meta(plan.arch, plan.kwargs, method=plan.method, source=f"{source}:{src}")
    model = ckpt_mod.build_model(meta)
    state = _fit_to_model(plan.state_dict, model)
    try:
        cov = ckpt_mod.load_weights(model, state, allow_partial=allow_partial, name=f"{src}")
    except CheckpointError as exc:
        raise CheckpointError(exc.problem, f"check that it is a {source} checkpoint of {plan.arch} "
                                           "(--arch / --img-size / --window-size), or pass --allow-partial to "
                                           "keep the tensors that fit") from None
    if cov.unexpected or cov.mismatched:
        msg = (f"{src}: {len(cov.unexpected) + len(cov.mismatched)} backbone tensors have no place in {plan.arch} "
               f"({_few(cov.unexpected + cov.mismatched)})")
        if not allow_partial:
            raise CheckpointError(msg, "this converter does not know these weights; pass --allow-partial to "
                                       "drop them")
        log.warning("%s; dropped because of --allow-partial", msg)
    own = model.state_dict()
    good = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    meta["coverage"] = {"tensors": f"{cov.loaded}/{cov.expected}", "fraction": cov.fraction,
                        "missing": cov.missing[:20], "unexpected": cov.unexpected[:20]}
    if plan.notes:
        meta["convert_notes"] = list(plan.notes)
    ckpt_mod.save_canonical(dst, good, meta)
    log.info("wrote %s (%s %s): %s", dst, plan.arch, plan.kwargs, cov)
    return cov


# --------------------------------------------------------------------------------------------------------------
# Helpers shared by the parsers
# --------------------------------------------------------------------------------------------------------------


def _few(keys: list[str], n: int = 4) -> str:
    return ", ".join(keys[:n]) + (" …" if len(keys) > n else "")


def _check_arch(arch: str) -> None:
    import timm

    if not timm.is_model(arch):
        ckpt_mod.build_model({"arch": arch})       # raises CheckpointError with "did you mean"


def _tensor_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _cfg(config: dict | None, dotted: str, default: Any = None) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return default if node is None else node


def _arch_default(arch: str | None, attr: str) -> Any:
    """An attribute of a registered timm model's default build (meta device, no memory), or None."""
    if not arch:
        return None
    try:
        import timm

        m = timm.create_model(arch, pretrained=False, num_classes=0, device="meta")
    except Exception:  # noqa: BLE001 - best effort only
        return None
    if attr == "num_heads":
        blocks = getattr(m, "blocks", None)
        return getattr(blocks[0].attn, "num_heads", None) if blocks is not None and len(blocks) else None
    return getattr(m, attr, None)


def _pick_name(candidates: list[str]) -> str:
    import timm

    for c in candidates:
        if timm.is_model(c):
            return c
    raise CheckpointError(f"none of the timm models {candidates} exists in this timm version",
                          "pass --arch with a timm model name of the right family")


def _num_blocks(sd: dict, prefix: str) -> int:
    idx = {int(m.group(1)) for k in sd for m in [re.match(re.escape(prefix) + r"(\d+)\.", k)] if m}
    return max(idx) + 1 if idx else 0


def _window_from_table(rows: int, extra: int = 0) -> int | None:
    side = math.isqrt(rows - extra)
    if side * side != rows - extra or side % 2 == 0:
        return None
    return (side + 1) // 2


def _model_filter_fn(model: nn.Module):
    mod = sys.modules.get(type(model).__module__)
    return getattr(mod, "checkpoint_filter_fn", None)


_DROP_BUFFERS = ("relative_position_index", "relative_coords_table", "attn_mask", "k_bias")


def _fit_to_model(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Resize relative position tables (bicubic) to the model's windows, then run timm's own checkpoint filter
    of the model family (Swin downsample move, pos-embed / patch-embed resampling, buffer removal)."""
    from timm.layers import resize_rel_pos_bias_table_simple

    own = model.state_dict()
    state = dict(state)
    for k, v in list(state.items()):
        if not k.endswith("relative_position_bias_table") or k not in own:
            continue
        target = own[k].shape
        if v.shape == target or v.ndim != 2 or v.shape[1] != target[1]:
            continue
        m = model.get_submodule(k[: -len(".relative_position_bias_table")])
        win = tuple(getattr(m, "window_size", None) or ())
        if len(win) != 2:
            continue
        extra = target[0] - (2 * win[0] - 1) * (2 * win[1] - 1)
        side = math.isqrt(v.shape[0] - extra) if v.shape[0] > extra else 0
        if side * side != v.shape[0] - extra:
            raise CheckpointError(f"cannot resize {k}: its table of {v.shape[0]} rows is not for a square window",
                                  "convert at the checkpoint's own window / image size")
        resized = resize_rel_pos_bias_table_simple(v.float(), new_window_size=win, new_bias_shape=tuple(target))
        state[k] = resized.to(v.dtype).contiguous()
        log.info("%s: relative position table %s -> %s (bicubic)", k, tuple(v.shape), tuple(target))
    fn = _model_filter_fn(model)
    if fn is not None:
        state = fn(state, model)
    return {k: v for k, v in state.items() if not any(b in k for b in _DROP_BUFFERS) or k in own}


# --------------------------------------------------------------------------------------------------------------
# ViT family (official SimMIM ViT = BEiT-style; mmpretrain / mmseg ViT)
# --------------------------------------------------------------------------------------------------------------


def _vit_name(family: str, embed_dim: int, patch: int, img: int) -> str:
    if family == "beit":
        size = {1024: "large"}.get(embed_dim, "base")
        return _pick_name([f"beit_{size}_patch{patch}_{img}", f"beit_{size}_patch16_224", "beit_base_patch16_224"])
    size = {192: "tiny", 384: "small", 768: "base", 1024: "large", 1280: "huge"}.get(embed_dim, "base")
    return _pick_name([f"vit_{size}_patch{patch}_{img}", f"vit_{size}_patch16_224", f"vit_{size}_patch14_224",
                       "vit_base_patch16_224"])


def _vit_heads(embed_dim: int, *, config_heads: int | None, table: torch.Tensor | None, arch: str | None,
               cfg_text_heads: int | None = None, notes: list[str]) -> int:
    if config_heads:
        return int(config_heads)
    if table is not None:
        return int(table.shape[-1])
    default = _arch_default(arch, "num_heads")
    if default and _arch_default(arch, "embed_dim") == embed_dim:
        notes.append(f"num_heads={default} taken from --arch {arch}")
        return int(default)
    if cfg_text_heads:
        return int(cfg_text_heads)
    heads = STANDARD_VIT_HEADS.get(embed_dim, max(1, embed_dim // 64))
    msg = (f"num_heads={heads} guessed from the width {embed_dim} (no config, no relative position table); "
           "pass --arch with a timm model of the right head count if this is wrong")
    log.warning(msg)
    notes.append(msg)
    return heads


def _plan_vit_official(enc: dict[str, torch.Tensor], config: dict | None, *, arch: str | None,
                       img_size: int | None, method: str, dropped: list[str]) -> _Plan:
    """Official SimMIM ViT (BEiT code base) -> timm beit_* (or vit_*). ``enc`` has no 'encoder.' prefix."""
    notes: list[str] = []
    pe = enc.get("patch_embed.proj.weight")
    if pe is None or pe.ndim != 4:
        raise CheckpointError("ViT checkpoint has no patch_embed.proj.weight", "is this a SimMIM ViT checkpoint?")
    embed_dim, in_chans, patch = int(pe.shape[0]), int(pe.shape[1]), int(pe.shape[-1])
    vcfg = _cfg(config, "MODEL.VIT", {}) or {}
    depth = _num_blocks(enc, "blocks.")
    fc1 = enc.get("blocks.0.mlp.fc1.weight")
    mlp_ratio = float(fc1.shape[0]) / embed_dim if fc1 is not None else float(vcfg.get("MLP_RATIO") or 4.0)
    has_qv = "blocks.0.attn.q_bias" in enc
    has_rpb = "blocks.0.attn.relative_position_bias_table" in enc
    has_shared = "rel_pos_bias.relative_position_bias_table" in enc
    has_ape = "pos_embed" in enc
    has_ls = "blocks.0.gamma_1" in enc
    mean_pool = "fc_norm.weight" in enc and "norm.weight" not in enc
    table = enc.get("rel_pos_bias.relative_position_bias_table", enc.get("blocks.0.attn.relative_position_bias_table"))

    # source grid: config, pos_embed, or a relative position table
    src_img = _cfg(config, "DATA.IMG_SIZE")
    if not src_img:
        if has_ape:
            g = math.isqrt(enc["pos_embed"].shape[1] - 1)
            src_img = g * patch
        elif table is not None and _window_from_table(table.shape[0], 3):
            src_img = _window_from_table(table.shape[0], 3) * patch
        else:
            src_img = 224
            notes.append("image size unknown (no config, no position tables); assumed 224")
    target_img = int(img_size or src_img)

    family = variant(arch) if arch else ("vit" if not (has_rpb or has_shared or has_qv) and has_ape else "beit")
    if family not in ("vit", "beit"):
        raise CheckpointError(f"--arch {arch} is not a ViT/BEiT model; a SimMIM ViT checkpoint converts to "
                              "beit_* or vit_*", "pass --arch beit_base_patch16_224 (or leave --arch out)")
    heads = _vit_heads(embed_dim, config_heads=vcfg.get("NUM_HEADS"), table=table, arch=arch, notes=notes)
    init_values = (float(vcfg.get("INIT_VALUES") or 0.1)) if has_ls else None
    kwargs: dict[str, Any] = dict(img_size=target_img, patch_size=patch, embed_dim=embed_dim, depth=depth,
                                  num_heads=heads, mlp_ratio=mlp_ratio, init_values=init_values)
    if in_chans != 3:
        kwargs["in_chans"] = in_chans

    out: dict[str, torch.Tensor] = {}
    if family == "beit":
        kwargs.update(qkv_bias=has_qv, use_abs_pos_emb=has_ape, use_rel_pos_bias=has_rpb,
                      use_shared_rel_pos_bias=has_shared, use_fc_norm=mean_pool)
        for k, v in enc.items():
            if k.endswith("relative_position_index"):
                dropped.append(k)
                continue
            out[k] = v
    else:
        kwargs.update(qkv_bias=has_qv)
        if mean_pool:
            kwargs.update(global_pool="avg", fc_norm=True)
        if not has_ape:
            kwargs["pos_embed"] = "none"
        for k, v in enc.items():
            if k.endswith("relative_position_index"):
                dropped.append(k)
                continue
            m = re.match(r"blocks\.(\d+)\.gamma_([12])$", k)
            if m:
                out[f"blocks.{m.group(1)}.ls{m.group(2)}.gamma"] = v
                continue
            m = re.match(r"blocks\.(\d+)\.attn\.q_bias$", k)
            if m:
                # timm's ViT has one qkv bias; BEiT's (q, 0, v) bias is exactly that with a zero k part
                vb = enc[f"blocks.{m.group(1)}.attn.v_bias"]
                out[f"blocks.{m.group(1)}.attn.qkv.bias"] = torch.cat([v, torch.zeros_like(v), vb])
                continue
            if re.match(r"blocks\.(\d+)\.attn\.v_bias$", k):
                continue
            out[k] = v
    name = arch or _vit_name(family, embed_dim, patch, target_img)
    return _Plan(name, kwargs, out, method=method, dropped=dropped, notes=notes)


_MM_VIT_RULES = [
    (r"^patch_embed\.projection\.(weight|bias)$", r"patch_embed.proj.\1"),
    (r"^layers\.(\d+)\.ln1\.(weight|bias)$", r"blocks.\1.norm1.\2"),
    (r"^layers\.(\d+)\.ln2\.(weight|bias)$", r"blocks.\1.norm2.\2"),
    (r"^layers\.(\d+)\.attn\.qkv\.(weight|bias)$", r"blocks.\1.attn.qkv.\2"),          # mmpretrain
    (r"^layers\.(\d+)\.attn\.proj\.(weight|bias)$", r"blocks.\1.attn.proj.\2"),
    (r"^layers\.(\d+)\.attn\.attn\.in_proj_(weight|bias)$", r"blocks.\1.attn.qkv.\2"),  # mmseg / mmcv MHA
    (r"^layers\.(\d+)\.attn\.attn\.out_proj\.(weight|bias)$", r"blocks.\1.attn.proj.\2"),
    (r"^layers\.(\d+)\.ffn\.layers\.0\.0\.(weight|bias)$", r"blocks.\1.mlp.fc1.\2"),
    (r"^layers\.(\d+)\.ffn\.layers\.1\.(weight|bias)$", r"blocks.\1.mlp.fc2.\2"),
    (r"^layers\.(\d+)\.attn\.gamma1\.weight$", r"blocks.\1.ls1.gamma"),                 # mmpretrain LayerScale
    (r"^layers\.(\d+)\.ffn\.gamma2\.weight$", r"blocks.\1.ls2.gamma"),
    (r"^ln1\.(weight|bias)$", r"norm.\1"),                                              # final_norm
    (r"^pre_norm\.(weight|bias)$", r"norm_pre.\1"),                                     # mmpretrain pre_norm
    (r"^(cls_token|pos_embed)$", r"\1"),
]


def _rename(sd: dict[str, torch.Tensor], rules: list[tuple[str, str]]) -> tuple[dict, list[str]]:
    out, unmapped = {}, []
    compiled = [(re.compile(a), b) for a, b in rules]
    for k, v in sd.items():
        for pat, rep in compiled:
            if pat.match(k):
                out[pat.sub(rep, k)] = v
                break
        else:
            unmapped.append(k)
            out[k] = v                         # kept: shows up as 'unexpected' in the coverage report
    return out, unmapped


def _mm_cfg_heads(meta: Any) -> int | None:
    """num_heads of the backbone from an mmengine checkpoint's meta['cfg'] text, when it says so plainly."""
    text = meta.get("cfg") if isinstance(meta, dict) else None
    if not isinstance(text, str):
        return None
    bb = text[text.find("backbone"):] if "backbone" in text else text
    m = re.search(r"num_heads\s*=\s*(\d+)", bb)
    if m:
        return int(m.group(1))
    m = re.search(r"arch\s*=\s*['\"]([\w-]+)['\"]", bb)
    table = {"t": 3, "tiny": 3, "deit-t": 3, "deit-tiny": 3, "deit-s": 6, "deit-small": 6, "s": 8, "small": 8,
             "b": 12, "base": 12, "deit-b": 12, "deit-base": 12, "l": 16, "large": 16, "h": 16, "huge": 16}
    return table.get(m.group(1).lower()) if m else None


def _plan_vit_mm(bb: dict[str, torch.Tensor], meta: Any, *, arch: str | None, img_size: int | None,
                 method: str, dropped: list[str]) -> _Plan:
    notes: list[str] = []
    pe = bb.get("patch_embed.projection.weight")
    if pe is None or pe.ndim != 4:
        raise CheckpointError("mmpretrain ViT checkpoint has no backbone.patch_embed.projection.weight",
                              "is this a ViT backbone?")
    if any(k.endswith(("q_bias", "relative_position_bias_table", "gamma_1")) for k in bb):
        raise CheckpointError("BEiT-style mmpretrain ViT backbones (q/v bias, relative position bias) are not "
                              "supported yet", "convert the official checkpoint with --from simmim instead")
    if arch and variant(arch) != "vit":
        raise CheckpointError(f"--arch {arch} is not a timm vit_* model; an mmpretrain ViT converts to vit_*",
                              "pass --arch vit_base_patch16_224 (or leave --arch out)")
    embed_dim, in_chans, patch = int(pe.shape[0]), int(pe.shape[1]), int(pe.shape[-1])
    depth = _num_blocks(bb, "layers.")
    fc1 = bb.get("layers.0.ffn.layers.0.0.weight")
    mlp_ratio = float(fc1.shape[0]) / embed_dim if fc1 is not None else 4.0
    cls = "cls_token" in bb
    if "pos_embed" in bb:
        g = math.isqrt(bb["pos_embed"].shape[1] - (1 if cls else 0))
        src_img = g * patch
    else:
        src_img = 224
    heads = _vit_heads(embed_dim, config_heads=None, table=None, arch=arch, cfg_text_heads=_mm_cfg_heads(meta),
                       notes=notes)
    qkv_bias = ("layers.0.attn.qkv.bias" in bb) or ("layers.0.attn.attn.in_proj_bias" in bb)
    has_ls = "layers.0.attn.gamma1.weight" in bb
    kwargs: dict[str, Any] = dict(img_size=int(img_size or src_img), patch_size=patch, embed_dim=embed_dim,
                                  depth=depth, num_heads=heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias)
    if has_ls:
        kwargs["init_values"] = 1e-5
    if in_chans != 3:
        kwargs["in_chans"] = in_chans
    if not cls:
        kwargs.update(class_token=False, global_pool="avg", fc_norm=False)
    if "ln1.weight" not in bb:
        kwargs["final_norm"] = False
    if "pre_norm.weight" in bb:
        kwargs["pre_norm"] = True
    out, unmapped = _rename(bb, _MM_VIT_RULES)
    if unmapped:
        log.info("unmapped mmpretrain ViT keys: %s", _few(unmapped))
    if "patch_embed.proj.bias" not in out and not kwargs.get("pre_norm"):
        # mmseg's ViT patch embedding has no bias; timm's has one: a zero bias is the same function
        out["patch_embed.proj.bias"] = torch.zeros(embed_dim, dtype=pe.dtype)
        notes.append("patch_embed.proj.bias set to zero (the source patch embedding has no bias)")
    name = arch or _vit_name("vit", embed_dim, patch, kwargs["img_size"])
    return _Plan(name, kwargs, out, method=method, dropped=dropped, notes=notes)


# --------------------------------------------------------------------------------------------------------------
# Swin family
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _SwinShape:
    v2: bool
    embed_dim: int
    in_chans: int
    patch: int
    depths: tuple[int, ...]
    heads: tuple[int, ...]
    windows: tuple[int | None, ...]      # effective (possibly clipped) source window per stage
    mlp_ratio: float
    qkv_bias: bool
    img_from_masks: int | None


def _swin_shape(sd: dict[str, torch.Tensor], *, stage_key: str, block_attn: str) -> _SwinShape:
    """Architecture numbers of a Swin state dict in official / timm key layout (``layers.i.blocks.j``) or mm layout
    (``stages.i.blocks.j`` with ``attn.w_msa``): ``stage_key`` and ``block_attn`` name the parts that differ."""
    pe = sd.get("patch_embed.proj.weight", sd.get("patch_embed.projection.weight"))
    if pe is None or pe.ndim != 4:
        raise CheckpointError("Swin checkpoint has no patch embedding weight", "is this a Swin backbone?")
    embed_dim, in_chans, patch = int(pe.shape[0]), int(pe.shape[1]), int(pe.shape[-1])
    n_stages = _num_blocks(sd, f"{stage_key}.")
    v2 = any("cpb_mlp" in k or "logit_scale" in k for k in sd)
    depths, heads, windows = [], [], []
    img_from_masks = None
    for i in range(n_stages):
        depths.append(_num_blocks(sd, f"{stage_key}.{i}.blocks."))
        a = f"{stage_key}.{i}.blocks.0.{block_attn}"
        if v2:
            ls = sd.get(f"{a}.logit_scale")
            heads.append(int(ls.shape[0]) if ls is not None else 0)
            ct = sd.get(f"{a}.relative_coords_table")
            ri = sd.get(f"{a}.relative_position_index")
            if ct is not None:
                windows.append((int(ct.shape[1]) + 1) // 2)
            elif ri is not None:
                windows.append(math.isqrt(int(ri.shape[0])))
            else:
                windows.append(None)
        else:
            t = sd.get(f"{a}.relative_position_bias_table")
            heads.append(int(t.shape[1]) if t is not None else 0)
            windows.append(_window_from_table(int(t.shape[0])) if t is not None else None)
        mask = sd.get(f"{stage_key}.{i}.blocks.1.attn_mask")
        if img_from_masks is None and mask is not None and mask.ndim == 3 and windows[-1]:
            res = math.isqrt(int(mask.shape[0])) * windows[-1]
            img_from_masks = res * (2 ** i) * patch
    if not n_stages or not all(depths) or not all(heads):
        raise CheckpointError("Swin checkpoint lacks stage / block / attention tensors",
                              "is this a complete Swin backbone?")
    fc1 = sd.get(f"{stage_key}.0.blocks.0.mlp.fc1.weight", sd.get(f"{stage_key}.0.blocks.0.ffn.layers.0.0.weight"))
    mlp_ratio = float(fc1.shape[0]) / embed_dim if fc1 is not None else 4.0
    a0 = f"{stage_key}.0.blocks.0.{block_attn}"
    qkv_bias = (f"{a0}.q_bias" in sd) if v2 else (f"{a0}.qkv.bias" in sd)
    return _SwinShape(v2, embed_dim, in_chans, patch, tuple(depths), tuple(heads), tuple(windows), mlp_ratio,
                      qkv_bias, img_from_masks)


def _swin_name(v2: bool, embed_dim: int, depths: tuple[int, ...], window: int, img: int) -> str:
    size = {96: "small" if len(depths) > 2 and depths[2] == 18 else "tiny", 128: "base", 192: "large"}.get(embed_dim)
    if v2:
        cands = [f"swinv2_{size}_window{window}_{img}"] if size else []
        cands += {"tiny": ["swinv2_tiny_window8_256"], "small": ["swinv2_small_window8_256"],
                  "base": ["swinv2_base_window12_192", "swinv2_base_window8_256"],
                  "large": ["swinv2_large_window12_192"]}.get(size or "", [])
        return _pick_name(cands + ["swinv2_tiny_window8_256"])
    cands = [f"swin_{size}_patch4_window{window}_{img}", f"swin_{size}_patch4_window7_224"] if size else []
    return _pick_name(cands + ["swin_tiny_patch4_window7_224"])


def _plan_swin(sd: dict[str, torch.Tensor], shape: _SwinShape, scfg: dict, *, src_img: int | None,
               arch: str | None, img_size: int | None, window_size: int | None, method: str,
               dropped: list[str], notes: list[str]) -> _Plan:
    """Shared by the official and mm Swin parsers: ``sd`` is already in official/timm block naming with the
    downsample layers at the END of each stage (``layers.i.downsample``, i < last) as timm's filter expects."""
    family = "swinv2" if shape.v2 else "swin"
    if arch and variant(arch) != family:
        raise CheckpointError(f"--arch {arch} is not a timm {family}_* model, the checkpoint is a "
                              f"{'SwinV2' if shape.v2 else 'Swin'}", f"pass a {family}_* name or leave --arch out")
    if any(k.startswith("absolute_pos_embed") for k in sd):
        raise CheckpointError("Swin with an absolute position embedding (APE) has no timm equivalent",
                              "only APE=False Swin checkpoints can be converted")
    known = [w for w in shape.windows if w]
    src_window = int(scfg.get("WINDOW_SIZE") or (max(known) if known else 7))
    if not src_img:
        src_img = shape.img_from_masks
    if not src_img and img_size:
        src_img = int(img_size)        # nothing says otherwise: assume it was trained at the size asked for
    if not src_img:
        n = len(shape.depths)
        clipped = [(i, w) for i, w in enumerate(shape.windows) if w and w < src_window]
        if clipped:  # a stage whose window was clipped to its (square) feature map
            i, w = clipped[0]
            src_img = w * (2 ** i) * shape.patch
        else:
            src_img = src_window * shape.patch * 2 ** (n - 1)
            notes.append(f"image size inferred as {src_img} from window {src_window} (no config, no attention "
                         "masks); pass --img-size if it is wrong")
            log.warning(notes[-1])
    target_img = int(img_size or src_img)
    target_window = int(window_size or src_window)
    kwargs: dict[str, Any] = dict(img_size=target_img, patch_size=shape.patch, embed_dim=shape.embed_dim,
                                  depths=tuple(shape.depths), num_heads=tuple(shape.heads),
                                  window_size=target_window, mlp_ratio=shape.mlp_ratio, qkv_bias=shape.qkv_bias)
    if shape.in_chans != 3:
        kwargs["in_chans"] = shape.in_chans
    if shape.v2:
        src_pws = [int(x) for x in (scfg.get("PRETRAINED_WINDOW_SIZES") or [0] * len(shape.depths))]
        if (target_img, target_window) != (int(src_img), src_window):
            # keep the continuous position bias evaluated on the source coordinate scale (as the official
            # fine-tuning does with PRETRAINED_WINDOW_SIZES)
            eff = [min(src_window, int(src_img) // shape.patch // 2 ** i) for i in range(len(shape.depths))]
            src_pws = [p if p > 0 else (w or e) for p, w, e in zip(src_pws, shape.windows, eff)]
        if any(src_pws):
            kwargs["pretrained_window_sizes"] = tuple(src_pws)
    name = arch or _swin_name(shape.v2, shape.embed_dim, shape.depths, target_window, target_img)
    return _Plan(name, kwargs, sd, method=method, dropped=dropped, notes=notes)


def unfold_to_timm_merge(w: torch.Tensor) -> torch.Tensor:
    """PatchMerging weight (reduction ``(out, 4C)``, norm ``(4C,)``) from ``nn.Unfold`` channel order (mmcv /
    mmseg / mmpretrain: index ``c*4 + 2*dh + dw``) to timm's / the official order (blocks of C for
    (dh, dw) = (0,0), (1,0), (0,1), (1,1): index ``(dh + 2*dw)*C + c``)."""
    lead = w.shape[:-1]
    c = w.shape[-1] // 4
    x = w.reshape(*lead, c, 4).transpose(-1, -2)          # (..., 4 [2*dh+dw], C)
    x = x[..., [0, 2, 1, 3], :]                            # -> (dh + 2*dw) order
    return x.reshape(*lead, 4 * c).contiguous()


def timm_to_unfold_merge(w: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`unfold_to_timm_merge`."""
    lead = w.shape[:-1]
    c = w.shape[-1] // 4
    x = w.reshape(*lead, 4, c)[..., [0, 2, 1, 3], :]
    return x.transpose(-1, -2).reshape(*lead, 4 * c).contiguous()


_MM_SWIN_RULES = [
    (r"^patch_embed\.projection\.(weight|bias)$", r"patch_embed.proj.\1"),
    (r"^patch_embed\.norm\.(weight|bias)$", r"patch_embed.norm.\1"),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.norm([12])\.(weight|bias)$", r"layers.\1.blocks.\2.norm\3.\4"),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.attn\.w_msa\.(qkv|proj)\.(weight|bias)$", r"layers.\1.blocks.\2.attn.\3.\4"),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.attn\.w_msa\.relative_position_bias_table$",
     r"layers.\1.blocks.\2.attn.relative_position_bias_table"),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.ffn\.layers\.0\.0\.(weight|bias)$", r"layers.\1.blocks.\2.mlp.fc1.\3"),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.ffn\.layers\.1\.(weight|bias)$", r"layers.\1.blocks.\2.mlp.fc2.\3"),
    (r"^stages\.(\d+)\.downsample\.(reduction|norm)\.(weight|bias)$", r"layers.\1.downsample.\2.\3"),
]


def _plan_swin_mm(bb: dict[str, torch.Tensor], *, arch: str | None, img_size: int | None,
                  window_size: int | None, method: str, dropped: list[str]) -> _Plan:
    notes: list[str] = []
    shape = _swin_shape(bb, stage_key="stages", block_attn="attn.w_msa")
    last = len(shape.depths) - 1
    sd: dict[str, torch.Tensor] = {}
    for k, v in bb.items():
        if k.endswith("relative_position_index") or k == "mask_token":
            dropped.append(k)
            continue
        m = re.match(r"^norm(\d+)\.(weight|bias)$", k)
        if m:
            if int(m.group(1)) == last:
                sd[f"norm.{m.group(2)}"] = v
            else:
                dropped.append(k)      # per-stage output norms of dense-prediction configs: not in timm's backbone
            continue
        sd[k] = v
    sd, unmapped = _rename(sd, _MM_SWIN_RULES)
    if unmapped:
        log.info("unmapped mmpretrain Swin keys: %s", _few(unmapped))
    for k in list(sd):
        if re.match(r"^layers\.\d+\.downsample\.(reduction\.weight|norm\.weight|norm\.bias)$", k):
            sd[k] = unfold_to_timm_merge(sd[k])
    extra = [k for k in dropped if re.match(r"^norm\d+\.", k)]
    if extra:
        log.warning("dropped per-stage output norms %s (timm's Swin has one final norm)", _few(extra))
    return _plan_swin(sd, shape, {}, src_img=None, arch=arch, img_size=img_size, window_size=window_size,
                      method=method, dropped=dropped, notes=notes)


# --------------------------------------------------------------------------------------------------------------
# Source parsers
# --------------------------------------------------------------------------------------------------------------


_SIMMIM_DROP = re.compile(r"^(mask_token|head\.|head_dist\.)|(relative_position_index|relative_coords_table|"
                          r"attn_mask)$")


def _plan_simmim(obj: Any, *, src: str, arch: str | None, img_size: int | None,
                 window_size: int | None) -> _Plan:
    if not isinstance(obj, dict) or "model" not in obj:
        raise CheckpointError(f"{src} has no 'model' entry, so it is not an official SimMIM checkpoint "
                              "(ckpt_epoch_N.pth)",
                              "use --from mmpretrain for OpenMMLab checkpoints or --from timm for plain state dicts")
    model_sd = obj["model"]
    if not _tensor_dict(model_sd):
        raise CheckpointError(f"{src}: 'model' is not a state dict of tensors", "pass an official SimMIM checkpoint")
    config = obj.get("config") if isinstance(obj.get("config"), dict) else None
    dropped = [k for k in model_sd if not k.startswith("encoder.")]
    enc = {k[len("encoder."):]: v for k, v in model_sd.items() if k.startswith("encoder.")}
    if not enc:  # a fine-tuned official checkpoint: the backbone at top level, plus a head
        enc, dropped = dict(model_sd), []
    full = dict(enc)                  # buffers kept here: window / image size can be read off them
    for k in list(enc):
        if _SIMMIM_DROP.search(k):
            dropped.append(k if k in model_sd else f"encoder.{k}")
            del enc[k]

    mtype = str(_cfg(config, "MODEL.TYPE", "") or "").lower()
    if not mtype:
        if any(k.startswith("layers.") for k in enc):
            mtype = "swinv2" if any("cpb_mlp" in k or "logit_scale" in k for k in enc) else "swin"
        elif any(k.startswith("blocks.") for k in enc):
            mtype = "vit"
    if mtype == "vit":
        if window_size is not None:
            raise CheckpointError("--window-size applies to Swin checkpoints only",
                                  "leave it out for a ViT (use --img-size)")
        return _plan_vit_official(enc, config, arch=arch, img_size=img_size, method="simmim", dropped=dropped)
    if mtype in ("swin", "swinv2"):
        shape = _swin_shape(full, stage_key="layers", block_attn="attn")
        scfg = _cfg(config, "MODEL.SWINV2" if shape.v2 else "MODEL.SWIN", {}) or {}
        return _plan_swin(enc, shape, scfg, src_img=_cfg(config, "DATA.IMG_SIZE"), arch=arch, img_size=img_size,
                          window_size=window_size, method="simmim", dropped=dropped, notes=[])
    raise CheckpointError(f"{src}: cannot tell the SimMIM encoder type (MODEL.TYPE={mtype or '?'}; keys like "
                          f"{_few(list(enc), 3)})", "only ViT, Swin and SwinV2 encoders are supported")


def _plan_mmpretrain(obj: Any, *, src: str, arch: str | None, img_size: int | None,
                     window_size: int | None) -> _Plan:
    sd = obj.get("state_dict") if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict) else obj
    if not isinstance(sd, dict):
        raise CheckpointError(f"{src} is not an mmpretrain checkpoint (no 'state_dict')", "pass an mmpretrain .pth")
    bb = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")
          and isinstance(v, torch.Tensor)}
    if not bb:
        raise CheckpointError(f"{src} has no backbone.* weights, so it is not an mmpretrain / OpenMMLab model "
                              "checkpoint", "use --from simmim for official SimMIM checkpoints or --from timm")
    dropped = [k for k in sd if not k.startswith("backbone.")]
    meta = obj.get("meta") if isinstance(obj, dict) else None
    cfg_text = meta.get("cfg") if isinstance(meta, dict) else None
    method = "simmim" if isinstance(cfg_text, str) and re.search(r"type\s*=\s*['\"]SimMIM['\"]", cfg_text) \
        else "unknown"
    if any("cpb_mlp" in k or "logit_scale" in k for k in bb):
        raise CheckpointError("mmpretrain SwinV2 checkpoints are not supported yet (their conversion could not be "
                              "validated against OpenMMLab code)",
                              "convert an official SimMIM SwinV2 checkpoint with --from simmim instead")
    if any(k.startswith("stages.") for k in bb):
        return _plan_swin_mm(bb, arch=arch, img_size=img_size, window_size=window_size, method=method,
                             dropped=dropped)
    if any(k.startswith("layers.") for k in bb):
        if window_size is not None:
            raise CheckpointError("--window-size applies to Swin checkpoints only", "leave it out for a ViT")
        if "mask_token" in bb:
            dropped.append("backbone.mask_token")
            bb = {k: v for k, v in bb.items() if k != "mask_token"}
        return _plan_vit_mm(bb, meta, arch=arch, img_size=img_size, method=method, dropped=dropped)
    raise CheckpointError(f"{src}: the backbone is neither a ViT (backbone.layers.*) nor a Swin "
                          "(backbone.stages.*)", "only ViT and Swin backbones are supported")


def _plan_timm(obj: Any, *, src: str, arch: str | None, img_size: int | None, window_size: int | None) -> _Plan:
    if not arch:
        raise CheckpointError("--from timm needs the model name", "pass --arch, e.g. --arch vit_base_patch16_224")
    sd = None
    if _tensor_dict(obj):
        sd = obj
    elif isinstance(obj, dict):
        for key in ("state_dict", "model", "state_dict_ema", "model_ema"):
            if _tensor_dict(obj.get(key)):
                sd = obj[key]
                log.info("%s: using the weights under '%s'", src, key)
                break
    if sd is None:
        raise CheckpointError(f"{src} holds no state dict (neither a dict of tensors nor one under 'state_dict', "
                              "'model' or 'state_dict_ema')", "pass a checkpoint saved from a timm model")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    import timm

    classifier = timm.models.get_pretrained_cfg_value(arch, "classifier") or "head"
    heads = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    dropped = [k for k in sd if any(k == h or k.startswith(h + ".") for h in heads + ("head_dist",))]
    sd = {k: v for k, v in sd.items() if k not in set(dropped)}
    kwargs: dict[str, Any] = {}
    if img_size:
        kwargs["img_size"] = int(img_size)
    if window_size:
        if variant(arch) not in ("swin", "swinv2"):
            raise CheckpointError("--window-size applies to Swin models only", "leave it out")
        kwargs["window_size"] = int(window_size)
    return _Plan(arch, kwargs, sd, method="unknown", dropped=dropped)
