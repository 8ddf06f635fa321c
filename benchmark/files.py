"""Atomic file publishing shared by checkpoints, leaderboards and results (no heavy imports)."""

from __future__ import annotations

import os


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Atomically move a finished temp file into place with the usual umask-based mode (mkstemp makes 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)
