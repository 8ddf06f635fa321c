"""Runs ONE task in its own process: ``python -m benchmark.worker JOB.json``.

Isolation is the point: a crash, an OOM kill or a hung OpenMMLab runner in one task costs that task only. The
worker speaks to the runner through its stdout (``##progress <fraction> <message>`` lines), its exit code
(0 ok, 2 a user-fixable problem, 1 a crash) and an atomically written result JSON. The last ``error:`` line on
stderr is what the runner records as the failure reason.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sys
import traceback
from pathlib import Path

from benchmark.files import write_json_atomic

PROGRESS = "##progress"


def _rank() -> int:
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", 0)))


def _progress(frac: float, msg: str = "") -> None:
    if _rank() != 0:
        return
    print(f"{PROGRESS} {max(0.0, min(1.0, frac)):.4f} {msg}".rstrip(), flush=True)


def prepare_data(spec, adapter_cls, job: dict) -> Path:
    """The task's data root; for --data mini, generate the mini dataset once (file-locked, marker-guarded)."""
    from benchmark import data

    if not job["mini"]:
        root = data.real_root(spec, job["data_root"])
    else:
        root = data.mini_root(spec, Path(job["mini_dir"]))
        marker = root / data.MINI_DONE
        if not marker.exists():
            root.parent.mkdir(parents=True, exist_ok=True)
            with open(root.parent / f".{root.name}.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not marker.exists():
                    _progress(0.0, "generating mini data")
                    adapter_cls.make_mini(spec, root, seed=0)  # data never depends on the run's seed
                    marker.write_text("ok\n")
    adapter_cls.check_data(spec, root)
    return root


def init_distributed(job: dict) -> None:
    """Under torchrun / srun with more than one process: the process group, before any Runner exists (mmengine's
    own init_dist always selects a GPU; on CPU the group uses gloo)."""
    world = int(os.environ.get("WORLD_SIZE", os.environ.get("SLURM_NTASKS", 1)) or 1)
    if world <= 1:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        return
    launcher = "slurm" if job.get("launcher") == "slurm" else "pytorch"
    if str(job["device"]).startswith("cuda"):
        from mmengine.dist import init_dist

        init_dist(launcher, backend="nccl")
    else:
        from benchmark.distributed import init_cpu_dist

        init_cpu_dist(launcher, backend="gloo")


def run_job(job: dict) -> dict:
    """The whole contract of tasks/base.py, in order: data, parameters, run, finish, extra."""
    import torch

    from benchmark import data, registry
    from tasks.base import RunContext

    spec = registry.get_task(job["task"])
    adapter_cls = registry.load_adapter(spec)
    params = adapter_cls.resolve_params(spec, job["preset"], job.get("overrides", {}))
    root = prepare_data(spec, adapter_cls, job)
    init_distributed(job)
    torch.manual_seed(job["seed"])
    ctx = RunContext(spec=spec, ckpt=Path(job["ckpt"]), ckpt_sha256=job["ckpt_sha256"], data_root=root,
                     preset=job["preset"], params=params, seed=job["seed"],
                     subset=job["subset"], work_dir=Path(job["work_dir"]), cache_dir=Path(job["cache_dir"]),
                     device=job["device"], allow_partial=job["allow_partial"], progress=_progress,
                     code_version=job.get("code_version", ""), vis_backend=job.get("vis_backend", "none"))
    ctx.work_dir.mkdir(parents=True, exist_ok=True)
    adapter = adapter_cls(ctx)
    metrics = adapter.finish(adapter.run())
    _progress(1.0, "done")
    return {"metrics": metrics, "extra": {**adapter.extra, **slurm_facts()}, "data_root": str(root),
            "data_fingerprint": data.fingerprint(spec, root)}


def slurm_facts() -> dict:
    """Where a Slurm job ran: its id (array element as ``<array>_<index>``), node and how often it was requeued."""
    env = os.environ
    if "SLURM_JOB_ID" not in env:
        return {}
    job_id = (f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}" if "SLURM_ARRAY_TASK_ID" in env
              else env["SLURM_JOB_ID"])
    return {"slurm_job_id": job_id, "slurm_node": env.get("SLURMD_NODENAME", ""),
            "slurm_requeues": int(env.get("SLURM_RESTART_COUNT", "0") or 0)}


def main(argv: list[str] | None = None) -> int:
    from benchmark.errors import BenchmarkError

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    job_path = Path((argv or sys.argv[1:])[0])
    job = json.loads(job_path.read_text())
    try:
        result = run_job(job)
        if _rank() != 0:
            return 0  # rank 0 writes the result
    except BenchmarkError as exc:
        if job.get("debug"):
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - any crash of a task is reported, never propagated
        traceback.print_exc()
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        print(f"error: task {job['task']} crashed: {type(exc).__name__}: {first} (full log: {job['log']})",
              file=sys.stderr, flush=True)
        return 1
    write_json_atomic(Path(job["result_path"]), {**result, "job": job})
    return 0


if __name__ == "__main__":
    sys.exit(main())
