"""The canonical checkpoint format, safe loading, and the coverage report.

Every adapter reads one format::

    {'state_dict': {<timm key>: tensor, ...},             # backbone weights only, in timm's key space
     'meta': {'format': 'mimbench-backbone', 'format_version': 1,
              'arch': 'vit_base_patch16_224',              # a timm model name
              'kwargs': {'img_size': 224, ...},            # timm.create_model overrides (never num_classes)
              'img_size': 224, 'patch_size': 16,
              'method': 'simmim' | 'supervised' | 'random' | ...,
              'source': 'where it came from'}}

Checkpoints handed in by users are untrusted: they are read with ``torch.load(weights_only=True)`` only. A
checkpoint that fills less than every backbone tensor is an error unless the caller allows it, because
OpenMMLab's own loader (``strict=False``) silently trains from random weights when keys do not match.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import CheckpointError
from .files import atomic_path

log = logging.getLogger("benchmark.checkpoint")

FORMAT = "mimbench-backbone"
FORMAT_VERSION = 1
CONVERT_HINT = ("convert it first: `benchmark convert --from simmim|mmpretrain|timm SRC DST` "
                "(see README, section 'Checkpoints')")


def read_checkpoint(path: str | os.PathLike, *, allowed_globals: tuple = (), foreign_fix: str = CONVERT_HINT) -> Any:
    """``torch.load`` with ``weights_only=True`` and one clear error per way a file can be wrong.

    ``allowed_globals``: ``(obj, "module.Name")`` pairs the weights-only unpickler may build besides tensors and
    plain containers (the converter maps known config classes to inert stubs this way).
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint not found: {p}", "check the path")
    if p.is_dir():
        raise CheckpointError(f"checkpoint path is a directory: {p}", "pass the .pth file itself")
    try:
        with torch.serialization.safe_globals(list(allowed_globals)):
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        allowed = {name for _, name in allowed_globals}
        objects = [g for g in _unsafe_globals(p, exc) if g not in allowed]
        if objects:
            raise CheckpointError(
                f"{p} pickles Python objects that are not tensors or plain containers ({', '.join(objects[:5])}); "
                "untrusted checkpoints are read with weights_only=True and their code is never run",
                foreign_fix) from exc
        raise _unreadable(p, exc) from exc
    except Exception as exc:
        raise _unreadable(p, exc) from exc


def _unreadable(p: Path, exc: Exception) -> CheckpointError:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return CheckpointError(f"{p} is not a readable PyTorch checkpoint ({first[:160]})",
                           "pass a .pth file written by torch.save")


def _unsafe_globals(path: Path, exc: Exception) -> list[str]:
    """The globals a pickle needs, to name them in the error (from torch, else from the unpickler's message)."""
    try:
        names = list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # noqa: BLE001 - only used to enrich an error message
        names = []
    if not names:
        m = re.search(r"GLOBAL ([\w.]+)", str(exc))
        names = [m.group(1)] if m else []
    return names


@dataclass
class Canonical:
    state_dict: dict[str, torch.Tensor]
    meta: dict[str, Any]

    @property
    def arch(self) -> str:
        return self.meta["arch"]


def load_canonical(path: str | os.PathLike) -> Canonical:
    obj = read_checkpoint(path)
    if not (isinstance(obj, dict) and isinstance(obj.get("meta"), dict)
            and obj["meta"].get("format") == FORMAT and isinstance(obj.get("state_dict"), dict)):
        raise CheckpointError(f"{path} is not in the suite's canonical backbone format", CONVERT_HINT)
    meta = obj["meta"]
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path} uses canonical format v{meta['format_version']}, newer than this "
                              f"suite's v{FORMAT_VERSION}", "upgrade the benchmark package")
    return Canonical(obj["state_dict"], meta)


def make_meta(arch: str, kwargs: dict | None = None, method: str = "unknown", source: str = "",
              **extra: Any) -> dict[str, Any]:
    """Meta for a canonical checkpoint; img_size and patch_size are read from the built model."""
    kwargs = {k: v for k, v in (kwargs or {}).items() if k != "num_classes"}
    model = build_model({"arch": arch, "kwargs": kwargs})
    img_size, patch_size = model_geometry(model)
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "arch": arch, "kwargs": kwargs,
            "img_size": img_size, "patch_size": patch_size, "method": method, "source": source, **extra}


def model_geometry(model: nn.Module) -> tuple[int, int]:
    """(input size, patch size) of a timm ViT / Swin / BEiT model."""
    pe = getattr(model, "patch_embed", None)
    img = getattr(pe, "img_size", None) or model.pretrained_cfg.get("input_size", (3, 224, 224))[1:]
    patch = getattr(pe, "patch_size", None) or (16, 16)
    img = img if isinstance(img, (tuple, list)) else (img, img)
    patch = patch if isinstance(patch, (tuple, list)) else (patch, patch)
    return int(img[0]), int(patch[0])


def save_canonical(path: str | os.PathLike, state_dict: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write atomically (temp file + rename) so an interrupted save never leaves half a checkpoint."""
    path = Path(path)
    clean = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        torch.save({"state_dict": clean, "meta": meta}, tmp)
    return path


def build_model(meta: dict[str, Any], **overrides: Any) -> nn.Module:
    """The timm model a canonical checkpoint describes, randomly initialised, without classifier."""
    import timm

    arch = meta.get("arch")
    if not arch or not timm.is_model(arch):
        close = difflib.get_close_matches(str(arch), timm.list_models(), n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "use a timm model name (timm.list_models())"
        raise CheckpointError(f"unknown backbone arch '{arch}' in checkpoint meta", hint)
    kwargs = {**meta.get("kwargs", {}), **overrides}
    kwargs.setdefault("num_classes", 0)
    try:
        return timm.create_model(arch, pretrained=False, **kwargs)
    except TypeError as exc:
        raise CheckpointError(f"timm cannot build '{arch}' with {kwargs}: {exc}",
                              "fix meta['kwargs'] in the checkpoint") from exc


@dataclass
class Coverage:
    """How much of a model's state a checkpoint filled."""

    expected: int
    loaded: int
    expected_numel: int
    loaded_numel: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.loaded == self.expected and not self.mismatched

    @property
    def fraction(self) -> float:
        return self.loaded_numel / max(self.expected_numel, 1)

    def __str__(self) -> str:
        def few(keys: list[str]) -> str:
            return (": " + ", ".join(keys[:3]) + (" …" if len(keys) > 3 else "")) if keys else ""

        return (f"coverage {self.loaded}/{self.expected} tensors, {self.loaded_numel:,}/{self.expected_numel:,} "
                f"values ({100 * self.fraction:.1f}%); missing {len(self.missing)}{few(self.missing)}; "
                f"unexpected {len(self.unexpected)}{few(self.unexpected)}; "
                f"shape mismatch {len(self.mismatched)}{few(self.mismatched)}")


def coverage_of(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> Coverage:
    own = model.state_dict()
    loaded = [k for k in own if k in state_dict and tuple(state_dict[k].shape) == tuple(own[k].shape)]
    mismatched = [f"{k} {tuple(state_dict[k].shape)}≠{tuple(own[k].shape)}"
                  for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    return Coverage(expected=len(own), loaded=len(loaded),
                    expected_numel=sum(v.numel() for v in own.values()),
                    loaded_numel=sum(own[k].numel() for k in loaded),
                    missing=[k for k in own if k not in state_dict],
                    unexpected=[k for k in state_dict if k not in own], mismatched=mismatched)


def load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], *, allow_partial: bool = False,
                 name: str = "checkpoint") -> Coverage:
    """Copy weights into ``model``; anything short of full coverage is an error unless allowed."""
    cov = coverage_of(model, state_dict)
    log.info("%s: %s", name, cov)
    if not cov.complete and not allow_partial:
        raise CheckpointError(f"{name} does not fill the backbone: {cov}",
                              "convert it with `benchmark convert`, or pass --allow-partial to accept it")
    own = model.state_dict()
    good = {k: v for k, v in state_dict.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    model.load_state_dict(good, strict=False)
    return cov


def load_backbone(path: str | os.PathLike, *, allow_partial: bool = False, **overrides: Any) -> nn.Module:
    """The timm backbone of a canonical checkpoint with its weights loaded (``model.coverage`` says how)."""
    ckpt = load_canonical(path)
    model = build_model(ckpt.meta, **overrides)
    model.coverage = load_weights(model, ckpt.state_dict, allow_partial=allow_partial, name=str(path))
    model.mim_meta = ckpt.meta
    return model


def create_random(arch: str, kwargs: dict | None = None, *, seed: int = 0, method: str = "random",
                  source: str = "random init") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A randomly initialised backbone in canonical form: the 'random init' baseline row of a leaderboard."""
    meta = make_meta(arch, kwargs, method=method, source=f"{source} (seed {seed})")
    torch.manual_seed(seed)
    model = build_model(meta)
    return model.state_dict(), meta


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
