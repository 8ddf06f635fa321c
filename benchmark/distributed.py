"""Process-group helpers shared by pre-training, the task worker and the OpenMMLab tasks (no mmengine import).

``world_size()`` / ``rank()`` read the initialised ``torch.distributed`` group, and are 1 / 0 without one.
``init_cpu_dist`` starts a gloo group for CPU-only data parallelism: mmengine's ``init_dist`` always calls
``torch.cuda.set_device``, which fails on a machine without GPUs.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

from .errors import BenchmarkError


def world_size() -> int:
    """Processes in the initialised default group; 1 when torch.distributed is unavailable or not initialised."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank in the initialised default group; 0 when torch.distributed is not initialised."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def init_cpu_dist(launcher: str, backend: str = "gloo", port: int | None = None, **kwargs: Any) -> None:
    """Process group without GPUs (mmengine's ``init_dist`` always calls ``torch.cuda.set_device``).

    ``launcher``: 'pytorch' (torchrun set RANK / WORLD_SIZE / MASTER_*) or 'slurm' (derived from the SLURM_*
    variables; MASTER_ADDR is the allocation's first node, MASTER_PORT ``port`` or 29500). ``kwargs`` go to
    ``torch.distributed.init_process_group``.
    """
    import torch.distributed as dist

    if backend != "gloo":
        raise BenchmarkError(f"distributed backend '{backend}' needs GPUs, and none is visible",
                             "set env_cfg.dist_cfg.backend=gloo for CPU training (--cfg-options "
                             "env_cfg.dist_cfg.backend=gloo)")
    if launcher == "slurm":
        os.environ.setdefault("RANK", os.environ["SLURM_PROCID"])
        os.environ.setdefault("WORLD_SIZE", os.environ["SLURM_NTASKS"])
        os.environ.setdefault("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0"))
        if "MASTER_ADDR" not in os.environ:
            nodes = subprocess.run(["scontrol", "show", "hostname", os.environ["SLURM_NODELIST"]],
                                   capture_output=True, text=True, check=True).stdout.split()
            os.environ["MASTER_ADDR"] = nodes[0]
        os.environ.setdefault("MASTER_PORT", str(port or 29500))
    dist.init_process_group(backend="gloo", **kwargs)
