"""Atomic file writes shared by checkpoints, leaderboards, results and mini data (no heavy imports).

Every writer goes through :func:`atomic_path`: the content is written to a temp file in the target's folder and
renamed over the target only when complete, so a reader never sees half a file and an interrupted write leaves the
old file (or none) in place.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Atomically move a finished temp file into place with the usual umask-based mode (mkstemp makes 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temp path next to ``path`` (parent folders created) to write to; published as ``path`` when the block ends
    without error, removed otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        publish(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8, line endings kept as given); returns the path."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj: Any, **dumps_kwargs: Any) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (default: indent 2, sorted keys); returns the path."""
    opts = {"indent": 2, "sort_keys": True, **dumps_kwargs}
    return write_text_atomic(path, json.dumps(obj, **opts))
