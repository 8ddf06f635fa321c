"""SimMIM (Xie et al., arXiv 2111.09886) on unmodified timm encoders.

The encoder is a plain ``timm.create_model(arch, num_classes=0, **arch_kwargs)``. Its submodules are called in the
order of the model's own ``forward_features``, with one step added, as microsoft/SimMIM does: right after the patch
embedding, every masked token is replaced by one learnable mask token, ``x * (1 - w) + mask_token * w``.

* ViT (``timm.models.vision_transformer.VisionTransformer``): patch_embed → mask → ``_pos_embed`` (prefix tokens,
  absolute position embedding) → patch_drop → norm_pre → blocks → norm.
* BEiT-style ViT (``timm.models.beit.Beit``; SimMIM's official ViT-B is this model with a shared relative position
  bias): patch_embed → mask → cls token → pos_embed (if any) → pos_drop → blocks (with the shared relative
  position bias computed once) → norm.
* Swin / SwinV2 (``swin_*``, ``swinv2_*``): patch_embed (incl. its norm) → mask → layers → norm.

Decoder: ``Conv2d(C, stride² · 3, 1) + PixelShuffle(stride)`` with ``stride`` the encoder's total stride.
Loss: ``sum(|x − x̂| · M) / (sum(M) + 1e-5) / 3`` with ``M`` the token mask upsampled to pixels.

When the mask is constant on every ``stride × stride`` block of the output (always true for SimMIM's settings,
where the 32-px mask patch is a multiple of the encoder stride), the training loss is computed from the masked
blocks only: the 1×1 decoder is applied to the masked tokens' features alone and compared with the image's pixels
in PixelShuffle order. That is the same sum as the full reconstruction (up to float summation order) without
decoding the visible 40 %. ``forward(..., return_rec=True)`` decodes everything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.checkpoint import make_meta, model_geometry, save_canonical
from benchmark.errors import BenchmarkError
from benchmark.families import family, variant

from .mask import MaskGenerator, upsample_mask

# the encoders whose forward SimMIM re-implements (benchmark.families variants; EVA's rotary embedding is not here)
SUPPORTED_VARIANTS = ("vit", "beit", "swin", "swinv2")
NO_DECAY_KEYWORDS = ("relative_position_bias_table", "pos_embed", "cls_token", "mask_token", "reg_token",
                     "dist_token", "cpb_mlp", "logit_scale", "relative_position_bias")


def plain(obj: Any) -> Any:
    """Config values (mmengine ConfigDict, lists, tuples) as plain Python containers (picklable without classes)."""
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(plain(v) for v in obj)
    if isinstance(obj, list):
        return [plain(v) for v in obj]
    return obj


def simmim_loss(x: torch.Tensor, x_rec: torch.Tensor, mask: torch.Tensor, patch_size: int) -> torch.Tensor:
    """SimMIM's masked L1: ``sum(|x − x̂| · M) / (sum(M) + 1e-5) / C``, ``M`` = token mask repeated to pixels."""
    m = upsample_mask(mask.to(x.dtype), patch_size)
    loss_recon = F.l1_loss(x, x_rec, reduction="none")
    return (loss_recon * m).sum() / (m.sum() + 1e-5) / x.shape[1]


def create_encoder(arch: str, arch_kwargs: Mapping | None = None) -> nn.Module:
    import difflib

    import timm

    if not timm.is_model(arch):
        close = difflib.get_close_matches(str(arch), timm.list_models(), n=3)
        raise BenchmarkError(f"unknown timm architecture '{arch}'",
                             f"did you mean {', '.join(close)}?" if close else "use a timm model name")
    kwargs = plain(dict(arch_kwargs or {}))
    kwargs.pop("num_classes", None)
    try:
        return timm.create_model(arch, pretrained=False, num_classes=0, **kwargs)
    except TypeError as exc:
        raise BenchmarkError(f"timm cannot build '{arch}' with {kwargs}: {exc}",
                             "fix model.arch_kwargs in the pre-training config") from exc


class SimMIM(nn.Module):
    """SimMIM around a timm ViT / BEiT / Swin / SwinV2.

    Args:
        arch: timm model name (``vit_*``, ``beit_*``, ``swin_*``, ``swinv2_*``).
        arch_kwargs: ``timm.create_model`` overrides (``img_size``, ``window_size``, ``drop_path_rate`` …).
        mask_patch: mask patch size in pixels (SimMIM: 32).
        mask_ratio: fraction of mask patches replaced by the mask token (SimMIM: 0.6).
        compile_encoder: wrap the encoder's forward in ``torch.compile`` (inductor); a dict gives its kwargs.
        masked_only_loss: compute the training loss from the masked blocks only (same value, less work).
    """

    def __init__(self, arch: str, arch_kwargs: Mapping | None = None, mask_patch: int = 32, mask_ratio: float = 0.6,
                 *, compile_encoder: bool | Mapping = False, masked_only_loss: bool = True,
                 grad_checkpointing: bool = False):
        super().__init__()
        self.arch = arch
        self.arch_kwargs = plain(dict(arch_kwargs or {}))
        self.arch_kwargs.pop("num_classes", None)
        self.encoder = create_encoder(arch, self.arch_kwargs)
        if variant(arch) not in SUPPORTED_VARIANTS:
            raise BenchmarkError(f"SimMIM supports timm ViT, BEiT, Swin and SwinV2 encoders; '{arch}' is a "
                                 f"{type(self.encoder).__name__}", "pick a vit_*, beit_*, swin_* or swinv2_* model")
        self.family = family(arch)  # 'plain' (a timm VisionTransformer) | 'beit' | 'swin' (Swin / SwinV2)
        if self.family == "plain":
            pd = getattr(self.encoder.patch_drop, "prob", 0.0)
            if pd:
                raise BenchmarkError(f"'{arch}' is built with patch_drop_rate={pd}: SimMIM needs every token",
                                     "remove patch_drop_rate from arch_kwargs")
        self.img_size, self.patch_size = model_geometry(self.encoder)
        self.in_chans = 3
        self.num_features = int(self.encoder.num_features)
        if self.family == "swin":
            self.encoder_stride = int(self.encoder.feature_info[-1]["reduction"])
        else:
            self.encoder_stride = self.patch_size
        self.mask_generator = MaskGenerator(self.img_size, int(mask_patch), self.patch_size, float(mask_ratio))
        self.mask_patch = int(mask_patch)
        self.mask_ratio = float(mask_ratio)

        self.mask_token = nn.Parameter(torch.zeros(1, 1, self.num_features if self.family != "swin"
                                                   else int(self.encoder.embed_dim)))
        nn.init.trunc_normal_(self.mask_token, mean=0.0, std=0.02)
        s = self.encoder_stride
        self.decoder = nn.Sequential(nn.Conv2d(self.num_features, s * s * 3, kernel_size=1), nn.PixelShuffle(s))
        self.masked_only_loss = masked_only_loss
        if grad_checkpointing:
            self.encoder.set_grad_checkpointing(True)
        self._encode = self._encode_impl
        if compile_encoder:
            opts = dict(compile_encoder) if isinstance(compile_encoder, Mapping) else {}
            self._encode = torch.compile(self._encode_impl, **opts)

    # ------------------------------------------------------------------ encoder
    def _mask_tokens(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: (B, L, C) or (B, H, W, C); mask: (B, h, w). Replace masked tokens by the mask token."""
        w = mask.reshape(*x.shape[:-1], 1).to(x.dtype)
        return x * (1.0 - w) + self.mask_token.to(x.dtype) * w

    def _encode_impl(self, images: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        enc = self.encoder
        B, _, H, W = images.shape
        h, w = H // self.patch_size, W // self.patch_size
        x = enc.patch_embed(images)
        if mask is not None:
            x = self._mask_tokens(x, mask)
        if self.family == "plain":
            x = enc._pos_embed(x)
            x = enc.patch_drop(x)
            x = enc.norm_pre(x)
            if enc.grad_checkpointing and not torch.jit.is_scripting():
                from timm.models._manipulate import checkpoint_seq
                x = checkpoint_seq(enc.blocks, x)
            else:
                x = enc.blocks(x)
            x = enc.norm(x)
            x = x[:, enc.num_prefix_tokens:]
            return x.transpose(1, 2).reshape(B, -1, h, w)
        if self.family == "beit":
            x = torch.cat((enc.cls_token.expand(B, -1, -1), x), dim=1)
            if enc.pos_embed is not None:
                x = x + enc.pos_embed
            x = enc.pos_drop(x)
            rel_pos_bias = enc.rel_pos_bias() if enc.rel_pos_bias is not None else None
            for blk in enc.blocks:
                if enc.grad_checkpointing and not torch.jit.is_scripting():
                    from torch.utils.checkpoint import checkpoint
                    x = checkpoint(blk, x, shared_rel_pos_bias=rel_pos_bias, use_reentrant=False)
                else:
                    x = blk(x, shared_rel_pos_bias=rel_pos_bias)
            x = enc.norm(x)
            x = x[:, enc.num_prefix_tokens:]
            return x.transpose(1, 2).reshape(B, -1, h, w)
        # swin / swinv2: NHWC throughout
        x = enc.layers(x)
        x = enc.norm(x)
        return x.permute(0, 3, 1, 2)

    def encode(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 3, H, W) → (B, C, H/stride, W/stride) features; ``mask`` (B, H/patch, W/patch) or None."""
        if mask is not None:
            self._check_mask(images, mask)
        return self._encode(images, mask)

    def _check_mask(self, images: torch.Tensor, mask: torch.Tensor) -> None:
        want = (images.shape[0], images.shape[2] // self.patch_size, images.shape[3] // self.patch_size)
        if tuple(mask.shape) != want:
            raise ValueError(f"mask shape {tuple(mask.shape)} does not match the token grid {want}")

    # ------------------------------------------------------------------ SimMIM
    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None, return_rec: bool = False):
        """Masked-L1 loss; with ``return_rec`` also the full reconstruction (B, 3, H, W), normalized space."""
        if mask is None:
            mask = self.mask_generator(images.shape[0], device=images.device)
        self._check_mask(images, mask)
        z = self._encode(images, mask)
        if not return_rec and self.masked_only_loss:
            blocks = self._block_mask(mask)
            if blocks is not None:
                return self._masked_block_loss(images, z, blocks)
        x_rec = self.decoder(z)
        loss = simmim_loss(images, x_rec.to(images.dtype), mask, self.patch_size)
        return (loss, x_rec) if return_rec else loss

    def _block_mask(self, mask: torch.Tensor) -> torch.Tensor | None:
        """The mask at decoder-output resolution (B, h, w) if it is constant on each stride block, else None."""
        s, p = self.encoder_stride, self.patch_size
        if s % p:
            return None
        r = s // p
        B, mh, mw = mask.shape
        if mh % r or mw % r:
            return None
        if r == 1:
            return mask
        cells = mask.reshape(B, mh // r, r, mw // r, r)
        hi, lo = cells.amax(dim=(2, 4)), cells.amin(dim=(2, 4))
        if not torch.equal(hi, lo):
            return None
        return hi

    def _masked_block_loss(self, images: torch.Tensor, z: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
        s = self.encoder_stride
        B, C, H, W = images.shape
        h, w = H // s, W // s
        sel = blocks.reshape(B, h, w) > 0.5
        feat = z.permute(0, 2, 3, 1)[sel]                                   # (Nm, C_enc)
        conv = self.decoder[0]
        pred = F.linear(feat, conv.weight.reshape(conv.out_channels, -1), conv.bias)  # (Nm, 3·s·s), PixelShuffle order
        target = images.reshape(B, C, h, s, w, s).permute(0, 2, 4, 1, 3, 5).reshape(B, h, w, C * s * s)[sel]
        n_pixels = sel.sum() * (s * s)
        return (target - pred.to(target.dtype)).abs().sum() / (n_pixels + 1e-5) / C

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction, mask) for figures."""
        if mask is None:
            mask = self.mask_generator(images.shape[0], device=images.device)
        _, rec = self.forward(images, mask, return_rec=True)
        return rec, mask

    # ------------------------------------------------------------------ weights
    def no_weight_decay_names(self) -> set[str]:
        """Parameter names without weight decay, as the official code: 1-D tensors, biases, the model's
        ``no_weight_decay()`` set, position embeddings, relative position tables, cls / mask tokens."""
        skip = {f"encoder.{n}" for n in getattr(self.encoder, "no_weight_decay", lambda: set())()}
        out = set()
        for name, p in self.named_parameters():
            if (p.ndim <= 1 or name.endswith(".bias") or name in skip
                    or any(k in name for k in NO_DECAY_KEYWORDS)):
                out.add(name)
        return out

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The encoder's weights in timm's key space (no mask token, no decoder)."""
        return {k: v.detach().clone() for k, v in self.encoder.state_dict().items()}

    def export(self, path, source: str = "") -> Any:
        """Write the encoder as the suite's canonical checkpoint (method 'simmim')."""
        meta = make_meta(self.arch, self.arch_kwargs, method="simmim",
                         source=source or f"pretrain.simmim (mask {self.mask_patch}px, ratio {self.mask_ratio})")
        return save_canonical(path, self.encoder_state_dict(), meta)

    def extra_repr(self) -> str:
        return (f"arch={self.arch}, family={self.family}, img_size={self.img_size}, patch={self.patch_size}, "
                f"stride={self.encoder_stride}, {self.mask_generator!r}")


def official_lr(base_lr: float, total_batch: int, base_batch: int = 512) -> float:
    """SimMIM's linear scaling rule: lr = base_lr × total batch / 512."""
    return base_lr * total_batch / base_batch


__all__ = ["SimMIM", "simmim_loss", "MaskGenerator", "official_lr", "plain", "create_encoder"]
