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
    """Marker mixin: a module whose ``trunk`` attribute is a timm model that layer-wise lr decay applies to.
    ``extras_are_backbone``: the holder's own parameters outside the trunk belong to the backbone (MIMBackbone's
    stage-output norms and pyramid), not to a head, so a backbone lr multiplier covers them."""

    trunk: nn.Module
    extras_are_backbone: bool = False


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


# Trunk parameters outside the blocks that the official MIM fine-tuning codes put in the head layer (SimMIM / BEiT
# `get_vit_layer` / `get_num_layer_for_vit`, ViTPose and mmseg `get_layer_id_for_vit`, detectron2
# `get_vit_lr_decay_rate`, SimMIM `get_swin_layer`: "else -> num_layers - 1"): the final norm (and a pooled-feature
# norm) and BEiT's shared relative-position bias. timm's group_matcher puts them with the last block / the stem.
_HEAD_LAYER_PREFIXES = ("norm.", "fc_norm.", "rel_pos_bias.")

NO_DECAY_RULES = ("1d", "norms", "none")


def trunk_layer_ids(trunk: nn.Module, swin_merge_own_layer: bool = False) -> tuple[dict[str, int], int]:
    """(layer id per trunk parameter name, id of the head layer ``L + 1``), as the official MIM fine-tuning codes
    count.

    The blocks come from timm's ``group_parameters`` with the trunk's own ``group_matcher(coarse=False)``: 0 = stem
    (patch embed, cls token, pos embed), 1..L = blocks (Swin: one id per block). Two official rules replace timm's:
    the final norm (``norm`` / ``fc_norm``) and BEiT's shared relative-position bias take the head id (timm: the last
    block's id / the stem's), and a Swin patch merging (timm: ``layers.{i}.downsample``, before stage i) takes the id
    of the block before it, the last block of stage i-1 (SimMIM's ``get_swin_layer``, where the merging ends stage
    i-1; timm: stage i's first block). Names no pattern matches (a timm classifier head) take the head id.
    ``swin_merge_own_layer`` (Swin only): MIM-Depth-Estimation's counting instead — each patch merging its own
    layer, the final norm in the head layer (:func:`benchmark.swin_windows.swin_merge_layer_ids`).
    """
    if swin_merge_own_layer:
        from .swin_windows import swin_merge_layer_ids

        return swin_merge_layer_ids(trunk)
    names = [n for n, _ in trunk.named_parameters()]
    layer_map = group_parameters(_NamesOnly(names + [_HEAD_SENTINEL]), trunk.group_matcher(coarse=False),
                                 reverse=True)
    head = layer_map.pop(_HEAD_SENTINEL)
    for name in names:
        if name.startswith(_HEAD_LAYER_PREFIXES):
            layer_map[name] = head
        elif name.startswith("layers.") and ".downsample." in name:
            stage = name.split(".")[1]
            first = next((v for k, v in layer_map.items() if k.startswith(f"layers.{stage}.blocks.0.")), None)
            if first is not None:
                layer_map[name] = first - 1
    return layer_map, head


def _norm_param_ids(module: nn.Module) -> set[int]:
    """ids of the parameters of every normalisation layer in ``module`` (LayerNorm, GroupNorm, BatchNorm)."""
    norms = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)
    return {id(p) for m in module.modules() if isinstance(m, norms) for p in m.parameters(recurse=False)}


def _extras(model: nn.Module) -> list[nn.Module]:
    """The MIMBackbones' own layers outside the trunk (stage-output norms, pyramid, projections): part of the
    backbone, so a backbone lr multiplier covers them (mmseg's ``custom_keys={'backbone': lr_mult}``)."""
    return [m for m in model.modules() if isinstance(m, TrunkHolder) and getattr(m, "extras_are_backbone", False)]


def layer_decay_param_groups(model: nn.Module, base_lr: float, weight_decay: float,
                             layer_decay: float, trunk_lr_mult: float = 1.0,
                             head_no_decay: tuple[str, ...] = (),
                             swin_merge_own_layer: bool = False,
                             no_decay_rule: str = "1d") -> list[dict[str, Any]]:
    """Optimizer param groups with layer-wise lr decay (BEiT / MAE / SimMIM fine-tuning recipe).

    Learning rates: trunk parameters (of every MIMBackbone in ``model``, or of ``model`` itself when it is a timm
    model) get the layer id of :func:`trunk_layer_ids` and ``lr = base_lr * layer_decay ** (L + 1 - layer_id)``
    (stem: decay^(L+1), block i (0-based): decay^(L-i)), times ``trunk_lr_mult`` (the trackers' and Mask2Former's
    "backbone lr x 0.1"). The MIMBackbone's own layers outside the trunk (stage-output norms, pyramid) belong to the
    backbone: head layer, times ``trunk_lr_mult``. Every other parameter (neck, heads): ``base_lr``.

    Weight decay, over the whole model, by ``no_decay_rule``:
    ``1d`` — none on 1-D parameters (norms, biases; heads included) and the trunk's ``no_weight_decay()`` names
    (pos_embed, cls_token, rel-pos tables; fnmatch patterns as timm's ``param_groups_layer_decay``): the BEiT / MAE /
    SimMIM / ViTPose / MIM-Depth constructors and mmseg's ``LayerDecayOptimizerConstructor``;
    ``norms`` — none on the parameters of normalisation layers and the trunk's ``no_weight_decay()`` names, biases
    decayed: mmdet / mmseg ``custom_keys`` (``norm``, position tables) and ``norm_decay_mult=0``, detectron2's
    ``weight_decay_norm=0``;
    ``none`` — every parameter decayed (OSTrack, SwinTrack).
    In every rule, the fnmatch patterns ``head_no_decay`` (full parameter names, e.g. Mask2Former's query
    embeddings) take no weight decay. Each group carries ``lr``, ``lr_scale`` and ``weight_decay``.

    timm's own ``param_groups_layer_decay`` is not called directly: run on a trunk without its classifier it puts the
    last block at scale 1 (its top layer is the last block, not the head), one decay step off this recipe.
    """
    if no_decay_rule not in NO_DECAY_RULES:
        raise BenchmarkError(f"no_decay_rule must be one of {NO_DECAY_RULES}, got {no_decay_rule!r}",
                             "1d (MIM fine-tuning codes), norms (mmdet / mmseg custom_keys) or none (trackers)")
    model = _unwrap(model)
    norm_ids = _norm_param_ids(model)

    def no_decay(name: str, p: nn.Parameter, listed: bool) -> bool:
        if any(fnmatch.fnmatch(name, pat) for pat in head_no_decay):
            return True
        return {"1d": p.ndim <= 1 or listed, "norms": id(p) in norm_ids or listed, "none": False}[no_decay_rule]

    full = {id(p): n for n, p in model.named_parameters()}
    buckets: dict[tuple[float, float], list[nn.Parameter]] = {}
    seen: set[int] = set()

    def put(p: nn.Parameter, scale: float, decays: bool) -> None:
        seen.add(id(p))
        buckets.setdefault((scale, float(weight_decay) if decays else 0.0), []).append(p)

    for trunk in _trunks(model):
        layer_map, head = trunk_layer_ids(trunk, swin_merge_own_layer)
        nwd = tuple(trunk.no_weight_decay()) if hasattr(trunk, "no_weight_decay") else ()
        for name, p in trunk.named_parameters():
            if p.requires_grad and id(p) not in seen:
                listed = any(fnmatch.fnmatch(name, pat) for pat in nwd)
                # layers are counted from the top so trunks of different depth share the head layer
                scale = float(layer_decay) ** (head - layer_map.get(name, head)) * float(trunk_lr_mult)
                put(p, scale, not no_decay(full.get(id(p), name), p, listed))
    for holder in _extras(model):
        for p in holder.parameters():
            if p.requires_grad and id(p) not in seen:
                put(p, float(trunk_lr_mult), not no_decay(full[id(p)], p, False))
    for name, p in model.named_parameters():
        if p.requires_grad and id(p) not in seen:
            put(p, 1.0, not no_decay(name, p, False))
    return [{"params": params, "lr": base_lr * scale, "lr_scale": scale, "weight_decay": wd}
            for (scale, wd), params in sorted(buckets.items(), key=lambda kv: (kv[0][0], -kv[0][1]))]


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
        no_decay_rule = str(paramwise_cfg.pop("no_decay_rule", "1d"))
        if rate is None or not 0 < float(rate) <= 1:
            raise BenchmarkError(f"paramwise_cfg.layer_decay_rate must be in (0, 1], got {rate}",
                                 "e.g. paramwise_cfg=dict(layer_decay_rate=0.65)")
        if paramwise_cfg:
            raise BenchmarkError(f"LayerDecayOptimWrapperConstructor does not take {sorted(paramwise_cfg)}",
                                 "paramwise_cfg takes only layer_decay_rate, trunk_lr_mult, head_no_decay, "
                                 "swin_merge_own_layer and no_decay_rule")
        super().__init__(optim_wrapper_cfg, None)
        self.layer_decay_rate = float(rate)
        self.trunk_lr_mult = mult
        self.head_no_decay = head_no_decay
        self.swin_merge_own_layer = swin_merge
        self.no_decay_rule = no_decay_rule

    def __call__(self, model: nn.Module) -> OptimWrapper:
        optim_wrapper_cfg = self.optim_wrapper_cfg.copy()
        optim_wrapper_cfg.setdefault("type", "OptimWrapper")
        optimizer_cfg = self.optimizer_cfg.copy()
        if self.base_lr is None:
            raise BenchmarkError("optimizer config has no lr", "set optim_wrapper.optimizer.lr")
        optimizer_cfg["params"] = layer_decay_param_groups(
            model, float(self.base_lr), float(self.base_wd or 0.0), self.layer_decay_rate, self.trunk_lr_mult,
            self.head_no_decay, self.swin_merge_own_layer, self.no_decay_rule)
        optimizer = OPTIMIZERS.build(optimizer_cfg)
        return OPTIM_WRAPPERS.build(optim_wrapper_cfg, default_args=dict(optimizer=optimizer))


# mmpose registers its own 'LayerDecayOptimWrapperConstructor' (for mmpretrain ViTs); inside default_scope='mmpose'
# that name resolves to mmpose's class, so task configs use this unambiguous alias.
OPTIM_WRAPPER_CONSTRUCTORS.register_module(name="MIMLayerDecayOptimWrapperConstructor",
                                           module=LayerDecayOptimWrapperConstructor)

