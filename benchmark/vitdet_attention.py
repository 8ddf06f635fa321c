"""ViTDet's backbone design for a timm plain ViT: window attention + decomposed relative positions (opt-in).

ViTDet (Li et al., "Exploring Plain Vision Transformer Backbones for Object Detection") fine-tunes a plain ViT for
detection with **window attention** in most blocks and **global attention** in four of them, and adds
**decomposed relative positional embeddings** to every block. The official code is detectron2
``detectron2/modeling/backbone/vit.py`` (``Attention``, ``Block``, ``ViT``) and ``.../backbone/utils.py``
(``window_partition``, ``window_unpartition``, ``get_rel_pos``, ``add_decomposed_rel_pos``); the recipe is
``projects/ViTDet/configs/common/...`` / ``configs/common/models/mask_rcnn_vitdet.py`` (``window_size=14``,
``use_rel_pos=True``, ``img_size=1024``; ViT-B global blocks 2, 5, 8, 11, i.e. ``window_block_indexes`` all the
others; ViT-L 5, 11, 17, 23 and ViT-H 7, 15, 23, 31 in ``COCO/mask_rcnn_vitdet_{l,h}_*.py``): the last block of each
quarter of the depth (:func:`default_global_blocks`). mmdet's port is ``projects/ViTDet/vitdet/vit.py``.

What :func:`apply_window_attention` does to a timm ``VisionTransformer`` (whose weights are already loaded):

* every block's timm ``Attention`` becomes a :class:`WindowAttention` by a class swap: the same ``qkv`` / ``proj`` /
  norm / dropout submodules under the same names, so the checkpoint's keys and coverage are unchanged;
* windowed blocks: the (already ``norm1``-ed) token map is zero-padded at the bottom / right to a multiple of the
  window (detectron2 ``window_partition``: padded tokens take part as keys, they are not masked), split into
  ``window × window`` windows, attention runs per window, the windows are put back and the padding is cropped
  (``window_unpartition``); global blocks attend over the whole grid;
* ``rel_pos=True``: each block gets two NEW parameters ``rel_pos_h`` / ``rel_pos_w`` of shape ``(2 * size - 1,
  head_dim)`` with ``size`` = the window (windowed blocks) or the token grid of ``img_size`` (global blocks: 64 for a
  1024 input and patch 16), zero-initialised (detectron2's ``rel_pos_zero_init=True``; MIM checkpoints have no such
  tables, so they are trained from scratch). The attention logits get detectron2's ``add_decomposed_rel_pos`` term
  ``q · R_h[qh - kh] + q · R_w[qw - kw]`` (unscaled ``q``, added after ``q·k * scale``); when the query grid differs
  from the table's size the table is linearly resampled as ``get_rel_pos`` does;
* the class token (and any register token): ViTDet's backbone has none (``pretrain_use_cls_token`` only tells it to
  skip the cls entry of the pos-embed). Here the prefix tokens are dropped after the absolute pos-embed is added
  (timm's ``dynamic_img_size`` resamples it to the grid, as detectron2's ``get_abs_pos``), so every block, windowed
  or global, sees the patch tokens only, exactly as ViTDet. :func:`window_features` is that forward; the unused
  ``cls_token`` / ``reg_token`` get ``requires_grad=False`` (they are still loaded, so coverage stays complete, and
  DDP with ``find_unused_parameters=False`` does not trip over them).

Optimizer (``benchmark.layer_decay``): the tables are named ``blocks.<i>.attn.rel_pos_{h,w}``, so timm's
``group_matcher`` gives them their block's layer id. They take the base weight decay, as in both official recipes:
detectron2's ``get_default_optimizer_params`` (``configs/common/optim.py``: ``weight_decay_norm=0``, overrides only for
``pos_embed``) and mmdet's ``projects/ViTDet/vitdet/layer_decay_optimizer_constructor.py`` (no decay only for 1-D
params, biases, ``pos_embed`` and ``cls_token``) both decay 2-D ``rel_pos`` tables; ``layer_decay`` does the same
(they are 2-D and not in timm's ``no_weight_decay()``).

The attention itself runs through ``F.scaled_dot_product_attention`` with the relative-position term as a float
``attn_mask`` when timm's attention is fused (the same numbers as the written-out softmax), otherwise written out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import Attention as _TimmAttention
from torch import nn
from torch.utils.checkpoint import checkpoint as _grad_checkpoint

from .errors import BenchmarkError

__all__ = ["WindowAttention", "apply_window_attention", "default_global_blocks", "window_features",
           "window_partition", "window_unpartition", "get_rel_pos", "decomposed_rel_pos", "added_parameter_names",
           "normalise_config"]

DEFAULT_WINDOW = 14
DEFAULT_IMG_SIZE = 1024


def default_global_blocks(depth: int) -> tuple[int, ...]:
    """The last block of each quarter of the depth: ViT-B (12) 2, 5, 8, 11; ViT-L (24) 5, 11, 17, 23; ViT-H (32) 7,
    15, 23, 31 (the detectron2 ViTDet configs)."""
    return tuple(sorted({max(0, (q + 1) * depth // 4 - 1) for q in range(4)}))


# ---------------------------------------------------------------------------------------------------- the pieces
def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, H, W, C) -> (B * nWin, window, window, C), zero-padded bottom / right; and the padded (Hp, Wp)."""
    b, h, w, c = x.shape
    pad_h, pad_w = (-h) % window, (-w) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window, window, wp // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c), (hp, wp)


def window_unpartition(windows: torch.Tensor, window: int, padded: tuple[int, int],
                       size: tuple[int, int]) -> torch.Tensor:
    """The inverse of :func:`window_partition`: (B * nWin, window, window, C) -> (B, H, W, C), padding cropped."""
    hp, wp = padded
    h, w = size
    b = windows.shape[0] // ((hp // window) * (wp // window))
    x = windows.view(b, hp // window, wp // window, window, window, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    return x[:, :h, :w] if (hp > h or wp > w) else x


def get_rel_pos(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """(q_size, k_size, C) embeddings of the relative offsets along one axis (detectron2 ``get_rel_pos``): the
    (L, C) table linearly resampled to ``2 * max(q, k) - 1`` rows when it has another length."""
    max_dist = int(2 * max(q_size, k_size) - 1)
    if rel_pos.shape[0] != max_dist:
        table = F.interpolate(rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1), size=max_dist,
                              mode="linear")
        table = table.reshape(-1, max_dist).permute(1, 0)
    else:
        table = rel_pos
    dev = rel_pos.device
    q_coords = torch.arange(q_size, device=dev)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=dev)[None, :] * max(q_size / k_size, 1.0)
    rel = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return table[rel.long()]


def decomposed_rel_pos(q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor,
                       q_size: tuple[int, int], k_size: tuple[int, int]) -> torch.Tensor:
    """The additive logit term of detectron2's ``add_decomposed_rel_pos`` for ``q`` of shape (B, heads, qh*qw, C):
    (B, heads, qh*qw, kh*kw) = ``q · Rh[qh, kh] + q · Rw[qw, kw]`` broadcast over the other axis."""
    qh, qw = q_size
    kh, kw = k_size
    rh = get_rel_pos(qh, kh, rel_pos_h).to(q.dtype)
    rw = get_rel_pos(qw, kw, rel_pos_w).to(q.dtype)
    b, n, _, c = q.shape
    r_q = q.reshape(b, n, qh, qw, c)
    rel_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, rh)
    rel_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, rw)
    return (rel_h[..., :, None] + rel_w[..., None, :]).reshape(b, n, qh * qw, kh * kw)


# ---------------------------------------------------------------------------------------------------- the module
class WindowAttention(_TimmAttention):
    """timm ``Attention`` with ViTDet's window partition and decomposed relative positions.

    Made from a timm ``Attention`` by :meth:`convert` (class swap: the ``qkv`` / ``proj`` weights stay where they
    are). Input: (B, H*W, C) patch tokens (no prefix tokens) of the grid ``self.grid`` (set by
    :func:`window_features` before every forward and left set, so activation-checkpoint recomputation sees it).
    ``window_size`` 0 means global attention.
    """

    window_size: int = 0
    use_rel_pos: bool = False
    grid: tuple[int, int] | None = None

    @classmethod
    def convert(cls, attn: nn.Module, window_size: int, rel_pos: bool, table_size: int) -> WindowAttention:
        if type(attn) is not _TimmAttention:
            raise BenchmarkError(f"window attention needs timm's vision_transformer Attention, got "
                                 f"{type(attn).__module__}.{type(attn).__name__}",
                                 "use window attention with a timm VisionTransformer (ViT / DeiT) backbone only")
        if getattr(attn, "gate", None) is not None:
            raise BenchmarkError("window attention does not support timm's gated attention",
                                 "use attention=global for this backbone")
        attn.__class__ = cls
        attn.window_size = int(window_size)
        attn.use_rel_pos = bool(rel_pos)
        if attn.use_rel_pos:
            ref = attn.qkv.weight
            size = int(window_size) if window_size else int(table_size)
            attn.rel_pos_h = nn.Parameter(torch.zeros(2 * size - 1, attn.head_dim, device=ref.device,
                                                      dtype=ref.dtype))
            attn.rel_pos_w = nn.Parameter(torch.zeros(2 * size - 1, attn.head_dim, device=ref.device,
                                                      dtype=ref.dtype))
        return attn

    def extra_repr(self) -> str:
        return f"window_size={self.window_size}, rel_pos={self.use_rel_pos}"

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        if attn_mask is not None or is_causal:
            raise BenchmarkError("window attention takes no attention mask", "run it through window_features")
        b, n, c = x.shape
        if self.grid is None:
            raise BenchmarkError("WindowAttention has no token grid", "run the trunk through window_features")
        h, w = self.grid
        if n != h * w:
            raise BenchmarkError(f"WindowAttention got {n} tokens for a {h}x{w} grid",
                                 "run the trunk through window_features (patch tokens only)")
        ws = self.window_size
        if ws:
            x, padded = window_partition(x.view(b, h, w, c), ws)
            size = (ws, ws)
            x = x.view(-1, ws * ws, c)
        else:
            size = (h, w)
        bw, nw, _ = x.shape
        qkv = self.qkv(x).reshape(bw, nw, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        bias = decomposed_rel_pos(q, self.rel_pos_h, self.rel_pos_w, size, size) if self.use_rel_pos else None
        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias,
                                               dropout_p=self.attn_drop.p if self.training else 0.0)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            if bias is not None:
                attn = attn + bias
            attn = self.attn_drop(attn.softmax(dim=-1))
            x = attn @ v
        x = x.transpose(1, 2).reshape(bw, nw, self.attn_dim)
        x = self.proj_drop(self.proj(self.norm(x)))
        if ws:
            x = window_unpartition(x.view(-1, ws, ws, x.shape[-1]), ws, padded, (h, w)).reshape(b, h * w, -1)
        return x


# ---------------------------------------------------------------------------------------------------- the trunk
def _as_pair(v: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(v, Iterable):
        a, b = (int(t) for t in v)
        return a, b
    return int(v), int(v)


def normalise_config(cfg: dict[str, Any], depth: int) -> dict[str, Any]:
    """MIMBackbone's ``window_attention`` dict with every default filled: window_size (14), global_blocks (the last
    block of each depth quarter), rel_pos (True), img_size (1024: the global blocks' rel-pos tables are sized for
    its token grid)."""
    unknown = set(cfg) - {"window_size", "global_blocks", "rel_pos", "img_size"}
    if unknown:
        raise BenchmarkError(f"window_attention does not take {sorted(unknown)}",
                             "keys: window_size, global_blocks, rel_pos, img_size")
    window = int(cfg.get("window_size", DEFAULT_WINDOW))
    blocks = cfg.get("global_blocks")
    blocks = default_global_blocks(depth) if blocks is None else tuple(sorted({int(i) for i in blocks}))
    if window <= 0:
        raise BenchmarkError(f"window_attention.window_size must be positive, got {window}", "e.g. 14 (ViTDet)")
    if any(not 0 <= i < depth for i in blocks):
        raise BenchmarkError(f"window_attention.global_blocks {list(blocks)} outside 0..{depth - 1}",
                             "0-based block indices")
    return {"window_size": window, "global_blocks": list(blocks), "rel_pos": bool(cfg.get("rel_pos", True)),
            "img_size": int(cfg.get("img_size", DEFAULT_IMG_SIZE))}


def apply_window_attention(trunk: nn.Module, window_size: int, global_blocks: Iterable[int], rel_pos: bool,
                           grid: int | Sequence[int]) -> nn.Module:
    """Turn the attention of every block of a timm ``VisionTransformer`` (weights already loaded) into ViTDet's:
    windows of ``window_size`` except in ``global_blocks``; with ``rel_pos`` new zero tables per block, sized by
    the window or, for global blocks, by ``grid`` (the token grid of the training input, e.g. 64 for 1024 px / 16;
    square: its larger side). The trunk must then be run through :func:`window_features`. Returns the trunk."""
    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(trunk, VisionTransformer):
        raise BenchmarkError(f"window attention is implemented for timm VisionTransformer, not {type(trunk).__name__}",
                             "use attention=global for this backbone")
    drop = getattr(trunk.patch_drop, "prob", 0.0) if not isinstance(trunk.patch_drop, nn.Identity) else 0.0
    if drop:
        raise BenchmarkError("window attention needs the whole token grid: patch dropout is on",
                             "set patch_drop_rate=0")
    depth = len(trunk.blocks)
    global_set = {int(i) for i in global_blocks}
    table = max(_as_pair(grid))
    for i, blk in enumerate(trunk.blocks):
        WindowAttention.convert(blk.attn, 0 if i in global_set else int(window_size), rel_pos, table)
    # ViTDet has no class token: the prefix tokens are dropped in window_features and take no gradient
    for name in ("cls_token", "reg_token", "dist_token"):
        p = getattr(trunk, name, None)
        if isinstance(p, nn.Parameter):
            p.requires_grad_(False)
    trunk.mim_window_attention = {"window_size": int(window_size), "global_blocks": sorted(global_set),
                                  "rel_pos": bool(rel_pos), "grid": table, "depth": depth}
    return trunk


def added_parameter_names(trunk: nn.Module) -> set[str]:
    """The trunk's state-dict keys that :func:`apply_window_attention` added (no checkpoint has them)."""
    return {n for n, _ in trunk.named_parameters() if n.endswith(".attn.rel_pos_h") or n.endswith(".attn.rel_pos_w")}


class CheckpointView:
    """The trunk as ``benchmark.checkpoint.load_weights`` sees it when re-loading a checkpoint: its state dict
    without the added rel-pos tables (so coverage is that of the checkpoint's own tensors, and the tables keep
    their values)."""

    def __init__(self, trunk: nn.Module):
        self.trunk = trunk
        self.skip = added_parameter_names(trunk)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.trunk.state_dict().items() if k not in self.skip}

    def load_state_dict(self, state: dict[str, torch.Tensor], strict: bool = False):
        return self.trunk.load_state_dict(state, strict=False)


def window_features(trunk: nn.Module, x: torch.Tensor, norm: bool = True) -> torch.Tensor:
    """The last block's patch tokens (after the final norm when ``norm``) as NCHW, for a trunk converted by
    :func:`apply_window_attention`: timm's ``forward_intermediates`` up to the pos-embed, then the prefix tokens
    dropped (ViTDet has none) and the blocks run on the patch tokens with the grid known to every attention."""
    b, _, height, width = x.shape
    grid = tuple(int(g) for g in trunk.patch_embed.dynamic_feat_size((height, width)))
    t = trunk.patch_embed(x)
    t = trunk._pos_embed(t)
    t = trunk.patch_drop(t)
    t = trunk.norm_pre(t)
    t = t[:, trunk.num_prefix_tokens:]
    for blk in trunk.blocks:
        blk.attn.grid = grid
    for blk in trunk.blocks:
        if trunk.grad_checkpointing and torch.is_grad_enabled():
            t = _grad_checkpoint(blk, t, use_reentrant=False)
        else:
            t = blk(t)
    if norm:
        t = trunk.norm(t)
    return t.reshape(b, grid[0], grid[1], -1).permute(0, 3, 1, 2).contiguous()


def grid_of(img_size: int, patch: int) -> int:
    """Token grid side of a square ``img_size`` input (detectron2: ``img_size // patch_size``)."""
    return max(1, int(img_size) // int(patch))
