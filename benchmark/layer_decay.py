"""Layer-wise lr decay (the BEiT / MAE / SimMIM fine-tuning recipe) for timm trunks, and its mmengine constructor.

:func:`layer_decay_param_groups` and the mmengine constructor ``LayerDecayOptimWrapperConstructor`` (ROOT
``OPTIM_WRAPPER_CONSTRUCTORS``, also under the unambiguous name ``MIMLayerDecayOptimWrapperConstructor`` that task
configs use) assign trunk layers with timm's ``group_parameters`` and the model's own ``group_matcher`` /
``no_weight_decay``; lr scale = decay^(L+1-layer_id); every other parameter (pyramid, neck, heads) gets the base lr
and the base weight decay.

The trunks are found by type: every :class:`TrunkHolder` in the model (``benchmark.backbone.MIMBackbone`` is one),
or the model itself when it is a bare timm model. Importing ``benchmark.backbone`` imports this module, so the
constructor is registered wherever MIMBackbone is.
"""

from __future__ import annotations

import fnmatch
from typing import Any

from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS, OPTIMIZERS
from timm.models import group_parameters
from torch import nn

from .errors import BenchmarkError

__all__ = ["TrunkHolder", "LayerDecayOptimWrapperConstructor", "layer_decay_param_groups", "trunk_layer_ids"]


class TrunkHolder:
    """Marker mixin: a module whose ``trunk`` attribute is a timm model that layer-wise lr decay applies to."""

    trunk: nn.Module


def _unwrap(model: nn.Module) -> nn.Module:
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return model


def _trunks(model: nn.Module) -> list[nn.Module]:
    found = [m.trunk for m in model.modules() if isinstance(m, TrunkHolder)]
    if found:
        return found
    if hasattr(model, "group_matcher"):  # a bare timm model
        return [model]
    raise BenchmarkError(f"{type(model).__name__} holds no MIMBackbone and is not a timm model",
                         "layer-wise lr decay needs a MIMBackbone (or timm model) to assign layers")


_HEAD_SENTINEL = "__mim_head__"  # a name no group_matcher pattern matches: it marks the head layer


class _NamesOnly:
    """Duck-typed module for timm's ``group_parameters``: parameter names, with the head sentinel appended."""

    def __init__(self, names: list[str]):
        self._names = names

    def named_parameters(self):
        return ((n, None) for n in self._names)


def trunk_layer_ids(trunk: nn.Module, swin_merge_own_layer: bool = False) -> tuple[dict[str, int], int]:
    """(timm layer id per trunk parameter name, id of the head layer ``L + 1``).

    Layer ids come from timm's ``group_parameters`` with the trunk's own ``group_matcher(coarse=False)``: 0 = stem
    (patch embed, cls token, pos embed, shared rel-pos bias), 1..L = blocks (Swin: one id per block, a stage's
    downsample shares the id of its first block), the final norm shares the last block's id (timm's rule). Names
    no pattern matches (a timm classifier head) share the head id with everything outside the trunk.
    ``swin_merge_own_layer`` (Swin only): the official Swin counting instead — each patch merging its own layer,
    the final norm in the head layer (:func:`benchmark.swin_windows.swin_merge_layer_ids`).
    """
    if swin_merge_own_layer:
        from .swin_windows import swin_merge_layer_ids

        return swin_merge_layer_ids(trunk)
    names = [n for n, _ in trunk.named_parameters()]
    layer_map = group_parameters(_NamesOnly(names + [_HEAD_SENTINEL]), trunk.group_matcher(coarse=False),
                                 reverse=True)
    head = layer_map.pop(_HEAD_SENTINEL)
    return layer_map, head


def layer_decay_param_groups(model: nn.Module, base_lr: float, weight_decay: float,
                             layer_decay: float, trunk_lr_mult: float = 1.0,
                             head_no_decay: tuple[str, ...] = (),
                             swin_merge_own_layer: bool = False) -> list[dict[str, Any]]:
    """Optimizer param groups with layer-wise lr decay (BEiT / MAE / SimMIM fine-tuning recipe).

    Trunk parameters (of every MIMBackbone in ``model``, or of ``model`` itself when it is a timm model) get the layer
    id of :func:`trunk_layer_ids` and ``lr = base_lr * layer_decay ** (L + 1 - layer_id)`` (stem: decay^(L+1), block
    i (0-based): decay^(L-i)); weight decay 0 for 1-D params (norms, biases) and the trunk's ``no_weight_decay()``
    names (pos_embed, cls_token, rel-pos tables; fnmatch patterns as timm's ``param_groups_layer_decay``),
    ``weight_decay`` otherwise. Every other trainable parameter (pyramid, neck, heads) is in the head layer L+1: lr
    ``base_lr`` and ``weight_decay``. Each group carries ``lr``, ``lr_scale`` and ``weight_decay``.
    ``trunk_lr_mult`` scales every trunk group on top of the decay (the trackers' "backbone lr x 0.1").
    ``head_no_decay``: fnmatch patterns of parameter names outside the trunk that take no weight decay (Mask2Former's
    query and level embeddings). ``swin_merge_own_layer``: Swin patch mergings count as layers
    (:func:`trunk_layer_ids`).

    timm's own ``param_groups_layer_decay`` is not called directly: run on a trunk without its classifier it puts the
    last block at scale 1 (its top layer is the last block, not the head), one decay step off this recipe. The layer
    assignment and the no-weight-decay rule are timm's (``group_parameters`` + ``group_matcher``,
    ``no_weight_decay()``, 1-D exclusion).
    """
    model = _unwrap(model)
    buckets: dict[tuple[int, float], list[nn.Parameter]] = {}
    scales: dict[int, float] = {}
    seen: set[int] = set()
    for trunk in _trunks(model):
        layer_map, head = trunk_layer_ids(trunk, swin_merge_own_layer)
        nwd = tuple(trunk.no_weight_decay()) if hasattr(trunk, "no_weight_decay") else ()
        for name, p in trunk.named_parameters():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            lid = layer_map.get(name, head)
            no_decay = p.ndim <= 1 or any(fnmatch.fnmatch(name, pat) for pat in nwd)
            # layers are counted from the top so trunks of different depth share the head layer
            rank = head - lid
            scales[rank] = float(layer_decay) ** rank * float(trunk_lr_mult)
            buckets.setdefault((rank, 0.0 if no_decay else float(weight_decay)), []).append(p)
    rest = [(n, p) for n, p in model.named_parameters() if p.requires_grad and id(p) not in seen]
    groups = [{"params": params, "lr": base_lr * scales[rank], "lr_scale": scales[rank], "weight_decay": wd}
              for (rank, wd), params in sorted(buckets.items(), key=lambda kv: -kv[0][0])]
    exempt = [any(fnmatch.fnmatch(n, pat) for pat in head_no_decay) for n, _ in rest]
    for params, wd in (([p for (_, p), e in zip(rest, exempt) if not e], float(weight_decay)),
                       ([p for (_, p), e in zip(rest, exempt) if e], 0.0)):
        if params:
            groups.append({"params": params, "lr": base_lr, "lr_scale": 1.0, "weight_decay": wd})
    return groups


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """mmengine optim-wrapper constructor for layer-wise lr decay.

    ``optim_wrapper=dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05),
    constructor='LayerDecayOptimWrapperConstructor', paramwise_cfg=dict(layer_decay_rate=0.65))``.
    Groups as :func:`layer_decay_param_groups`; ``lr`` and ``weight_decay`` of the optimizer are the base values.
    mmengine's LR schedulers scale each group's own ``lr``, so the per-layer ratios hold through the schedule.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict | None = None):
        paramwise_cfg = dict(paramwise_cfg or {})
        rate = paramwise_cfg.pop("layer_decay_rate", paramwise_cfg.pop("layer_decay", None))
        mult = float(paramwise_cfg.pop("trunk_lr_mult", 1.0))
        head_no_decay = tuple(paramwise_cfg.pop("head_no_decay", ()))
        swin_merge = bool(paramwise_cfg.pop("swin_merge_own_layer", False))
        if rate is None or not 0 < float(rate) <= 1:
            raise BenchmarkError(f"paramwise_cfg.layer_decay_rate must be in (0, 1], got {rate}",
                                 "e.g. paramwise_cfg=dict(layer_decay_rate=0.65)")
        if paramwise_cfg:
            raise BenchmarkError(f"LayerDecayOptimWrapperConstructor does not take {sorted(paramwise_cfg)}",
                                 "paramwise_cfg takes only layer_decay_rate, trunk_lr_mult, head_no_decay and "
                                 "swin_merge_own_layer")
        super().__init__(optim_wrapper_cfg, None)
        self.layer_decay_rate = float(rate)
        self.trunk_lr_mult = mult
        self.head_no_decay = head_no_decay
        self.swin_merge_own_layer = swin_merge

    def __call__(self, model: nn.Module) -> OptimWrapper:
        optim_wrapper_cfg = self.optim_wrapper_cfg.copy()
        optim_wrapper_cfg.setdefault("type", "OptimWrapper")
        optimizer_cfg = self.optimizer_cfg.copy()
        if self.base_lr is None:
            raise BenchmarkError("optimizer config has no lr", "set optim_wrapper.optimizer.lr")
        optimizer_cfg["params"] = layer_decay_param_groups(
            model, float(self.base_lr), float(self.base_wd or 0.0), self.layer_decay_rate, self.trunk_lr_mult,
            self.head_no_decay, self.swin_merge_own_layer)
        optimizer = OPTIMIZERS.build(optimizer_cfg)
        return OPTIM_WRAPPERS.build(optim_wrapper_cfg, default_args=dict(optimizer=optimizer))


# mmpose registers its own 'LayerDecayOptimWrapperConstructor' (for mmpretrain ViTs); inside default_scope='mmpose'
# that name resolves to mmpose's class, so task configs use this unambiguous alias.
OPTIM_WRAPPER_CONSTRUCTORS.register_module(name="MIMLayerDecayOptimWrapperConstructor",
                                           module=LayerDecayOptimWrapperConstructor)

