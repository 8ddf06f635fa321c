"""Where each task's data lives: --data-root, a spec default, or generated mini data; plus a cheap fingerprint."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .errors import DataError
from .registry import TaskSpec

MINI_DONE = ".mini-complete"


def real_root(spec: TaskSpec, data_root: str | os.PathLike | None) -> Path:
    """``<data-root>/<subdir>`` when --data-root is given, else the spec's ``default_root``."""
    subdir = spec.dataset.get("subdir", spec.name)
    if data_root:
        base = Path(data_root).expanduser()
        # Accept both the parent folder and the dataset folder itself.
        return base if base.name == Path(subdir).name and not (base / subdir).exists() else base / subdir
    if spec.dataset.get("default_root"):
        return Path(spec.dataset["default_root"])
    raise DataError(f"task {spec.name} needs its dataset '{spec.dataset.get('name', subdir)}' and no --data-root "
                    "was given", f"pass --data-root DIR (holding '{subdir}/') or --data mini; see {spec.docs}")


def mini_root(spec: TaskSpec, mini_dir: Path) -> Path:
    """Where a task's generated mini data lives; ``mini_subdir`` separates tasks that share a real dataset folder
    but generate different files (COCO keypoints vs COCO instances)."""
    return mini_dir / spec.dataset.get("mini_subdir", spec.dataset.get("subdir", spec.name))


def fingerprint(spec: TaskSpec, root: Path) -> str:
    """Cheap dataset identity: names, sizes and mtimes of the layout entries (and a directory's listing)."""
    h = hashlib.sha256(str(root.resolve()).encode())
    for rel in spec.dataset.get("layout", []):
        p = root / rel
        if p.is_file():
            st = p.stat()
            h.update(f"{rel}:{st.st_size}:{int(st.st_mtime)}".encode())
        elif p.is_dir():
            names = sorted(os.listdir(p))
            h.update(f"{rel}/:{len(names)}:{names[:50]}".encode())
    return h.hexdigest()[:16]
