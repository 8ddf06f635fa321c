"""Intermediate-block features of a plain ViT for mmseg's ``Feature2Pyramid`` neck (the BEiT / MAE UperNet design).

mmseg's BEiT / MAE segmentation backbones (``mmseg/models/backbones/beit.py``, ``mae.py``; ``final_norm=False`` in
``configs/_base_/models/upernet_beit.py`` / ``upernet_mae.py``) return the raw outputs of four blocks (prefix token
dropped, NCHW at the patch stride, no LayerNorm applied), and the ``Feature2Pyramid`` neck
(``mmseg/models/necks/featurepyramid.py``) rescales them by 4 / 2 / 1 / 0.5 into the four UperNet levels. The blocks
are (3, 5, 7, 11) of ViT-B's 12 (``upernet_mae.py``, ``upernet_beit.py``) and (7, 11, 15, 23) of ViT-L's 24
(``configs/beit/beit-large_upernet_8xb1-amp-160k_ade20k-640x640.py``): the blocks at 1/3, 1/2, 2/3 and 3/3 of the
depth, which :func:`default_feature_blocks` generalises to any depth.

``MIMBackbone(feature_blocks=...)`` uses :func:`check_feature_blocks` and :func:`block_maps`; task adapters use
:func:`default_feature_blocks`, :func:`trunk_depth` and :func:`feature2pyramid_rescales`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .errors import BenchmarkError

__all__ = ["block_maps", "check_feature_blocks", "default_feature_blocks", "feature2pyramid_rescales", "trunk_depth"]

# 1-based block k * depth / 12 for these k: ViT-B (12) -> 4, 6, 8, 12; ViT-L (24) -> 8, 12, 16, 24 (mmseg's configs)
_TWELFTHS = (4, 6, 8, 12)
# the two rescale lists mmseg's Feature2Pyramid implements (it raises on anything else)
_NECK_RESCALES = ([4, 2, 1, 0.5], [2, 1, 0.5, 0.25])


def default_feature_blocks(depth: int) -> tuple[int, ...]:
    """0-based indices of the four blocks mmseg's BEiT / MAE UperNet configs read, for a trunk of ``depth`` blocks:
    12 -> (3, 5, 7, 11), 24 -> (7, 11, 15, 23); shallow trunks may repeat a block (depth 2 -> (0, 0, 0, 1))."""
    depth = int(depth)
    if depth < 1:
        raise BenchmarkError(f"a trunk of {depth} blocks has no features", "use a ViT with at least one block")
    return tuple(max(1, (depth * k + 6) // 12) - 1 for k in _TWELFTHS)


def trunk_depth(meta: dict) -> int:
    """Number of transformer blocks of the plain ViT a checkpoint ``meta`` describes (built on the meta device)."""
    from .checkpoint import build_model

    with torch.device("meta"):
        trunk = build_model(meta)
    blocks = getattr(trunk, "blocks", None)
    if blocks is None:
        raise BenchmarkError(f"{meta.get('arch')} has no `blocks`: intermediate-block features need a plain ViT",
                             "use the simple pyramid (vit_neck=simple)")
    return len(blocks)


def feature2pyramid_rescales(patch_size: int) -> list[float]:
    """Feature2Pyramid ``rescales`` that bring patch-stride maps to strides 4 / 8 / 16 / 32 (patch 16: 4, 2, 1, 0.5 as
    mmseg's configs; patch 8: 2, 1, 0.5, 0.25); BenchmarkError for a patch size the neck cannot serve."""
    rescales = [patch_size / s for s in (4, 8, 16, 32)]
    for allowed in _NECK_RESCALES:
        if rescales == allowed:
            return list(allowed)
    raise BenchmarkError(f"Feature2Pyramid cannot bring patch-{patch_size} maps to strides 4/8/16/32 (rescales "
                         f"{rescales}; mmseg implements {_NECK_RESCALES[0]} and {_NECK_RESCALES[1]})",
                         "use a patch-16 or patch-8 ViT, or the simple pyramid (vit_neck=simple)")


def check_feature_blocks(blocks: Sequence[int], depth: int) -> tuple[int, ...]:
    """``blocks`` as a tuple of ints, each a 0-based block index of a ``depth``-block trunk (repeats allowed)."""
    out = tuple(int(b) for b in blocks)
    if not out or not all(0 <= b < depth for b in out):
        raise BenchmarkError(f"feature_blocks {out} must be block indices in 0..{depth - 1} (0-based)",
                             f"e.g. feature_blocks={default_feature_blocks(depth)}")
    return out


def block_maps(trunk: nn.Module, x: torch.Tensor, blocks: Sequence[int]) -> list[torch.Tensor]:
    """The raw outputs (no final norm) of ``blocks`` of a timm ViT / DeiT / EVA, prefix tokens dropped, NCHW, in the
    order of ``blocks`` (a repeated block is returned once per mention)."""
    unique = sorted(set(blocks))
    feats = trunk.forward_intermediates(x, indices=unique, norm=False, output_fmt="NCHW", intermediates_only=True)
    by_block = dict(zip(unique, feats))
    return [by_block[b] for b in blocks]
