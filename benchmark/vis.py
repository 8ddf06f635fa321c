"""Training curves where users look for them: mmengine's visualizer with a TensorBoard backend (``--vis-backend``).

mmengine's ``TensorboardVisBackend`` writes the scalars its LoggerHook logs (every loss term, ``lr``, ``grad_norm``,
the evaluation metrics) as event files under ``<work dir>/<timestamp>/vis_data/``; ``tensorboard --logdir WORK_DIR``
reads them. The local backend keeps the same scalars as ``scalars.json`` beside them.
"""

from __future__ import annotations

VIS_BACKENDS = ("none", "tensorboard")


def visualizer_cfg(backend: str) -> dict | None:
    """The Runner's ``visualizer`` config for ``backend`` (None: mmengine's default, no event files)."""
    if backend == "none":
        return None
    if backend == "tensorboard":
        return dict(type="mmengine.Visualizer",
                    vis_backends=[dict(type="mmengine.LocalVisBackend"), dict(type="mmengine.TensorboardVisBackend")])
    raise ValueError(f"unknown visualizer backend {backend!r} (one of {', '.join(VIS_BACKENDS)})")
