"""Global features of a timm backbone and the eval transform: shared by the linear probes, fine-tuning's test
transform, supervised pre-training and the analyses (one implementation of each)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def pool_features(model: nn.Module, x: torch.Tensor, pool: str = "avg") -> torch.Tensor:
    """Global features of a timm backbone.

    ``avg`` (default): mean of the final-normed patch tokens — the usual probe for MIM models, whose CLS token
    (if any) is never trained by the pre-text task. ``token``: the model's own pooled pre-logits.
    """
    if pool == "token":
        return model(x)
    feats = model.forward_features(x)
    if feats.ndim == 4:  # Swin: (B, H, W, C)
        return feats.mean(dim=(1, 2))
    return feats[:, getattr(model, "num_prefix_tokens", 0):].mean(dim=1)


def eval_transform(size: int, crop_pct: float = 0.875) -> Callable:
    """timm's eval transform: resize (short side size / crop_pct, bicubic), centre crop, ImageNet mean/std — the
    normalisation of SimMIM pre-training and fine-tuning (timm's per-arch pretrained_cfg says 0.5/0.5 for ViTs and
    describes timm's own weights, not the checkpoint's)."""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform

    return create_transform(int(size), is_training=False, crop_pct=crop_pct, interpolation="bicubic",
                            mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)
