"""SimMIM's random mask generator, batched.

As microsoft/SimMIM's ``MaskGenerator``: the input (e.g. 192 px for Swin, 224 px for ViT) is cut into
``mask_patch``-pixel cells (32 px); exactly ``ceil(cells * ratio)`` cells (ratio 0.6) are chosen at random per image
and each cell is repeated ``mask_patch / model_patch`` times along both axes, which gives one 0/1 value per token of
the encoder's patch grid (model patch 4 for Swin, 16 for ViT).

The official code draws one permutation per sample with numpy inside the data loader; here a whole batch is drawn
with a single ``argsort`` of uniform noise (on any device), so mask generation never costs the loader anything.
"""

from __future__ import annotations

import math

import torch

from benchmark.errors import BenchmarkError


class MaskGenerator:
    """Random SimMIM masks: ``gen(batch_size) -> (B, H_tok, W_tok)`` float tensor of 0 (visible) / 1 (masked)."""

    def __init__(self, input_size: int = 192, mask_patch_size: int = 32, model_patch_size: int = 4,
                 mask_ratio: float = 0.6):
        for name, value in (("input size", input_size), ("mask patch size", mask_patch_size),
                            ("model patch size", model_patch_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise BenchmarkError(f"SimMIM mask: {name} must be a positive integer, got {value!r}",
                                     "fix the mask settings in the pre-training config")
        if input_size % mask_patch_size:
            raise BenchmarkError(
                f"SimMIM mask: input size {input_size} is not divisible by the mask patch size {mask_patch_size}",
                "choose an input size that is a multiple of mask_patch (SimMIM: 192 or 224 with 32)")
        if mask_patch_size % model_patch_size:
            raise BenchmarkError(
                f"SimMIM mask: mask patch size {mask_patch_size} is not divisible by the model's patch size "
                f"{model_patch_size}", "choose a mask patch that is a multiple of the model patch (SimMIM: 32 = 8×4 "
                                       "for Swin, 32 = 2×16 for ViT)")
        if not 0.0 <= float(mask_ratio) <= 1.0:
            raise BenchmarkError(f"SimMIM mask: ratio must be in [0, 1], got {mask_ratio}",
                                 "use a ratio such as 0.6 (SimMIM's default)")
        self.input_size = input_size
        self.mask_patch_size = mask_patch_size
        self.model_patch_size = model_patch_size
        self.mask_ratio = float(mask_ratio)
        self.rand_size = input_size // mask_patch_size          # cells per side
        self.scale = mask_patch_size // model_patch_size        # tokens per cell per side
        self.token_count = self.rand_size ** 2
        # round() first guards against float noise such as 0.6 * 25 = 15.000000000000002 -> 16
        self.mask_count = int(math.ceil(round(self.token_count * self.mask_ratio, 9)))

    @property
    def token_grid(self) -> int:
        """Tokens per side of the encoder's patch grid."""
        return self.rand_size * self.scale

    def __repr__(self) -> str:
        return (f"MaskGenerator(input_size={self.input_size}, mask_patch_size={self.mask_patch_size}, "
                f"model_patch_size={self.model_patch_size}, mask_ratio={self.mask_ratio}, "
                f"masked_cells={self.mask_count}/{self.token_count})")

    def cells(self, batch_size: int, *, generator: torch.Generator | None = None,
              device: torch.device | str | None = None) -> torch.Tensor:
        """(B, cells, cells) 0/1 mask at cell resolution: exactly ``mask_count`` ones per sample."""
        device = generator.device if generator is not None else (device or "cpu")
        noise = torch.rand(batch_size, self.token_count, generator=generator, device=device)
        chosen = noise.argsort(dim=1)[:, :self.mask_count]
        mask = torch.zeros(batch_size, self.token_count, device=device)
        mask.scatter_(1, chosen, 1.0)
        return mask.view(batch_size, self.rand_size, self.rand_size)

    def __call__(self, batch_size: int = 1, *, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None) -> torch.Tensor:
        """(B, H_tok, W_tok) float mask at the encoder's token resolution."""
        mask = self.cells(batch_size, generator=generator, device=device)
        if self.scale > 1:
            mask = mask.repeat_interleave(self.scale, dim=1).repeat_interleave(self.scale, dim=2)
        return mask


def upsample_mask(mask: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, h, w) -> (B, 1, h*factor, w*factor) by repetition: the token mask at pixel resolution."""
    return mask.repeat_interleave(factor, 1).repeat_interleave(factor, 2).unsqueeze(1)
