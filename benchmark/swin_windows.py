"""Swin geometry at fine-tuning time: larger attention windows than pre-training, and Swin layer-decay counting.

Windows (``MIMBackbone(window_size=..., img_size=...)``). The paper's depth code (SwinTransformer/MIM-Depth-Estimation,
README ``--window_size 30 30 30 15 --pretrain_window_size 12 12 12 6 --use_shift True True False False`` at a
480×480 crop; KITTI 22/22/22/11 at 352×352) fine-tunes SwinV2 with windows larger than the pre-training ones.
SwinV2's continuous position bias (``cpb_mlp``) is window-independent: timm re-computes the coordinate table and
index for any window (non-persistent buffers), evaluating the MLP on coordinates normalised by the *pre-training*
window (``pretrained_window_sizes``, the official ``norm8_log_bylayer``). :func:`swin_window_overrides` gives the
timm kwargs: the new per-stage windows, ``img_size`` (timm clips each stage's window to that stage's feature map
and turns the shift off where the window covers the map — at 480 / window 30 the official 30/30/30/15 with shifts
15/15/0/0), and ``pretrained_window_sizes`` = the windows the checkpoint's CPB was trained at (its own
``pretrained_window_sizes`` where set, else its effective, clipped, window per stage). Swin V1 stores one
relative-position bias table per window size (a learned parameter); a different window is refused
(BenchmarkError) instead of silently interpolating it.

Layer decay (``swin_merge_layer_ids``): the official code (models/optimizer.py ``get_num_layer_for_swin``, from
SimMIM) counts every patch merging as its own layer: patch embed 0, then per stage its merging (timm puts it at
the START of stages 1-3) and its blocks in order, everything else (output norm, head) the top id — 29 ids for
depths 2/2/18/2. timm's ``group_matcher`` instead gives a merging its stage's first block id.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .errors import BenchmarkError

__all__ = ["stage_windows", "stage_shifts", "swin_window_overrides", "swin_merge_layer_ids"]


def _per_stage(value: int | Sequence[int], n: int, what: str) -> tuple[int, ...]:
    vals = [value] * n if isinstance(value, int) else list(value)
    if len(vals) != n or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in vals):
        raise BenchmarkError(f"{what} {value!r} must be one positive int or {n} (one per Swin stage)",
                             f"e.g. {what}=[30, 30, 30, 15]")
    return tuple(int(v) for v in vals)


def _size2(value: int | Sequence[int]) -> tuple[int, int]:
    vals = [value, value] if isinstance(value, int) else list(value)
    if len(vals) != 2 or not all(int(v) > 0 for v in vals):
        raise BenchmarkError(f"img_size {value!r} must be an int or (height, width)", "e.g. img_size=[480, 480]")
    return int(vals[0]), int(vals[1])


def _first_attn(stage: nn.Module) -> nn.Module:
    return stage.blocks[0].attn


def stage_windows(trunk: nn.Module) -> list[tuple[int, int]]:
    """The (clipped) attention window of each stage of a timm Swin / SwinV2."""
    return [tuple(int(v) for v in stage.blocks[0].window_size) for stage in trunk.layers]


def stage_shifts(trunk: nn.Module) -> list[tuple[int, int]]:
    """The shift of each stage's shifted blocks (odd blocks; (0, 0) when the stage has none or shifts nothing)."""
    return [max((tuple(int(v) for v in blk.shift_size) for blk in stage.blocks), default=(0, 0))
            for stage in trunk.layers]


def _pretrained_windows(trunk: nn.Module) -> tuple[tuple[int, int], ...]:
    """The windows the CPB of a SwinV2 trunk normalises its coordinates by: pretrained_window_size where set,
    else the stage's own window."""
    out = []
    for stage in trunk.layers:
        attn = _first_attn(stage)
        pws = tuple(int(v) for v in attn.pretrained_window_size)
        out.append(pws if pws[0] > 0 else tuple(int(v) for v in attn.window_size))
    return tuple(out)


def swin_window_overrides(meta: dict[str, Any], window_size: int | Sequence[int] | None,
                          img_size: int | Sequence[int] | None) -> dict[str, Any]:
    """timm kwargs that build a canonical checkpoint's Swin trunk with new windows (and the geometry that clips
    them); the checkpoint still fills the trunk. ``window_size``: one int or one per stage (None: the checkpoint's
    own); ``img_size``: int or (h, w) (None: the checkpoint's), the input size whose feature maps decide the
    per-stage clipping and shifts. BenchmarkError for a Swin V1 whose windows would change."""
    from .checkpoint import build_model
    from .families import variant

    arch = str(meta.get("arch"))
    var = variant(arch)
    if var not in ("swin", "swinv2"):
        raise BenchmarkError(f"window_size / img_size apply to Swin backbones, not '{arch}'",
                             "leave window_size and img_size unset for this backbone")
    with torch.device("meta"):
        ref = build_model(meta, strict_img_size=False)
    n = len(ref.layers)
    kwargs: dict[str, Any] = {}
    if img_size is not None:
        kwargs["img_size"] = _size2(img_size)
    if window_size is not None:
        kwargs["window_size"] = _per_stage(window_size, n, "window_size")
    if var == "swinv2":
        kwargs["pretrained_window_sizes"] = _pretrained_windows(ref)
        return kwargs
    with torch.device("meta"):
        new = build_model(meta, strict_img_size=False, **kwargs)
    old_w, new_w = stage_windows(ref), stage_windows(new)
    if old_w != new_w:
        raise BenchmarkError(f"Swin V1 '{arch}' stores one relative-position bias table per window size: windows "
                             f"{old_w} -> {new_w} would need its tables resized",
                             "fine-tune Swin V1 at its own windows (leave window_size unset, or use an img_size "
                             "that keeps them), or use a SwinV2 checkpoint (continuous position bias)")
    return kwargs


def swin_merge_layer_ids(trunk: nn.Module) -> tuple[dict[str, int], int]:
    """(layer id per trunk parameter, head id) with each patch merging its own layer, as the paper's depth code
    counts (MIM-Depth-Estimation ``get_num_layer_for_swin``; SimMIM's fine-tuning code instead gives a merging the
    id of the block before it). Parameters not in the patch
    embedding, a merging or a block (the final norm) take the head id."""
    layers = getattr(trunk, "layers", None)
    if layers is None or not all(hasattr(s, "blocks") for s in layers):
        raise BenchmarkError(f"{type(trunk).__name__} is not a Swin trunk: patch mergings cannot count as layers",
                             "set swin_merge_own_layer only for Swin backbones")
    ids: dict[str, int] = {}
    for name in ("absolute_pos_embed", "cls_token", "mask_token", "pos_embed"):
        if isinstance(getattr(trunk, name, None), nn.Parameter):
            ids[name] = 0
    for name, _ in trunk.patch_embed.named_parameters():
        ids[f"patch_embed.{name}"] = 0
    lid = 0
    for i, stage in enumerate(layers):
        merge = getattr(stage, "downsample", None)
        merge_params = list(merge.named_parameters()) if merge is not None else []
        if merge_params:
            lid += 1
            ids.update({f"layers.{i}.downsample.{n}": lid for n, _ in merge_params})
        for j, blk in enumerate(stage.blocks):
            lid += 1
            ids.update({f"layers.{i}.blocks.{j}.{n}": lid for n, _ in blk.named_parameters()})
    return ids, lid + 1
