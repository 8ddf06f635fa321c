"""Which checkpoints may be unpickled: only the suite's own, inside a run's work dir.

torch ≥ 2.6 defaults to ``weights_only=True``, which refuses mmengine's checkpoints (they pickle a HistoryBuffer
and numpy objects), so an mmengine ``resume`` fails. :func:`trust_work_dir` re-registers mmengine's local-file
loader so that files INSIDE a trusted work dir load with ``weights_only=False``; every other file (checkpoints
handed in by users are untrusted input) keeps ``weights_only=True``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

_TRUSTED_DIRS: list[Path] = []


def trust_work_dir(work_dir: str | os.PathLike) -> None:
    """Let mmengine load this run's OWN checkpoints (inside ``work_dir``) with ``weights_only=False``."""
    from mmengine.runner.checkpoint import CheckpointLoader

    d = Path(work_dir).expanduser().resolve()
    if d not in _TRUSTED_DIRS:
        _TRUSTED_DIRS.append(d)
    CheckpointLoader.register_scheme(prefixes="", loader=_load_local, force=True)


def is_trusted(path: str | os.PathLike) -> bool:
    """Whether ``path`` lies inside a work dir passed to :func:`trust_work_dir`."""
    p = Path(path).expanduser().resolve()
    return any(p.is_relative_to(d) for d in _TRUSTED_DIRS)


def _load_local(filename, map_location=None) -> Any:
    import torch

    path = Path(os.path.expanduser(str(filename)))
    if not path.is_file():
        raise FileNotFoundError(f"{filename} can not be found.")
    return torch.load(path, map_location=map_location, weights_only=not is_trusted(path))


def read_own_checkpoint_meta(path: str | os.PathLike) -> dict:
    """The ``meta`` of one of this suite's own mmengine checkpoints (memory-mapped, tensors not read).

    Only for a checkpoint the suite wrote itself in a work dir (e.g. the one a resume would continue from)."""
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    return dict(ckpt.get("meta") or {})
