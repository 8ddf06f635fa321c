"""Attention maps and block outputs of timm ViT / BEiT / EVA / Swin backbones, captured with hooks (timm untouched).

How the attention is reached (checked against the installed timm 1.0.x sources):

* ``timm.layers.attention.Attention`` (the ViT/DeiT ``Attention`` of ``vision_transformer.py``),
  ``timm.models.beit.Attention`` and ``timm.models.eva.EvaAttention`` compute, when ``self.fused_attn`` is False,
  ``attn = softmax(q·scale @ kᵀ [+ bias/mask]); attn = self.attn_drop(attn); x = attn @ v``. The input of
  ``attn_drop`` is therefore the post-softmax attention, shape (B, H, N, N) with the prefix (CLS / register) tokens
  included. When ``fused_attn`` is True they call ``F.scaled_dot_product_attention`` and ``attn_drop`` is never run.
* ``timm.models.swin_transformer.WindowAttention`` (and SwinV2's) do the same per window: the input of ``attn_drop``
  is (B·nW, H, N, N), N = window², relative position bias and the shifted-window mask already added before the
  softmax (SwinV2: cosine attention, no fused path at all).

``capture_attention(model)`` switches ``fused_attn`` off only while it is active (the previous value is restored on
exit, so the model's normal forward stays fused) and hooks every ``attn_drop``. ``layer_stats`` reduces each map to
per-head statistics *inside the hook*, so at most one layer's map of one batch is alive at any time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import BenchmarkError
from . import metrics

NO_ATTENTION_FIX = "analyses need a ViT or Swin (timm vit_*/deit*/beit*/eva*/swin*/swinv2* backbone)"


def _attention_classes() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """(global-attention classes, window-attention classes) whose unfused path runs ``attn_drop(softmax(...))``."""
    from timm.layers.attention import Attention

    plain: list[type] = [Attention]
    window: list[type] = []
    for mod, name, bucket in (("timm.models.vision_transformer", "Attention", plain),
                              ("timm.models.beit", "Attention", plain),
                              ("timm.models.eva", "EvaAttention", plain),
                              ("timm.models.swin_transformer", "WindowAttention", window),
                              ("timm.models.swin_transformer_v2", "WindowAttention", window)):
        try:
            cls = getattr(__import__(mod, fromlist=[name]), name)
        except (ImportError, AttributeError):
            continue
        if cls not in bucket:
            bucket.append(cls)
    return tuple(plain), tuple(window)


@dataclass
class AttnLayer:
    """One attention layer: where it sits, how its tokens map to pixels."""

    index: int
    name: str                 # e.g. 'blocks.3' or 'layers.1.blocks.0'
    kind: str                 # 'global' (ViT-like, prefix tokens + patch grid) | 'window' (Swin)
    attn: nn.Module           # the attention module (its attn_drop is hooked)
    block: nn.Module          # the transformer block holding it (its output is the block feature)
    num_heads: int
    n_prefix: int             # global: prefix tokens dropped before the statistics; window: 0
    positions: torch.Tensor   # (N, 2) pixel coordinates of the (spatial) tokens the statistics see
    window: tuple[int, int] | None = None
    shifted: bool = False
    shift_mask: torch.Tensor | None = None  # set by the hooks during one forward (Swin shifted windows)


def _two(v) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _arch(model: nn.Module) -> str:
    meta = getattr(model, "mim_meta", None) or {}
    return str(meta.get("arch") or type(model).__name__)


def attention_layers(model: nn.Module, name: str | None = None) -> list[AttnLayer]:
    """The model's attention layers in forward order; BenchmarkError when it has none this module understands."""
    plain_cls, window_cls = _attention_classes()
    layers: list[AttnLayer] = []
    blocks = getattr(model, "blocks", None)
    stages = getattr(model, "layers", None)
    if isinstance(blocks, (nn.Sequential, nn.ModuleList)) and hasattr(model, "patch_embed"):
        # ViT / DeiT / BEiT / EVA: one global attention per block over [prefix tokens, patch grid]
        pe = model.patch_embed
        grid = _two(getattr(pe, "grid_size", None) or (0, 0))
        patch = _two(getattr(pe, "patch_size", 16))
        n_prefix = int(getattr(model, "num_prefix_tokens", 1 if getattr(model, "cls_token", None) is not None else 0))
        pos = metrics.grid_positions(grid[0], grid[1], patch[0]).float()
        for i, blk in enumerate(blocks):
            attn = next((m for m in blk.modules() if isinstance(m, plain_cls)), None)
            if attn is None:
                continue
            layers.append(AttnLayer(len(layers), f"blocks.{i}", "global", attn, blk, int(attn.num_heads),
                                    n_prefix, pos))
    elif isinstance(stages, (nn.Sequential, nn.ModuleList)) and hasattr(model, "patch_embed"):
        # Swin / SwinV2: window attention in every block of every stage
        patch = _two(getattr(model.patch_embed, "patch_size", 4))[0]
        for s, stage in enumerate(stages):
            for j, blk in enumerate(getattr(stage, "blocks", [])):
                attn = getattr(blk, "attn", None)
                if not isinstance(attn, window_cls):
                    continue
                win = _two(getattr(blk, "window_size", None) or attn.window_size)
                # Positions are window-local grid coordinates × the stage's effective patch size (patch · 2^stage
                # input pixels per token). Shifted-window blocks: the feature map is cyclically rolled before the
                # partition, so a window can hold tokens from opposite borders of the image. timm adds attn_mask
                # (-100 between tokens of different sub-regions) before the softmax, so those pairs carry ~e^-100 ≈ 0
                # attention; inside one sub-region the roll is a pure translation, so window-local coordinate
                # differences are the true pixel distances for every pair that carries attention. (Zero-padded
                # tokens, when the resolution is not a multiple of the window, sit at their geometric place.)
                pos = metrics.grid_positions(win[0], win[1], patch * 2 ** s).float()
                shift = getattr(blk, "shift_size", 0)
                layers.append(AttnLayer(len(layers), f"layers.{s}.blocks.{j}", "window", attn, blk,
                                        int(attn.num_heads), 0, pos, win, bool(any(_two(shift)))))
    if not layers:
        label = name or _arch(model)
        raise BenchmarkError(f"{label}: no attention layers (arch {_arch(model)}) that the analyses can read",
                             NO_ATTENTION_FIX)
    return layers


class AttentionBuffer(list):
    """``buffer[l]``: what the hook recorded for attention layer ``l``, one entry per forward (the maps themselves,
    or whatever the ``reduce`` callable returned). ``buffer.layers``: the :class:`AttnLayer` descriptions."""

    def __init__(self, layers: list[AttnLayer]):
        super().__init__([] for _ in layers)
        self.layers = layers


@contextlib.contextmanager
def capture_attention(model: nn.Module, reduce: Callable[[AttnLayer, torch.Tensor], object] | None = None,
                      name: str | None = None) -> Iterator[AttentionBuffer]:
    """While active: unfused attention and a hook on every ``attn_drop``.

    ``reduce(layer, attn)`` (attn: post-softmax, (B, H, N, N) or (B·nW, H, N, N) for Swin) is called inside the
    hook and its result is recorded; without it the detached map itself is recorded (small models / tests only).
    """
    layers = attention_layers(model, name)
    buffer = AttentionBuffer(layers)
    previous = [(layer.attn, layer.attn.fused_attn) for layer in layers if hasattr(layer.attn, "fused_attn")]
    handles = []

    def make_hook(layer: AttnLayer):
        def hook(module, inputs, output):
            attn = inputs[0].detach()
            buffer[layer.index].append(reduce(layer, attn) if reduce is not None else attn)
            layer.shift_mask = None
        return hook

    def mask_hook(layer: AttnLayer):
        # Swin: remember the (nW, N, N) 0/-100 shifted-window mask this call of WindowAttention gets (static
        # attn_mask buffer or, with dynamic_mask, the one computed in the block's forward)
        def pre(module, args, kwargs):
            mask = kwargs.get("mask", args[1] if len(args) > 1 else None)
            layer.shift_mask = None if mask is None else mask.detach()
        return pre

    try:
        for mod, _ in previous:
            mod.fused_attn = False
        for layer in layers:
            if layer.kind == "window":
                handles.append(layer.attn.register_forward_pre_hook(mask_hook(layer), with_kwargs=True))
            handles.append(layer.attn.attn_drop.register_forward_hook(make_hook(layer)))
        yield buffer
    finally:
        for h in handles:
            h.remove()
        for layer in layers:
            layer.shift_mask = None
        for mod, value in previous:
            mod.fused_attn = value


def _pool_tokens(out: torch.Tensor, n_prefix: int) -> torch.Tensor:
    """Block output -> (B, D): mean over spatial tokens (ViT: prefix tokens dropped; Swin: NHWC map)."""
    if isinstance(out, (tuple, list)):
        out = out[0]
    if out.ndim == 4:  # Swin blocks: (B, H, W, C)
        return out.mean(dim=(1, 2))
    return out[:, n_prefix:].mean(dim=1)


def _stats_reducer(batch: int) -> Callable[[AttnLayer, torch.Tensor], dict[str, torch.Tensor]]:
    def reduce(layer: AttnLayer, attn: torch.Tensor) -> dict[str, torch.Tensor]:
        a = attn.float()
        if layer.kind == "global" and layer.n_prefix:
            a = metrics.drop_prefix(a, layer.n_prefix)
        pos = layer.positions.to(a.device)
        key_mask = None
        if layer.kind == "window" and layer.shift_mask is not None:
            # shifted windows: exclude the pairs timm masked (they already hold ~e^-100 of the attention, so this
            # only makes the renormalisation exact and keeps the diversity's eps mass off them)
            n_win = layer.shift_mask.shape[0]
            key_mask = (layer.shift_mask == 0).repeat(a.shape[0] // n_win, 1, 1)  # row b·nW + w -> window w
        out = {"distance": metrics.attention_distance(a, pos, key_mask=key_mask),
               "entropy": metrics.attention_entropy(a, key_mask=key_mask)}
        if a.shape[1] >= 2:
            out["diversity"] = metrics.head_diversity(a, key_mask=key_mask)
        else:  # one head: nothing to be diverse from
            out["diversity"] = torch.full(a.shape[:2], float("nan"), dtype=torch.float64, device=a.device)
        if layer.kind == "window":  # (B·nW, H) -> per image mean over its windows
            n_win = a.shape[0] // batch
            out = {k: v.reshape(batch, n_win, -1).mean(dim=1) for k, v in out.items()}
        # per-image values summed over the batch: the caller divides by the image count after streaming
        return {k: v.sum(dim=0).detach().cpu().double() for k, v in out.items()}
    return reduce


STATS = ("distance", "entropy", "diversity")


@torch.inference_mode()
def collect(model: nn.Module, images: torch.Tensor, *, attention: bool = True, features: bool = True,
            name: str | None = None) -> tuple[dict | None, list[torch.Tensor] | None]:
    """One forward of one batch: (attention statistics as :func:`layer_stats`, block features as
    :func:`block_features`); either may be switched off (then None)."""
    layers = attention_layers(model, name)
    batch = images.shape[0]
    feats: list[torch.Tensor | None] = [None] * len(layers)
    handles = []
    if features:
        for layer in layers:
            def fhook(module, inputs, output, layer=layer):
                feats[layer.index] = _pool_tokens(output, layer.n_prefix).detach().float().cpu()
            handles.append(layer.block.register_forward_hook(fhook))
    was_training = model.training
    model.eval()
    try:
        ctx = capture_attention(model, _stats_reducer(batch), name) if attention else contextlib.nullcontext()
        with ctx as buf:
            fwd = getattr(model, "forward_features", model)
            fwd(images)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    stats = None
    if attention:
        stats = {"layers": [l.name for l in layers], "heads": [l.num_heads for l in layers], "count": batch}
        for key in STATS:
            stats[key] = [sum(rec[key] for rec in buf[l.index]) if buf[l.index] else torch.zeros(l.num_heads,
                          dtype=torch.float64) for l in layers]
    if features and any(f is None for f in feats):
        missing = [l.name for l, f in zip(layers, feats) if f is None]
        raise BenchmarkError(f"{name or _arch(model)}: blocks {missing} produced no output in the forward pass",
                             NO_ATTENTION_FIX)
    return stats, (feats if features else None)


def layer_stats(model: nn.Module, images: torch.Tensor, name: str | None = None) -> dict:
    """Run ONE batch; per attention layer and head, the per-image attention distance (pixels), entropy (nats) and
    head diversity, summed over the batch's images (divide by ``count`` after summing over batches).

    Returns ``{'layers': [names], 'heads': [H_l], 'count': B, 'distance': [Tensor (H_l,)], 'entropy': [...],
    'diversity': [...]}`` (float64, CPU). ViT: prefix tokens dropped and rows renormalised, positions = patch grid
    × patch size. Swin: per window, window-local positions × the stage's effective patch, averaged over windows.
    """
    return collect(model, images, attention=True, features=False, name=name)[0]


def block_features(model: nn.Module, images: torch.Tensor, name: str | None = None) -> list[torch.Tensor]:
    """Per transformer block (ViT: ``model.blocks``; Swin: every block of every stage) the output tokens
    mean-pooled over space, (B, D) float32 on the CPU (ViT: prefix tokens excluded)."""
    return collect(model, images, attention=False, features=True, name=name)[1]
