"""How the suite loads its OWN mmengine checkpoints (resume): ``weights_only=True`` with an explicit allow-list.

torch's default ``weights_only=True`` refuses mmengine's checkpoints as they are: their ``message_hub`` pickles
``HistoryBuffer`` objects (with numpy arrays, and their statistics methods looked up by ``getattr``). Work dirs are
shared and copied between machines, so a file in one is untrusted input too: nothing is ever unpickled with
``weights_only=False``. Instead, :func:`own_checkpoint_globals` names exactly the types such a checkpoint holds, and
``getattr`` is replaced by :func:`_history_buffer_getattr`, which resolves only ``HistoryBuffer``'s statistics
methods. Anything else in a pickle (a planted ``os.system``, another class) is refused before it runs, with one
line naming the file (:class:`~benchmark.errors.CheckpointError`).

:func:`trust_work_dir` registers this loader as mmengine's local-file loader, so a Runner's ``resume`` uses it.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

from .errors import CheckpointError

_OWN_DIRS: list[Path] = []
_STATISTICS = frozenset({"min", "max", "mean", "current"})  # HistoryBuffer's statistics methods


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """``getattr`` as an mmengine checkpoint uses it (``HistoryBuffer.min`` …), and nothing else."""
    from mmengine.logging import HistoryBuffer

    if obj is HistoryBuffer and name in _STATISTICS:
        return getattr(obj, name)
    raise pickle.UnpicklingError(f"getattr({getattr(obj, '__name__', type(obj).__name__)}, {name!r}) is not allowed")


def own_checkpoint_globals() -> list:
    """Every global an mmengine checkpoint of this suite pickles (found with
    ``torch.serialization.get_unsafe_globals_in_checkpoint`` on the checkpoints of every trained task and of
    pre-training): numpy arrays / dtypes / scalars and mmengine's HistoryBuffer."""
    import numpy as np
    from mmengine.logging import HistoryBuffer
    from numpy._core.multiarray import _reconstruct, scalar

    dtypes = [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]
    return [np.ndarray, np.dtype, scalar, _reconstruct, HistoryBuffer, *dtypes,
            (_history_buffer_getattr, "builtins.getattr")]


def load_own_checkpoint(path: str | os.PathLike, map_location: Any = None, mmap: bool = False) -> Any:
    """Load one of the suite's own checkpoints, ``weights_only=True`` with :func:`own_checkpoint_globals`."""
    import torch

    try:
        with torch.serialization.safe_globals(own_checkpoint_globals()):
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        reason = _what_was_refused(str(exc))
        raise CheckpointError(f"{path} is not a checkpoint this suite wrote ({reason}); refused without running it",
                              "delete that run dir (or re-run with --force) so the task starts afresh") from None


def _what_was_refused(message: str) -> str:
    """The line of torch's refusal that names what the file asked for (the rest is generic advice)."""
    advice = ("Weights only load failed", "Please file an issue", "Check the documentation")
    lines = [ln.replace("WeightsUnpickler error:", "").strip() for ln in message.splitlines()]
    return next((ln for ln in lines if ln and not ln.startswith(advice)), "unreadable")[:200]


def trust_work_dir(work_dir: str | os.PathLike) -> None:
    """Make mmengine load local checkpoints with :func:`load_own_checkpoint` (its resume inside ``work_dir``);
    user checkpoints are read by benchmark.checkpoint, never through this loader."""
    from mmengine.runner.checkpoint import CheckpointLoader

    d = Path(work_dir).expanduser().resolve()
    if d not in _OWN_DIRS:
        _OWN_DIRS.append(d)
    CheckpointLoader.register_scheme(prefixes="", loader=_load_local, force=True)


def is_trusted(path: str | os.PathLike) -> bool:
    """Whether ``path`` lies inside a work dir passed to :func:`trust_work_dir`."""
    p = Path(path).expanduser().resolve()
    return any(p.is_relative_to(d) for d in _OWN_DIRS)


def _load_local(filename, map_location=None) -> Any:
    import torch

    path = Path(os.path.expanduser(str(filename)))
    if not path.is_file():
        raise FileNotFoundError(f"{filename} can not be found.")
    if is_trusted(path):
        return load_own_checkpoint(path, map_location=map_location)
    return torch.load(path, map_location=map_location, weights_only=True)


def read_own_checkpoint_meta(path: str | os.PathLike) -> dict:
    """The ``meta`` of one of this suite's own mmengine checkpoints (memory-mapped, tensors not read)."""
    ckpt = load_own_checkpoint(path, map_location="cpu", mmap=True)
    return dict(ckpt.get("meta") or {})
