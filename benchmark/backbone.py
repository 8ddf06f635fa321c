"""One backbone for every OpenMMLab task: a timm model loaded from a canonical checkpoint.

``MIMBackbone`` is registered in mmengine's ROOT ``MODELS`` registry, so mmdet, mmseg and mmpose configs all find
it by ``type='MIMBackbone'`` (registering in one library's registry does not reach the others). Its weights come
only from :func:`benchmark.checkpoint.load_backbone` (full coverage enforced there), never from mmengine's
``init_cfg`` / ``Pretrained`` path, which loads with ``strict=False`` and silently trains from random weights when
keys do not match.

Outputs: a tuple of NCHW maps, one per ``out_indices`` entry, where index ``i`` is stride ``4 * 2**i`` of the input
(4/8/16/32). For an input of H×W the map of stride ``s`` is ``ceil(H/s) × ceil(W/s)``: the input is zero-padded on
the bottom/right to a multiple of 32 (and of the patch size) and the maps are cropped back.

* Plain ViT / DeiT / EVA / BEiT (one token grid): a ViTDet-style simple feature pyramid from the last block's tokens
  (prefix tokens dropped). Per level: ``ConvTranspose2d(k=2, s=2)`` steps (LayerNorm2d + GELU between, channels
  halved per step, as ViTDet) while the stride is below the patch size, nothing when equal, ``MaxPool2d(2)`` steps
  when above; then ``1×1 conv + LN + 3×3 conv + LN`` to ``out_channels`` (default: embed_dim).
  ViT / DeiT / EVA are built with timm's ``dynamic_img_size=True`` (pos-embed resampled per input size). timm's
  BEiT has no such option; here its absolute pos-embed and relative-position bias tables (per block or shared) are
  resampled per input grid (bicubic, differentiable) by :class:`_DynBeitAttention` / :class:`_DynBeitRelPosBias`.
  Opt-in ``feature_blocks``: no pyramid; the raw maps of those blocks at the patch stride for mmseg's
  ``Feature2Pyramid`` neck (the BEiT / MAE UperNet design, :mod:`benchmark.feature2pyramid`).
* Swin / SwinV2: timm's native stages (``forward_intermediates``), built with ``strict_img_size=False`` (timm pads
  to window multiples and builds the shift masks per input size). Stages after the last requested one are pruned;
  the last stage uses timm's final norm, earlier requested stages get a new LayerNorm2d (as mmdet's Swin does).
  ``out_channels`` (optional) adds a 1×1 conv + LN projection per stage. Opt-in ``window_size`` / ``img_size``:
  SwinV2 fine-tuned with other windows than pre-training (the paper's depth code; :mod:`benchmark.swin_windows`).

Layer-wise lr decay lives in :mod:`benchmark.layer_decay`; this module imports it, so importing
``benchmark.backbone`` (to register MIMBackbone) also registers ``MIMLayerDecayOptimWrapperConstructor``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from timm.layers import LayerNorm2d, resample_abs_pos_embed
from timm.models import beit as _timm_beit
from torch import nn
from torch.utils.checkpoint import checkpoint as _grad_checkpoint

from .checkpoint import build_model, load_backbone, load_canonical, load_weights
from .errors import BenchmarkError, CheckpointError
from .families import family
from .layer_decay import TrunkHolder  # importing layer_decay registers MIMLayerDecayOptimWrapperConstructor

__all__ = ["MIMBackbone", "PYRAMID_STRIDES", "native_level", "output_channels"]

PYRAMID_STRIDES = (4, 8, 16, 32)



# ----------------------------------------------------------------------------------------------------------------
# BEiT at any input size: relative-position bias tables resampled (differentiably) to the current token grid.

def _rel_pos_index(grid: tuple[int, int], device: torch.device) -> torch.Tensor:
    return _timm_beit.gen_relative_position_index(grid, device=device)


def _resized_rel_pos_bias(table: torch.Tensor, window: Sequence[int], grid: tuple[int, int]) -> torch.Tensor:
    """BEiT bias (num_heads, N+1, N+1) for token grid ``grid`` from a table trained for grid ``window``.

    The table holds (2Wh-1)(2Ww-1) relative offsets plus 3 cls-token entries; the offset map is resized bicubically
    (so gradients reach the stored table), the cls entries are kept.
    """
    wh, ww = int(window[0]), int(window[1])
    h, w = grid
    n_old = (2 * wh - 1) * (2 * ww - 1)
    num_heads = table.shape[1]
    offsets = table[:n_old].t().reshape(1, num_heads, 2 * wh - 1, 2 * ww - 1)
    offsets = F.interpolate(offsets.float(), size=(2 * h - 1, 2 * w - 1), mode="bicubic",
                            align_corners=False).to(table.dtype)
    new_table = torch.cat([offsets.reshape(num_heads, -1).t(), table[n_old:]], dim=0)
    index = _rel_pos_index((h, w), table.device)
    n = h * w + 1
    return new_table[index.view(-1)].view(n, n, num_heads).permute(2, 0, 1).contiguous()


class _DynBeitAttention(_timm_beit.Attention):
    """timm BEiT attention whose per-block relative-position bias follows ``self._mim_grid``.

    MIMBackbone swaps the class of the trunk's attention modules to this one and sets ``_mim_grid`` before every
    forward; the grid is left set afterwards so that activation-checkpoint recomputation in backward sees it.
    """

    _mim_grid: tuple[int, int] | None = None

    def _get_rel_pos_bias(self) -> torch.Tensor:
        grid = self._mim_grid
        if grid is None or tuple(grid) == tuple(self.window_size):
            return super()._get_rel_pos_bias()
        return _resized_rel_pos_bias(self.relative_position_bias_table, self.window_size, grid).unsqueeze(0)


class _DynBeitRelPosBias(_timm_beit.RelativePositionBias):
    """timm BEiT shared relative-position bias that follows ``self._mim_grid``."""

    _mim_grid: tuple[int, int] | None = None

    def forward(self) -> torch.Tensor:
        grid = self._mim_grid
        if grid is None or tuple(grid) == tuple(self.window_size):
            return super().forward()
        return _resized_rel_pos_bias(self.relative_position_bias_table, self.window_size, grid)


# ----------------------------------------------------------------------------------------------------------------
# the simple feature pyramid (ViTDet)

def _layer_norm_2d(channels: int) -> nn.Module:
    return LayerNorm2d(channels)


def _log2_ratio(a: int, b: int, what: str) -> int:
    r = a // b
    if a % b or r & (r - 1):
        raise CheckpointError(f"{what}: {a}/{b} is not a power of two, the simple feature pyramid cannot reach it",
                              "use a backbone whose patch size is a power of two (4, 8, 16, 32)")
    return int(math.log2(r))


def _pyramid_level(dim: int, patch: int, stride: int, out_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    c = dim
    if stride < patch:
        for k in range(_log2_ratio(patch, stride, f"stride {stride} from patch {patch}")):
            if k:
                layers += [_layer_norm_2d(c), nn.GELU()]
            layers.append(nn.ConvTranspose2d(c, max(c // 2, 1), kernel_size=2, stride=2))
            c = max(c // 2, 1)
    elif stride > patch:
        layers += [nn.MaxPool2d(kernel_size=2, stride=2)
                   for _ in range(_log2_ratio(stride, patch, f"stride {stride} from patch {patch}"))]
    layers += [nn.Conv2d(c, out_channels, kernel_size=1, bias=False), _layer_norm_2d(out_channels),
               nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
               _layer_norm_2d(out_channels)]
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------------------------------------------------

@MODELS.register_module()
class MIMBackbone(BaseModule, TrunkHolder):
    """A canonical-checkpoint timm backbone as an OpenMMLab backbone (mmdet / mmseg / mmpose).

    Args:
        checkpoint: path of a canonical checkpoint (``benchmark.checkpoint``); random-init baselines are canonical
            checkpoints too.
        out_indices: which of the four levels to return, in increasing stride; index ``i`` is stride ``4 * 2**i``
            (Swin: stage ``i``).
        allow_partial: accept a checkpoint that does not fill every backbone tensor (otherwise CheckpointError).
        drop_path_rate: stochastic depth of the timm trunk.
        frozen: freeze the timm trunk (eval mode, ``requires_grad=False``, run under ``no_grad``); the new pyramid /
            norm / projection layers stay trainable.
        out_channels: channels of every output. Plain ViTs: of the simple pyramid (default: embed_dim). Swin: when
            given, a 1×1 conv + LayerNorm2d projects each stage to it (default: the native stage widths).
        feature_blocks: plain ViTs only (BenchmarkError for Swin): instead of the simple pyramid, return the raw
            outputs (no final norm, prefix tokens dropped, NCHW at the patch stride, embed_dim channels) of these
            0-based blocks, in this order, for a multi-level neck (mmseg's ``Feature2Pyramid``, as the BEiT / MAE
            UperNet configs; :mod:`benchmark.feature2pyramid`). ``out_indices`` and ``out_channels`` are then unused;
            blocks after the last one and the final norm are pruned. Default None: the simple pyramid.
        init_cfg: must stay None; the weights come from ``checkpoint``.
        window_size: Swin only: attention window, one int or one per stage (default: the checkpoint's own). SwinV2
            re-evaluates its continuous position bias for the new windows on the pre-training coordinate scale
            (``pretrained_window_sizes``); Swin V1 refuses a change (:mod:`benchmark.swin_windows`).
        img_size: Swin only: int or (h, w) whose stage feature maps clip the windows and decide the shifts (timm's
            rule: window = min(window, map), no shift where the window covers the map); default: the checkpoint's.
        window_attention: plain timm ViTs only (BenchmarkError otherwise, and with ``feature_blocks``): ViTDet's
            backbone design, ``dict(window_size=14, global_blocks=None, rel_pos=True, img_size=1024)`` (None:
            the last block of each depth quarter; ``img_size`` sizes the global blocks' rel-pos tables): window
            attention outside the global blocks, new zero-initialised decomposed rel-pos tables (added after the
            checkpoint is loaded; not counted in ``coverage``), no class token (:mod:`benchmark.vitdet_attention`).
            Default None: timm's global attention in every block, with the class token.
        fresh_output_norm: Swin only (BenchmarkError otherwise): the trunk's final norm, which normalises the last
            stage's output, starts as a new LayerNorm (weight 1, bias 0) instead of the checkpoint's, as the paper's
            depth code (its SwinV2 adds a new ``norm3`` and does not load the pre-trained ``norm``). Re-applied
            whenever the checkpoint is (re)loaded; needs ``out_indices`` to include stage 3. Default False.

    Attributes: ``trunk`` (the timm model), ``family`` ('plain' | 'beit' | 'swin'), ``out_channels`` (list, one per
    output), ``strides`` (list), ``embed_dim``, ``patch_size``, ``meta`` (checkpoint meta), ``coverage``.
    """

    extras_are_backbone = True  # stage-output norms, pyramid: a backbone lr multiplier covers them

    def __init__(self, checkpoint: str, out_indices: Sequence[int] = (0, 1, 2, 3), allow_partial: bool = False,
                 drop_path_rate: float = 0.0, frozen: bool = False, out_channels: int | None = None,
                 feature_blocks: Sequence[int] | None = None, init_cfg: Any = None,
                 window_size: int | Sequence[int] | None = None, img_size: int | Sequence[int] | None = None,
                 window_attention: dict | None = None, fresh_output_norm: bool = False):
        if init_cfg is not None:
            raise BenchmarkError("MIMBackbone takes its weights from `checkpoint`, not from init_cfg",
                                 "remove init_cfg from the backbone config")
        super().__init__(init_cfg=None)
        out_indices = tuple(int(i) for i in (out_indices if isinstance(out_indices, Iterable) else [out_indices]))
        if not out_indices or len(set(out_indices)) != len(out_indices) or not all(0 <= i <= 3 for i in out_indices):
            raise BenchmarkError(f"out_indices {out_indices} must be distinct values in 0..3 (strides 4/8/16/32)",
                                 "e.g. out_indices=(0, 1, 2, 3)")
        self.checkpoint = os.fspath(checkpoint)
        self.out_indices = tuple(sorted(out_indices))  # outputs are always in increasing stride
        self.allow_partial = bool(allow_partial)
        self.frozen = bool(frozen)

        meta = load_canonical(self.checkpoint).meta
        self.family = family(str(meta.get("arch")))
        self.feature_blocks = None if feature_blocks is None else tuple(int(b) for b in feature_blocks)
        if self.feature_blocks is not None and self.family == "swin":
            raise BenchmarkError("feature_blocks (intermediate-block features) needs a plain ViT, not Swin",
                                 "leave feature_blocks unset for Swin: its four stages are the levels")
        self.window_attention = None if window_attention is None else dict(window_attention)
        if self.window_attention is not None and (self.family != "plain" or self.feature_blocks is not None):
            raise BenchmarkError(f"window_attention (ViTDet) needs a plain ViT with the simple pyramid, not "
                                 f"{self.family}{' with feature_blocks' if self.feature_blocks is not None else ''}",
                                 "use global attention (attention=global) for this backbone")
        overrides: dict[str, Any] = {"drop_path_rate": float(drop_path_rate)}
        if self.family == "plain":
            overrides["dynamic_img_size"] = True
        elif self.family == "swin":
            overrides["strict_img_size"] = False
        geometry: dict[str, Any] = {}
        if window_size is not None or img_size is not None:
            from .swin_windows import swin_window_overrides  # BenchmarkError for non-Swin / a Swin V1 window change

            geometry = swin_window_overrides(meta, window_size, img_size)
            overrides.update(geometry)
        trunk = load_backbone(self.checkpoint, allow_partial=self.allow_partial, **overrides)
        self.meta = trunk.mim_meta
        if geometry:  # the trunk's geometry, so that an exported fine-tuned trunk is rebuilt with it
            self.meta = {**self.meta, "kwargs": {**self.meta.get("kwargs", {}), **geometry}}
        self.coverage = trunk.coverage

        self.fresh_output_norm = bool(fresh_output_norm)
        if self.fresh_output_norm and (self.family != "swin" or max(self.out_indices) != 3):
            raise BenchmarkError(f"fresh_output_norm needs a Swin backbone with stage 3 in out_indices (got "
                                 f"{self.family}, out_indices {self.out_indices})",
                                 "leave fresh_output_norm off for this backbone (the pre-trained norm is kept)")

        if self.family == "swin":
            self._init_swin(trunk, out_channels)
        else:
            self._init_plain(trunk, out_channels)
        self._reset_output_norm()
        if self.frozen:
            self._freeze()

    # -- construction ----------------------------------------------------------------------------------------
    def _init_plain(self, trunk: nn.Module, out_channels: int | None) -> None:
        depth = len(trunk.blocks)
        blocks = self.feature_blocks
        if blocks is not None:
            from .feature2pyramid import check_feature_blocks

            blocks = self.feature_blocks = check_feature_blocks(blocks, depth)
        # with feature_blocks the final norm is unused (mmseg's final_norm=False): pruned, so DDP sees no idle weights
        trunk.prune_intermediate_layers(indices=[depth - 1 if blocks is None else max(blocks)],
                                        prune_norm=blocks is not None, prune_head=True)
        if self.family == "beit":
            attn_cls, bias_cls = _DynBeitAttention, _DynBeitRelPosBias
            trunk.patch_embed.strict_img_size = False
            for blk in trunk.blocks:
                if getattr(blk.attn, "relative_position_bias_table", None) is not None:
                    blk.attn.__class__ = attn_cls
            if trunk.rel_pos_bias is not None:
                trunk.rel_pos_bias.__class__ = bias_cls
        if self.window_attention is not None:  # ViTDet: its new rel-pos tables come after the weights were loaded
            from .vitdet_attention import apply_window_attention, grid_of, normalise_config

            wa = self.window_attention = normalise_config(self.window_attention, depth)
            apply_window_attention(trunk, wa["window_size"], wa["global_blocks"], wa["rel_pos"],
                                   grid_of(wa["img_size"], int(trunk.patch_embed.patch_size[0])))
        self.trunk = trunk
        self.embed_dim = int(trunk.embed_dim)
        self.patch_size = int(trunk.patch_embed.patch_size[0])
        if tuple(trunk.patch_embed.patch_size) != (self.patch_size, self.patch_size):
            raise CheckpointError(f"non-square patch size {tuple(trunk.patch_embed.patch_size)}",
                                  "use a backbone with square patches")
        if blocks is not None:  # raw block maps at the patch stride for a neck outside the backbone
            self.strides = [self.patch_size] * len(blocks)
            self.pyramid = None
            self.out_channels = [self.embed_dim] * len(blocks)
            self._pad_multiple = self.patch_size
            return
        out_ch = int(out_channels) if out_channels is not None else self.embed_dim
        self.strides = [PYRAMID_STRIDES[i] for i in self.out_indices]
        self.pyramid = nn.ModuleList([_pyramid_level(self.embed_dim, self.patch_size, s, out_ch)
                                      for s in self.strides])
        self.out_channels = [out_ch] * len(self.strides)
        self._pad_multiple = math.lcm(self.patch_size, max(PYRAMID_STRIDES))

    def _init_swin(self, trunk: nn.Module, out_channels: int | None) -> None:
        last = max(self.out_indices)
        num_stages = len(trunk.layers)
        if num_stages != 4:
            raise CheckpointError(f"Swin backbone with {num_stages} stages", "MIMBackbone expects 4 Swin stages")
        trunk.prune_intermediate_layers(indices=[last], prune_norm=False, prune_head=True)
        self.trunk = trunk
        self.embed_dim = int(trunk.embed_dim)
        self.patch_size = int(trunk.patch_embed.patch_size[0])
        info = trunk.feature_info
        self.strides = [int(info[i]["reduction"]) for i in self.out_indices]
        native = [int(info[i]["num_chs"]) for i in self.out_indices]
        # the final norm applies to stage 3 only (and is pruned away when stage 3 is not kept)
        self._trunk_normed = (num_stages - 1) if last == num_stages - 1 else None
        self.out_norms = nn.ModuleList([nn.Identity() if i == self._trunk_normed else _layer_norm_2d(c)
                                        for i, c in zip(self.out_indices, native)])
        if out_channels is not None:
            self.proj = nn.ModuleList([nn.Sequential(nn.Conv2d(c, int(out_channels), 1, bias=False),
                                                     _layer_norm_2d(int(out_channels))) for c in native])
            self.out_channels = [int(out_channels)] * len(native)
        else:
            self.proj = None
            self.out_channels = native
        self._pad_multiple = int(info[last]["reduction"])

    def _reset_output_norm(self) -> None:
        """``fresh_output_norm``: the final norm back to a new LayerNorm's values (weight 1, bias 0), with the
        official code's eps 1e-6 (its ``norm3``; timm's Swin norms use 1e-5)."""
        if self.fresh_output_norm:
            self.trunk.norm.reset_parameters()
            self.trunk.norm.eps = 1e-6

    def _freeze(self) -> None:
        self.trunk.eval()
        for p in self.trunk.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> MIMBackbone:
        super().train(mode)
        if self.frozen:
            self.trunk.eval()
        return self

    # -- weights -----------------------------------------------------------------------------------------------
    def init_weights(self) -> None:
        """Never re-initialise the trunk: re-copy the checkpoint into it (undoing any init_cfg a parent module
        applied with ``layer=...``); the new pyramid / norm layers keep their (PyTorch default) init."""
        ckpt = load_canonical(self.checkpoint)
        target = self.trunk
        if self.window_attention is not None:  # the checkpoint has no rel-pos tables: they keep their values
            from .vitdet_attention import CheckpointView

            target = CheckpointView(self.trunk)
        self.coverage = load_weights(target, ckpt.state_dict, allow_partial=self.allow_partial,
                                     name=self.checkpoint)
        self._reset_output_norm()
        if self.frozen:
            self._freeze()
        self._is_init = True

    # -- forward -----------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h, w = x.shape[-2:]
        m = self._pad_multiple
        pad_h, pad_w = (-h) % m, (-w) % m
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            if self.family == "swin":
                feats = self.trunk.forward_intermediates(x, indices=list(self.out_indices), norm=True,
                                                         output_fmt="NCHW", intermediates_only=True)
            elif self.family == "beit":
                feats = self._beit_grid(x, self.feature_blocks)
            elif self.feature_blocks is not None:
                from .feature2pyramid import block_maps

                feats = block_maps(self.trunk, x, self.feature_blocks)
            elif self.window_attention is not None:
                from .vitdet_attention import window_features

                feats = window_features(self.trunk, x)
            else:
                feats = self.trunk.forward_intermediates(x, indices=[len(self.trunk.blocks) - 1], norm=True,
                                                         output_fmt="NCHW", intermediates_only=True)[0]
        if self.family == "swin":
            outs = [norm(f) for norm, f in zip(self.out_norms, feats)]
            if self.proj is not None:
                outs = [p(f) for p, f in zip(self.proj, outs)]
        elif self.feature_blocks is not None:
            outs = list(feats)
        else:
            outs = [level(feats) for level in self.pyramid]
        return tuple(o[..., :-(-h // s), :-(-w // s)] if (pad_h or pad_w) else o
                     for o, s in zip(outs, self.strides))

    def _beit_grid(self, x: torch.Tensor, blocks: Sequence[int] | None = None) -> torch.Tensor | list[torch.Tensor]:
        """timm Beit.forward_intermediates for any input size: last block's tokens (after ``norm``) as NCHW; with
        ``blocks``, a list of those blocks' raw tokens (no norm) as NCHW, in the order of ``blocks``."""
        m = self.trunk
        b, _, h, w = x.shape
        grid = tuple(m.patch_embed.dynamic_feat_size((h, w)))
        native = tuple(m.patch_embed.grid_size)
        x = m.patch_embed(x)
        x = torch.cat((m.cls_token.expand(b, -1, -1), x), dim=1)
        if m.pos_embed is not None:
            pos = m.pos_embed if grid == native else resample_abs_pos_embed(
                m.pos_embed, new_size=grid, old_size=native, num_prefix_tokens=1)
            x = x + pos
        x = m.pos_drop(x)
        for blk in m.blocks:
            if blk.attn.relative_position_bias_table is not None:
                blk.attn._mim_grid = grid
        if m.rel_pos_bias is not None:
            m.rel_pos_bias._mim_grid = grid
        rel_pos_bias = m.rel_pos_bias() if m.rel_pos_bias is not None else None
        taken: dict[int, torch.Tensor] = {}
        for i, blk in enumerate(m.blocks):
            if m.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
                x = _grad_checkpoint(blk, x, shared_rel_pos_bias=rel_pos_bias, use_reentrant=False)
            else:
                x = blk(x, shared_rel_pos_bias=rel_pos_bias)
            if blocks is not None and i in blocks:
                taken[i] = x
        if blocks is not None:
            return [taken[i][:, m.num_prefix_tokens:].reshape(b, grid[0], grid[1], -1).permute(0, 3, 1, 2).contiguous()
                    for i in blocks]
        x = m.norm(x)[:, m.num_prefix_tokens:]
        return x.reshape(b, grid[0], grid[1], -1).permute(0, 3, 1, 2).contiguous()



def native_level(meta: dict) -> int:
    """The pyramid level (stride 4 * 2**level) a dense head should read without pooling: Swin's stride-32 stage (as the
    paper's SwinV2 heads); a plain ViT's own patch stride (ViT-B/16: level 2), so small patches are never pooled."""
    if family(str(meta.get("arch"))) == "swin":
        return 3
    return min(3, max(0, int(math.log2(max(int(meta.get("patch_size", 16)), 4) // 4))))


def output_channels(meta: dict, out_indices: Sequence[int]) -> list[int]:
    """Channels of ``MIMBackbone``'s outputs for a checkpoint with this ``meta``, without its weights (the trunk is
    built on the meta device): task heads need them in their config before the backbone exists."""
    swin = family(str(meta.get("arch"))) == "swin"
    with torch.device("meta"):
        trunk = build_model(meta, **({"strict_img_size": False} if swin else {}))
    if swin:
        return [int(trunk.feature_info[i]["num_chs"]) for i in out_indices]
    return [int(trunk.embed_dim)] * len(out_indices)
