"""Backbone families: how the suite drives a timm model, told from its name (the one classification of the suite).

A timm model belongs to the family of the timm module that registers it:

=====================  =========  =========  ==========================================================
timm module            variant    family     what it means for the suite
=====================  =========  =========  ==========================================================
vision_transformer     vit        plain      one token grid; ``dynamic_img_size=True``; SimMIM's ViT path
deit                   vit        plain      (DeiT models are timm VisionTransformers)
eva                    eva        plain      one token grid; ``dynamic_img_size=True``; no SimMIM path
beit                   beit       beit       one token grid; pos-embed / rel-pos bias resampled by MIMBackbone
swin_transformer       swin       swin       four stages; ``strict_img_size=False``
swin_transformer_v2    swinv2     swin       four stages; continuous position bias
=====================  =========  =========  ==========================================================

:func:`family` is the coarse answer ('plain' | 'beit' | 'swin') that MIMBackbone, the task recipes (layer decay
per family) and SimMIM use; :func:`variant` the fine one, for the converter (a Swin checkpoint is not a SwinV2
one, a plain ViT is not an EVA) and for SimMIM's supported encoders (vit, beit, swin, swinv2).
"""

from __future__ import annotations

from .errors import CheckpointError

FAMILIES = ("plain", "beit", "swin")

# timm module -> (variant, family); models of any other module are of no family the suite can drive.
_MODULES: dict[str, tuple[str, str]] = {
    "vision_transformer": ("vit", "plain"),
    "deit": ("vit", "plain"),
    "eva": ("eva", "plain"),
    "beit": ("beit", "beit"),
    "swin_transformer": ("swin", "swin"),
    "swin_transformer_v2": ("swinv2", "swin"),
}
FAMILY_OF_VARIANT = dict(_MODULES.values())


def _require_timm_model(arch: str) -> None:
    import timm

    if not timm.is_model(arch):
        raise CheckpointError(f"unknown backbone arch '{arch}' in checkpoint meta",
                              "use a timm model name (timm.list_models())")


def variant(arch: str) -> str:
    """'vit' | 'eva' | 'beit' | 'swin' | 'swinv2' for a timm model name; '' for a timm model of no supported family.

    CheckpointError when ``arch`` is not a timm model name at all.
    """
    from timm.models import is_model_in_modules

    _require_timm_model(arch)
    for module, (var, _) in _MODULES.items():
        if is_model_in_modules(arch, [module]):
            return var
    return ""


def family(arch: str) -> str:
    """'plain' (ViT / DeiT / EVA), 'beit' or 'swin' (Swin / SwinV2) for a timm model name; CheckpointError for
    anything else (not a timm model, or a timm model MIMBackbone cannot drive)."""
    var = variant(arch)
    if not var:
        raise CheckpointError(
            f"backbone arch '{arch}' is not supported by MIMBackbone",
            "use a timm ViT / DeiT / EVA / BEiT (vit_*, deit*, eva*, beit*) or Swin / SwinV2 (swin*, swinv2*) model")
    return FAMILY_OF_VARIANT[var]
